"""The Open Inference Protocol tensor codec agrees with tritonclient's own encoding (raw
and typed, every datatype), and refuses malformed tensors naming the input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.grpc import InferInput, InferResult, service_pb2
from tritonclient.utils import np_to_triton_dtype

from gateway.core import dtypes
from gateway.core.errors import InvalidInput, ResourceExhausted, Unimplemented
from gateway.core.servable import TensorSpec
from gateway.transport.oip_tensors import (
    DATATYPES,
    bf16_refusal,
    decode_input,
    decode_inputs,
    fill_output,
    needs_raw,
    shape_of,
)

NUMERIC = [
    np.bool_,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def _objects(values, shape):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def _bytes_arrays():
    return SHAPES.flatmap(
        lambda shape: st.lists(
            st.binary(max_size=12),
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        ).map(lambda values: _objects(values, shape))
    )


def _arrays():
    numeric = st.sampled_from(NUMERIC).flatmap(lambda dtype: hnp.arrays(dtype, SHAPES))
    return st.one_of(numeric, _bytes_arrays())


def _client_request(array):
    """A ModelInferRequest with one input, built by tritonclient (raw contents)."""
    tensor = InferInput("t", list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    request = service_pb2.ModelInferRequest()
    request.inputs.append(tensor._get_tensor())
    request.raw_input_contents.append(tensor._get_content())
    return request


def _same(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    if a.dtype.kind == "f":
        np.testing.assert_array_equal(a, b)  # NaNs compare equal here
    else:
        assert a.tolist() == b.tolist()


@settings(max_examples=80, deadline=None)
@given(array=_arrays())
def test_raw_inputs_decode_what_tritonclient_encodes(array):
    request = _client_request(array)
    decoded = decode_inputs(request.inputs, request.raw_input_contents)["t"]
    _same(decoded, array)


@settings(max_examples=80, deadline=None)
@given(array=_arrays(), raw=st.booleans())
def test_outputs_read_back_by_tritonclient(array, raw):
    raw = raw or needs_raw({"t": array})
    response = service_pb2.ModelInferResponse()
    content = fill_output(response.outputs.add(), "t", array, raw)
    assert (content is not None) == raw
    if content is not None:
        response.raw_output_contents.append(content)
        _same(InferResult(response).as_numpy("t"), array)
    out = response.outputs[0]
    assert (out.datatype, list(out.shape)) == (np_to_triton_dtype(array.dtype), list(array.shape))
    # typed answers decode with our own reader (tritonclient reads only raw and BYTES)
    if not raw:
        _same(decode_input(out, None), array)


@pytest.mark.parametrize("dtype", [d for d in NUMERIC if d is not np.float16])
def test_typed_inputs_every_datatype(dtype):
    array = np.arange(6).reshape(2, 3).astype(dtype)
    response = service_pb2.ModelInferResponse()
    fill_output(response.outputs.add(), "t", array, raw=False)
    _same(decode_input(response.outputs[0], None), array)


def test_extremes_of_64_bit_integers_and_unicode_strings():
    for array in (
        np.array([0, 2**64 - 1], dtype=np.uint64),
        np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    ):
        for raw in (False, True):
            response = service_pb2.ModelInferResponse()
            content = fill_output(response.outputs.add(), "t", array, raw)
            if raw:
                _same(np.frombuffer(content, dtype=array.dtype), array)
            else:
                _same(decode_input(response.outputs[0], None), array)
    response = service_pb2.ModelInferResponse()
    content = fill_output(response.outputs.add(), "t", np.array(["é", "ab"]), raw=True)
    response.raw_output_contents.append(content)
    assert InferResult(response).as_numpy("t").tolist() == ["é".encode(), b"ab"]


def _tensor(datatype="FP32", shape=(2, 2), **contents):
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="x", datatype=datatype, shape=list(shape)
    )
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


@pytest.mark.parametrize(
    ("tensor", "raw", "message"),
    [
        (_tensor(fp32_contents=[1.0]), None, "shape [2, 2] needs 4 values in contents.fp32"),
        (
            _tensor(int64_contents=[1, 2, 3, 4]),
            None,
            "got 0 (contents has 4 in int64_contents)",
        ),
        (_tensor(shape=(-1, 2)), None, "negative dimension in shape [-1, 2]"),
        (_tensor(datatype="float32"), None, "unknown datatype 'float32'"),
        (_tensor(datatype="FP16", fp32_contents=[0.0] * 4), None, "FP16 has no typed contents"),
        (_tensor(datatype="INT8", int_contents=[1, 2, 3, 300]), None, "value 300 is out of range"),
        (_tensor(datatype="UINT8", uint_contents=[0, 0, 0, 256]), None, "value 256"),
        (
            _tensor(),
            b"\0" * 15,
            "raw_input_contents[0] has 15 bytes; shape [2, 2] of FP32 needs 16",
        ),
        (_tensor(fp32_contents=[0.0] * 4), b"\0" * 16, "both contents and raw_input_contents"),
        (_tensor("BYTES", (2,)), b"\1\0\0\0a", "holds 1 BYTES elements; shape [2] needs 2"),
        (_tensor("BYTES", (1,)), b"\1\0\0\0a\0\0\0\0", "holds more than the 1 BYTES elements"),
        (_tensor("BYTES", (1,)), b"\5\0\0\0ab", "element 0 declares 5 bytes, 2 are left"),
        (_tensor("BYTES", (2,)), b"\1\0\0\0a\1\0", "ends inside the 4-byte length of element 1"),
        (_tensor("BF16"), b"\0" * 8, "datatype BF16 is not supported"),
    ],
)
def test_malformed_tensors_are_refused_naming_the_input(tensor, raw, message):
    with pytest.raises(InvalidInput) as err:
        decode_input(tensor, raw)
    assert err.value.message.startswith("input 'x': ") and message in err.value.message


def test_request_level_checks():
    x = _tensor(fp32_contents=[0.0] * 4)
    with pytest.raises(InvalidInput, match="2 entries for 1 inputs"):
        decode_inputs([x], [b"", b""])
    with pytest.raises(InvalidInput, match="input 'x' is given more than once"):
        decode_inputs([x, x], [])
    unnamed = service_pb2.ModelInferRequest.InferInputTensor(datatype="FP32")
    with pytest.raises(InvalidInput, match=r"inputs\[0\]: expected a tensor name"):
        decode_inputs([unnamed], [])
    x.parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(Unimplemented, match="shared memory"):
        decode_inputs([x], [])
    huge = _tensor(shape=(10**12, 10**6))  # refused before anything is allocated
    with pytest.raises(ResourceExhausted, match=r"server\.max_tensor_elements"):
        decode_input(huge, None)
    with pytest.raises(ResourceExhausted, match=r"server\.max_tensor_elements"):
        decode_input(huge, b"")


def test_unsupported_outputs_and_bf16_refusals():
    with pytest.raises(Unimplemented, match="output 'c': dtype complex64"):
        needs_raw({"c": np.zeros(2, np.complex64)})
    assert needs_raw({"h": np.zeros(2, np.float16)}) and not needs_raw({"f": np.zeros(2)})
    spec = TensorSpec(dtypes.DT_FLOAT, (None, 4))
    assert bf16_refusal("x", spec).message.endswith("the model's input 'x' is FP32 [-1, 4]")
    assert "no input 'y'" in bf16_refusal("y", None).message
    bf16 = TensorSpec(dtypes.DT_BFLOAT16, (None,))
    assert isinstance(bf16_refusal("x", bf16), Unimplemented)
    assert shape_of(TensorSpec(dtypes.DT_FLOAT, None)) == [-1]
    assert set(DATATYPES) == {
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
        "FP16", "FP32", "FP64", "BYTES", "BF16",
    }  # fmt: skip
