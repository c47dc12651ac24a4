"""Every request-tensor decoder (TensorProto, TF Serving's REST JSON, the Open Inference
Protocol's typed / raw / JSON tensors) checks the `DecodeLimits` before it allocates:
rank and negative dimensions are InvalidInput, sizes over a limit ResourceExhausted, each
message naming the input and the limit; a tiny request asking for a huge tensor (the
broadcast form) allocates nothing."""

from __future__ import annotations

import base64
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tritonclient.grpc import service_pb2

from gateway.core import dtypes
from gateway.core.errors import GatewayError, InvalidInput, ResourceExhausted
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.core.servable import TensorSpec
from gateway.transport import json_tensors as jt
from gateway.transport.oip_rest import _decode_inputs as oip_json_inputs
from gateway.transport.oip_tensors import decode_input, decode_inputs
from gateway.transport.tensors import to_numpy, to_numpy_inputs

SMALL = DecodeLimits(
    max_rank=4, max_tensor_elements=100, max_request_elements=150, max_string_bytes=8
)
RANK = "server.max_tensor_rank"
ELEMENTS = "server.max_tensor_elements"
TOTAL = "server.max_request_elements"
STRING = "server.max_string_bytes"
HUGE_SHAPES = [[2**40, 2**40], [10**9], [2**62, 2**62, 2**62]]


def refused(kind: type[GatewayError], fn: Callable[[], Any], *words: str) -> str:
    """`fn()` raises exactly `kind`, its message naming every word."""
    with pytest.raises(GatewayError) as err:
        fn()
    assert type(err.value) is kind, err.value
    for word in words:
        assert word in err.value.message, (word, err.value.message)
    return err.value.message


@contextmanager
def allocates_little(most: int = 10 << 20, seconds: float = 1.0) -> Iterator[None]:
    """The block's peak traced allocation (numpy's buffers are traced) stays under `most`
    bytes, and it takes under `seconds`."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < most, f"peak allocation {peak} bytes"
    assert elapsed < seconds, f"took {elapsed:.2f}s"


# -- TensorProto (TF Serving gRPC Predict) -------------------------------------------------


def proto(dtype: int, dims: list[int], **fields: Any) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    return t


def test_tensorproto_rank_is_invalid_naming_the_input_and_the_limit():
    deep = proto(types_pb2.DT_FLOAT, [1] * 65, float_val=[1.0])
    refused(InvalidInput, lambda: to_numpy("feat", deep), "input 'feat'", "65 dimensions", RANK)
    five = proto(types_pb2.DT_FLOAT, [1] * 5, float_val=[1.0])
    refused(InvalidInput, lambda: to_numpy("feat", five, SMALL), "input 'feat'", "at most 4", RANK)
    assert to_numpy("feat", proto(types_pb2.DT_FLOAT, [1] * 4, float_val=[1.0]), SMALL).ndim == 4


@pytest.mark.parametrize("dims", [[-1, 4], [2, -5], [10**12, 0, -1]])
def test_tensorproto_negative_dimensions_are_invalid(dims):
    t = proto(types_pb2.DT_FLOAT, dims, float_val=[1.0])
    refused(InvalidInput, lambda: to_numpy("x", t), "input 'x'", "negative dimension")


@pytest.mark.parametrize("dims", HUGE_SHAPES)
def test_tensorproto_broadcast_of_a_huge_shape_allocates_nothing(dims):
    t = proto(types_pb2.DT_FLOAT, dims, float_val=[1.0])
    assert t.ByteSize() < 1024
    with allocates_little():
        refused(ResourceExhausted, lambda: to_numpy("x", t), "input 'x'", ELEMENTS, "4194304")
    strings = proto(types_pb2.DT_STRING, dims, string_val=[b"a"])
    with allocates_little():
        refused(ResourceExhausted, lambda: to_numpy("s", strings), "input 's'", ELEMENTS)
    content = proto(types_pb2.DT_FLOAT, dims, tensor_content=b"\0" * 16)
    refused(ResourceExhausted, lambda: to_numpy("c", content), "input 'c'", ELEMENTS)


def test_tensorproto_a_zero_dimension_after_huge_ones_is_an_empty_tensor():
    empty = to_numpy("x", proto(types_pb2.DT_FLOAT, [10**12, 0]))
    assert empty.shape == (10**12, 0) and empty.size == 0 and empty.dtype == np.float32
    strings = to_numpy("s", proto(types_pb2.DT_STRING, [0, 10**13]))
    assert strings.shape == (0, 10**13)


@pytest.mark.parametrize("dims", [[0, 2**63 - 1, 2**53, 2**31 - 1], [2, 0, 2**32, 2**53]])
def test_an_empty_tensor_whose_other_dimensions_overflow_is_refused(dims):
    # numpy cannot make such a shape even empty ("array is too big"): found by the fuzzer
    for dtype in (types_pb2.DT_UINT16, types_pb2.DT_STRING):
        refused(
            ResourceExhausted,
            lambda dtype=dtype: to_numpy("x", proto(dtype, dims)),
            "input 'x'",
            "",
        )
    refused(ResourceExhausted, lambda: decode_input(v2(shape=dims), b""), "input 'x'", "")


def test_tensorproto_limits_exactly_at_the_cap_are_accepted():
    at = to_numpy("x", proto(types_pb2.DT_FLOAT, [10, 10], float_val=[2.5]), SMALL)
    assert at.shape == (10, 10) and (at == 2.5).all()
    listed = to_numpy("x", proto(types_pb2.DT_INT64, [100], int64_val=range(100)), SMALL)
    assert listed.tolist() == list(range(100))
    content = proto(types_pb2.DT_FLOAT, [100], tensor_content=b"\0" * 400)
    assert to_numpy("x", content, SMALL).shape == (100,)
    over = proto(types_pb2.DT_FLOAT, [101], float_val=[1.0])
    refused(ResourceExhausted, lambda: to_numpy("x", over, SMALL), "more than 100", ELEMENTS)
    short = proto(types_pb2.DT_FLOAT, [100], tensor_content=b"\0" * 396)
    refused(InvalidInput, lambda: to_numpy("x", short, SMALL), "396 bytes", "needs 400")


def test_tensorproto_string_elements_over_the_limit():
    ok = to_numpy("s", proto(types_pb2.DT_STRING, [2], string_val=[b"12345678", b""]), SMALL)
    assert ok.tolist() == [b"12345678", b""]
    long = proto(types_pb2.DT_STRING, [2], string_val=[b"a", b"123456789"])
    refused(ResourceExhausted, lambda: to_numpy("s", long, SMALL), "input 's'", "9 bytes", STRING)
    broadcast = proto(types_pb2.DT_STRING, [50], string_val=[b"123456789"])
    refused(ResourceExhausted, lambda: to_numpy("s", broadcast, SMALL), "input 's'", STRING)


def test_tensorproto_request_total_is_checked_before_the_next_input():
    a = proto(types_pb2.DT_FLOAT, [100], float_val=[1.0])
    b = proto(types_pb2.DT_FLOAT, [50], float_val=[1.0])
    assert {k: v.size for k, v in to_numpy_inputs({"a": a, "b": b}, SMALL).items()} == {
        "a": 100,
        "b": 50,
    }
    c = proto(types_pb2.DT_FLOAT, [51], float_val=[1.0])
    refused(
        ResourceExhausted,
        lambda: to_numpy_inputs({"a": a, "c": c}, SMALL),
        "151 elements",
        "input 'c'",
        "150",
        TOTAL,
    )


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (types_pb2.DT_VARIANT, "variant"),
        (types_pb2.DT_RESOURCE, "resource"),
        (types_pb2.DT_INVALID, "dtype"),
        (999, "999"),
    ],
)
def test_tensorproto_unsupported_dtypes_are_invalid(code, name):
    t = proto(code, [1, 4], tensor_content=b"\0" * 16)
    refused(
        InvalidInput, lambda: to_numpy("x", t), "input 'x'", "unsupported or invalid dtype", name
    )
    huge = proto(code, [10**9])  # the dtype is refused before the shape is looked at
    refused(InvalidInput, lambda: to_numpy("x", huge), "input 'x'", name)


# -- TF Serving REST JSON --------------------------------------------------------------------

F32 = {"x": TensorSpec(dtypes.DT_FLOAT, None)}
TWO = {"a": TensorSpec(dtypes.DT_FLOAT, None), "b": TensorSpec(dtypes.DT_FLOAT, None)}
STR = {"s": TensorSpec(dtypes.DT_STRING, None)}


def nested(depth: int, leaf: Any = 1.0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def json_inputs(doc: dict[str, Any], specs=F32, limits: DecodeLimits = DEFAULT_LIMITS):
    return jt.predict_inputs(doc, specs, limits)[0]


def test_json_rank_is_invalid_naming_the_input_and_the_limit():
    for doc in ({"inputs": nested(65)}, {"instances": nested(65)}):
        refused(InvalidInput, lambda d=doc: json_inputs(d), "input 'x'", "65 dimensions", RANK)
    refused(
        InvalidInput, lambda: json_inputs({"inputs": nested(5)}, limits=SMALL), "at most 4", RANK
    )
    assert json_inputs({"inputs": nested(4)}, limits=SMALL)["x"].shape == (1, 1, 1, 1)
    assert json_inputs({"instances": nested(4)}, limits=SMALL)["x"].shape == (1, 1, 1, 1)
    refused(InvalidInput, lambda: json_inputs({"instances": nested(5)}, limits=SMALL), RANK)


def test_json_element_counts_over_the_limit_and_at_it():
    assert json_inputs({"inputs": [[0.5] * 10] * 10}, limits=SMALL)["x"].shape == (10, 10)
    assert json_inputs({"instances": [0.5] * 100}, limits=SMALL)["x"].shape == (100,)
    for doc in ({"inputs": [0.5] * 101}, {"instances": [[0.5] * 101]}):
        refused(
            ResourceExhausted,
            lambda d=doc: json_inputs(d, limits=SMALL),
            "input 'x'",
            "more than 100",
            ELEMENTS,
        )
    # a ragged list is reported as ragged, though its first elements claim 2 x 60
    refused(
        InvalidInput, lambda: json_inputs({"inputs": [[0.5] * 60, [0.5]]}, limits=SMALL), "ragged"
    )


def test_json_request_total_over_the_limit():
    ok = json_inputs({"inputs": {"a": [0.0] * 100, "b": [0.0] * 50}}, TWO, SMALL)
    assert ok["a"].size + ok["b"].size == 150
    for doc in (
        {"inputs": {"a": [0.0] * 100, "b": [0.0] * 51}},
        {"instances": [{"a": [0.0] * 50, "b": [0.0] * 26}] * 2},
    ):
        refused(
            ResourceExhausted,
            lambda d=doc: json_inputs(d, TWO, SMALL),
            "input 'b'",
            "152" if "instances" in doc else "151",
            TOTAL,
        )


def test_json_string_and_b64_elements_over_the_limit():
    b64 = {"b64": base64.b64encode(b"\xff" * 8).decode()}
    ok = json_inputs({"inputs": ["12345678", b64]}, STR, SMALL)["s"]
    assert ok.tolist() == [b"12345678", b"\xff" * 8]
    too_long = {"b64": base64.b64encode(b"\xff" * 9).decode()}
    for value in ("123456789", too_long, "é" * 5):  # 10 bytes of UTF-8
        refused(
            ResourceExhausted,
            lambda v=value: json_inputs({"instances": ["a", v]}, STR, SMALL),
            "input 's'",
            STRING,
        )


def test_deeply_nested_json_is_invalid_never_an_internal_error():
    deep_list = b"[" * 5000 + b"]" * 5000
    message = refused(InvalidInput, lambda: jt.loads(b'{"inputs": ' + deep_list + b"}"), "JSON")
    assert "depth" in message
    deep_dict = nested(0)
    for _ in range(1000):
        deep_dict = {"a": deep_dict}
    for doc in (
        {"inputs": {"x": deep_dict}},
        {"inputs": deep_dict},
        {"instances": [deep_dict]},
        {"instances": [nested(900)]},
        {"inputs": nested(900)},
        {"signature_name": deep_dict},
    ):
        refused(InvalidInput, lambda d=doc: (jt.signature_name(d), json_inputs(d)))
    refused(InvalidInput, lambda: jt.examples_input({"examples": [{"f": [deep_dict]}]}, "classify"))


# -- Open Inference Protocol (v2 gRPC typed / raw, v2 REST JSON) ----------------------------


def v2(name: str = "x", datatype: str = "FP32", shape=(2, 2), **contents: Any) -> Any:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=list(shape)
    )
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


def test_oip_rank_is_invalid_naming_the_input_and_the_limit():
    deep = v2(shape=[1] * 65, fp32_contents=[1.0])
    refused(InvalidInput, lambda: decode_input(deep, None), "input 'x'", "65 dimensions", RANK)
    refused(InvalidInput, lambda: decode_input(deep, b"\0" * 4), "input 'x'", RANK)
    five = v2(shape=[1] * 5, fp32_contents=[1.0])
    refused(InvalidInput, lambda: decode_input(five, None, limits=SMALL), "at most 4", RANK)
    doc = [{"name": "x", "datatype": "FP32", "shape": [1] * 65, "data": [1.0]}]
    refused(InvalidInput, lambda: oip_json_inputs(doc, b""), "input 'x'", RANK)


@pytest.mark.parametrize("dims", [[-1, 2], [3, -7], [10**12, 0, -1]])
def test_oip_negative_dimensions_are_invalid(dims):
    refused(
        InvalidInput, lambda: decode_input(v2(shape=dims), b""), "input 'x'", "negative dimension"
    )
    doc = [{"name": "x", "datatype": "FP32", "shape": dims, "data": []}]
    refused(InvalidInput, lambda: oip_json_inputs(doc, b""), "input 'x'", "negative dimension")


@pytest.mark.parametrize("dims", HUGE_SHAPES)
def test_oip_huge_shapes_allocate_nothing(dims):
    for datatype, raw in (
        ("FP32", b"\0" * 4),
        ("FP32", None),
        ("BYTES", b"\1\0\0\0a"),
        ("FP16", None),
    ):
        tensor = v2(datatype=datatype, shape=dims)
        with allocates_little():
            refused(
                ResourceExhausted, lambda t=tensor, r=raw: decode_input(t, r), "input 'x'", ELEMENTS
            )
    doc = [{"name": "x", "datatype": "FP32", "shape": dims, "data": [1.0]}]
    with allocates_little():
        refused(ResourceExhausted, lambda: oip_json_inputs(doc, b""), "input 'x'", ELEMENTS)
    binary = [
        {"name": "x", "datatype": "FP32", "shape": dims, "parameters": {"binary_data_size": 4}}
    ]
    refused(ResourceExhausted, lambda: oip_json_inputs(binary, b"\0" * 4), "input 'x'", ELEMENTS)


def test_oip_a_zero_dimension_after_huge_ones_is_an_empty_tensor():
    assert decode_input(v2(shape=(10**12, 0)), None).shape == (10**12, 0)
    assert decode_input(v2(shape=(10**12, 0)), b"").shape == (10**12, 0)
    assert decode_input(v2(datatype="BYTES", shape=(0, 10**12)), b"").shape == (0, 10**12)
    doc = [{"name": "x", "datatype": "FP32", "shape": [10**12, 0], "data": []}]
    assert oip_json_inputs(doc, b"")["x"].shape == (10**12, 0)


def test_oip_limits_exactly_at_the_cap_are_accepted():
    assert (
        decode_input(v2(shape=(10, 10), fp32_contents=[0.0] * 100), None, limits=SMALL).size == 100
    )
    assert decode_input(v2(shape=(100,)), b"\0" * 400, limits=SMALL).size == 100
    refused(
        ResourceExhausted,
        lambda: decode_input(v2(shape=(101,)), b"\0" * 404, limits=SMALL),
        ELEMENTS,
    )
    refused(
        InvalidInput, lambda: decode_input(v2(shape=(100,)), b"\0" * 399, limits=SMALL), "needs 400"
    )
    doc = [{"name": "x", "datatype": "FP32", "shape": [100], "data": [0.0] * 100}]
    assert oip_json_inputs(doc, b"", SMALL)["x"].size == 100
    doc[0]["shape"] = [101]
    refused(ResourceExhausted, lambda: oip_json_inputs(doc, b"", SMALL), ELEMENTS)


def test_oip_bytes_elements_over_the_limit():
    raw_ok = b"\x08\0\0\0" + b"x" * 8 + b"\0\0\0\0"
    assert decode_input(v2(datatype="BYTES", shape=(2,)), raw_ok, limits=SMALL).tolist() == [
        b"x" * 8,
        b"",
    ]
    raw_long = b"\1\0\0\0a" + b"\x09\0\0\0" + b"x" * 9
    refused(
        ResourceExhausted,
        lambda: decode_input(v2(datatype="BYTES", shape=(2,)), raw_long, limits=SMALL),
        "input 'x'",
        "9 bytes",
        STRING,
    )
    # a declared length over the limit is refused before the rest of the data is looked at
    declared = b"\xff\xff\xff\x7f" + b"x" * 4
    refused(
        ResourceExhausted, lambda: decode_input(v2(datatype="BYTES", shape=(1,)), declared), STRING
    )
    typed = v2(datatype="BYTES", shape=(2,), bytes_contents=[b"a", b"x" * 9])
    refused(ResourceExhausted, lambda: decode_input(typed, None, limits=SMALL), "input 'x'", STRING)
    doc = [{"name": "x", "datatype": "BYTES", "shape": [2], "data": ["a", "x" * 9]}]
    refused(ResourceExhausted, lambda: oip_json_inputs(doc, b"", SMALL), "input 'x'", STRING)


def test_oip_request_total_is_checked_before_the_next_input():
    a = v2("a", shape=(100,))
    b = v2("b", shape=(50,))
    c = v2("c", shape=(10**9,))  # never decoded: the total is over before it
    got = decode_inputs([a, b], [b"\0" * 400, b"\0" * 200], SMALL)
    assert got["a"].size + got["b"].size == 150
    refused(
        ResourceExhausted,
        lambda: decode_inputs([a, v2("b", shape=(51,))], [b"\0" * 400, b"\0" * 204], SMALL),
        "151 elements",
        "input 'b'",
        TOTAL,
    )
    refused(
        ResourceExhausted, lambda: decode_inputs([a, c], [b"\0" * 400, b""]), "input 'c'", ELEMENTS
    )
    doc = [
        {"name": "a", "datatype": "FP32", "shape": [100], "data": [0.0] * 100},
        {"name": "b", "datatype": "FP32", "shape": [51], "data": [0.0] * 51},
    ]
    refused(ResourceExhausted, lambda: oip_json_inputs(doc, b"", SMALL), "input 'b'", TOTAL)


def test_oip_json_values_nested_too_deeply_are_invalid():
    deep: Any = 1.0
    for _ in range(1000):
        deep = {"a": deep}
    for doc in (
        [{"name": "x", "datatype": "FP32", "shape": [1], "data": [deep]}],
        [{"name": "x", "datatype": "FP32", "shape": deep, "data": [1.0]}],
        [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": deep}}],
    ):
        refused(InvalidInput, lambda d=doc: oip_json_inputs(d, b""), "input 'x'")
