"""Our TensorProto codec agrees with tf.make_ndarray / tf.make_tensor_proto."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.core.errors import InvalidInput
from gateway.transport.tensors import from_numpy, to_numpy

DTYPES = [
    np.float32,
    np.float64,
    np.int32,
    np.int64,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.bool_,
    np.float16,
]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_round_trip_matches_tensorflow(data, dtype):
    array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
    ours = from_numpy(array)
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    theirs = tf.make_tensor_proto(array)
    decoded = to_numpy("x", theirs)
    assert decoded.shape == array.shape and decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_strings_and_broadcast_forms():
    strings = np.array([[b"a", b"bc"], [b"", b"\xff"]], dtype=object)
    np.testing.assert_array_equal(to_numpy("s", tf.make_tensor_proto(strings)), strings)
    np.testing.assert_array_equal(tf.make_ndarray(from_numpy(strings)), strings)
    np.testing.assert_array_equal(
        tf.make_ndarray(from_numpy(np.array(["é"]))), np.array(["é".encode()], dtype=object)
    )
    filled = tf.make_tensor_proto(2.5, dtype=tf.float32, shape=[2, 3])
    np.testing.assert_array_equal(to_numpy("x", filled), np.full((2, 3), 2.5, np.float32))


def test_malformed_tensors_name_the_alias():
    proto = tf.make_tensor_proto(np.ones((2, 2), np.float32))
    proto.tensor_shape.dim[0].size = 3
    with pytest.raises(
        InvalidInput,
        match=r"input 'feat': tensor_content has 16 bytes, shape \[3, 2\] of float32 needs 24",
    ):
        to_numpy("feat", proto)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from([*DTYPES, np.complex64, np.complex128]),
    typed=st.booleans(),
)
def test_both_response_encodings_decode_like_tensorflow(data, dtype, typed):
    array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
    proto = from_numpy(array, typed=typed)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    assert bool(proto.tensor_content) == (not typed and array.size > 0)


def test_typed_fields_are_the_ones_tf_serving_fills():
    y = np.array([[0.25, 0.75]], dtype=np.float32)
    assert list(from_numpy(y).float_val) == [0.25, 0.75]
    assert list(from_numpy(np.array([3], dtype=np.int64)).int64_val) == [3]
    assert list(from_numpy(np.array([7], dtype=np.uint8)).int_val) == [7]
    assert list(from_numpy(np.array([True, False])).bool_val) == [True, False]
    assert list(from_numpy(np.array([1 + 2j], dtype=np.complex64)).scomplex_val) == [1.0, 2.0]
    assert list(from_numpy(np.array([1.5], dtype=np.float16)).half_val) == [
        int(np.array([1.5], dtype=np.float16).view(np.uint16)[0])
    ]
    assert list(from_numpy(np.float32(2.0)).float_val) == [2.0]  # a scalar
    assert from_numpy(np.array([b"a"], dtype=object)).string_val == [b"a"]
