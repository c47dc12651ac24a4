"""TF Serving's JSON <-> tensor rules (its json_tensor.cc): type inference against the
signature's dtypes, dense shapes, b64, the row / columnar formats, tf.Example features."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from gateway.core import dtypes
from gateway.core.errors import InvalidInput, Unimplemented
from gateway.core.servable import TensorSpec
from gateway.transport import json_tensors as jt
from gateway.transport.json_tensors import Format


def spec(code: int, shape: tuple | None = None) -> TensorSpec:
    return TensorSpec(code, shape)


F32 = {"x": spec(dtypes.DT_FLOAT)}


def rows(instances, specs=F32):
    inputs, fmt = jt.predict_inputs({"instances": instances}, specs)
    assert fmt is Format.ROW
    return inputs


def columns(value, specs=F32):
    inputs, fmt = jt.predict_inputs({"inputs": value}, specs)
    assert fmt is Format.COLUMNAR
    return inputs


def refused(fn, *words):
    with pytest.raises(InvalidInput) as err:
        fn()
    for w in words:
        assert w in err.value.message, (w, err.value.message)
    return err.value.message


def test_numbers_convert_to_the_inputs_dtype_without_loss():
    x = rows([[1, 2.5], [3, 4]])["x"]
    assert x.dtype == np.float32 and x.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert rows([2**24 - 1])["x"].tolist() == [2**24 - 1]
    refused(lambda: rows([2**24]), "Cannot convert JSON value: 16777216 to float without loss")
    refused(lambda: rows([1e39]), "to float without loss of precision")
    double = {"x": spec(dtypes.DT_DOUBLE)}
    assert rows([2**53 - 1, 1e39], double)["x"].dtype == np.float64
    refused(lambda: rows([2**53], double), "to double without loss")
    # NaN and infinities are floats
    assert np.isnan(rows([float("nan")])["x"][0])
    # integers only from JSON integers, in the dtype's range
    i32 = {"x": spec(dtypes.DT_INT32)}
    assert rows([[1, -2]], i32)["x"].dtype == np.int32
    refused(lambda: rows([1.0], i32), "JSON Value: 1.0 Type: Number is not of expected type: int32")
    refused(lambda: rows([2**31], i32), "is not of expected type: int32")
    refused(lambda: rows([300], {"x": spec(dtypes.DT_UINT8)}), "expected type: uint8")
    refused(lambda: rows([-1], {"x": spec(dtypes.DT_UINT64)}), "expected type: uint64")
    assert rows([2**64 - 1], {"x": spec(dtypes.DT_UINT64)})["x"].tolist() == [2**64 - 1]
    # booleans only for bool inputs, and only booleans
    assert rows([True, False], {"x": spec(dtypes.DT_BOOL)})["x"].dtype == np.bool_
    refused(lambda: rows([1], {"x": spec(dtypes.DT_BOOL)}), "expected type: bool")
    refused(lambda: rows([1.0, True]), "JSON Value: true Type: True is not of expected type: float")


def test_strings_and_b64():
    s = {"x": spec(dtypes.DT_STRING)}
    data = b"\x00\xff"
    x = rows(["héllo", {"b64": base64.b64encode(data).decode()}], s)["x"]
    assert x.dtype == object and x.tolist() == ["héllo".encode(), data]
    assert rows([{"b64": "aGk"}], s)["x"].tolist() == [b"hi"]  # padding optional
    refused(lambda: rows([{"b64": "!!"}], s), "Unable to base64 decode")
    refused(lambda: rows([{"b64": "aGk=", "x": 1}], s), "does not have named input: b64")
    refused(lambda: columns([{"b64": 1}], s), "not formatted correctly for base64 data")
    refused(lambda: rows([1], s), "Type: Number is not of expected type: string")
    refused(lambda: rows([{"b64": "aGk="}]), "Type: Object is not of expected type: float")


def test_dense_shapes_and_ragged_lists():
    assert columns(5.0)["x"].shape == ()
    assert columns([[[1]], [[2]]])["x"].shape == (2, 1, 1)
    assert columns([[], []])["x"].shape == (2, 0)
    message = refused(lambda: rows([[1, 2], [3]]), "ragged", "unexpected size: 1")
    assert "element: 1" in message and "at instances[1]" in message
    refused(lambda: columns([[1, 2], 3]), "ragged", "at inputs[1]")
    refused(lambda: columns([[1, [2]], [3, 4]]), "ragged", "at inputs[0][1]")
    refused(lambda: columns([[1, 2], [3, [4]]]), "unexpected level", "at inputs[1][1]")
    refused(lambda: columns([[1, 2], [3, "a"]]), "input 'x'", "at inputs[1][1]")


def test_row_and_columnar_formats_with_several_inputs():
    two = {"a": spec(dtypes.DT_FLOAT), "b": spec(dtypes.DT_STRING)}
    inputs = rows([{"a": [1, 2], "b": "p"}, {"a": [3, 4], "b": "q"}], two)
    assert inputs["a"].shape == (2, 2) and inputs["b"].tolist() == [b"p", b"q"]
    refused(lambda: rows([[1, 2]], two), "instances is a plain list", "inputs: a, b")
    refused(lambda: rows([{"a": 1}], two), "keys must be equal to: a,b", "missing: b")
    refused(lambda: rows([{"a": 1, "b": "x", "c": 2}], two), "does not have named input: c")
    refused(lambda: rows([{"a": 1, "b": "x"}, [1]], two), "Expecting object but got list at item 1")
    refused(lambda: rows([{"a": "x", "b": "x"}], two), "element: 0 key: a", "input 'a'")
    # columnar: every input named; keys the signature does not have are ignored
    inputs = columns({"a": [[1.0]], "b": ["p", "q"], "extra": 1}, two)
    assert set(inputs) == {"a", "b"} and inputs["a"].shape == (1, 1)
    refused(lambda: columns({"a": [1.0]}, two), "Missing named input: b in 'inputs' object.")
    refused(lambda: columns([1.0], two), "inputs is a plain value/list")
    refused(
        lambda: jt.predict_inputs({"instances": [1], "inputs": [1]}, F32),
        "only one of 'inputs' or 'instances'",
    )
    refused(lambda: jt.predict_inputs({}, F32), "Missing 'inputs' or 'instances' key")
    refused(lambda: rows({"x": 1}), "'instances' to be an list/array")
    with pytest.raises(Unimplemented):
        rows([1.0], {"x": spec(dtypes.DT_HALF)})


def test_loads_and_signature_name():
    assert jt.loads(b'{"a": [NaN, Infinity, -Infinity]}')["a"][1] == float("inf")
    refused(
        lambda: jt.loads(b'{"a": [1,}'), "JSON Parse error: ", "at offset: 9 (line 1, column 10)"
    )
    refused(lambda: jt.loads(b"  "), "The document is empty")
    refused(lambda: jt.loads(b"[1]"), "JSON Value: [1] Is not object")
    assert jt.signature_name({}) == ""
    refused(lambda: jt.signature_name({"signature_name": 1}), "must be a string value")


def body(outputs, fmt=Format.ROW):
    return json.loads(jt.predict_body(outputs, fmt))


def test_outputs_in_the_requests_format():
    y = np.array([[0.1, 0.2]], dtype=np.float32)
    k = np.array([3], dtype=np.int64)
    assert (
        jt.predict_body({"y": y}, Format.ROW) == b'{"predictions":[[0.1,0.2]]}'
    )  # float32's shortest
    assert body({"y": y, "k": k}) == {"predictions": [{"y": [0.1, 0.2], "k": 3}]}
    assert body({"y": y}, Format.COLUMNAR) == {"outputs": [[0.1, 0.2]]}
    assert body({"y": y, "k": k}, Format.COLUMNAR) == {"outputs": {"y": [[0.1, 0.2]], "k": [3]}}
    assert body({"s": np.array(2.5, np.float32)}, Format.COLUMNAR) == {"outputs": 2.5}
    refused(lambda: body({"s": np.array(2.5)}), "Tensor name: s has no shape information")
    refused(lambda: body({"y": y, "k": np.arange(2)}), "inconsistent batch size: 2 expecting: 1")
    refused(lambda: body({"u": np.array([1], np.uint16)}), "Failed to write JSON value", "uint16")
    nonfinite = jt.predict_body({"y": np.array([np.nan, -np.inf, 0.1], np.float32)}, Format.ROW)
    assert nonfinite == b'{"predictions":[NaN,-Infinity,0.1]}'


def test_string_outputs_text_or_b64():
    text = np.array([b"a", "é".encode()], dtype=object)
    assert body({"t": text}) == {"predictions": ["a", "é"]}
    assert body({"t_bytes": text}) == {
        "predictions": [{"b64": "YQ=="}, {"b64": base64.b64encode("é".encode()).decode()}]
    }
    binary = np.array([[b"ok", b"\xff"]], dtype=object)
    assert body({"t": binary}, Format.COLUMNAR) == {"outputs": [[{"b64": "b2s="}, {"b64": "/w=="}]]}


def test_examples_follow_tf_servings_feature_rules():
    inp = jt.examples_input(
        {
            "examples": [
                {"f": [1.5, 2.0], "i": 3, "s": "a", "b": {"b64": "/w=="}, "t": True, "e": []}
            ]
        },
        "classify",
    )
    (example,) = inp.example_list.examples
    feature = example.features.feature
    assert list(feature["f"].float_list.value) == [1.5, 2.0]
    assert list(feature["i"].int64_list.value) == [3]
    assert list(feature["s"].bytes_list.value) == [b"a"]
    assert list(feature["b"].bytes_list.value) == [b"\xff"]
    assert list(feature["t"].int64_list.value) == [1]
    assert feature["e"].WhichOneof("kind") is None
    inp = jt.examples_input({"context": {"c": 1.0}, "examples": [{}, {"x": 1}]}, "regress")
    assert len(inp.example_list_with_context.examples) == 2
    assert list(inp.example_list_with_context.context.features.feature["c"].float_list.value) == [
        1.0
    ]
    for doc, words in [
        ({}, "When method is regress, key 'examples' is expected"),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": [[1]]}, "examples[0]: Example must be JSON object but got JSON Array"),
        (
            {"examples": [{"f": [1.0, 1]}]},
            "Unexpected element type in feature: f expecting type: float",
        ),
        ({"examples": [{"f": None}]}, "Feature: f has element with unexpected JSON type: Null"),
        ({"examples": [{"f": [[1]]}]}, "unexpected JSON type: Array"),
        ({"examples": [{"f": 2**63}]}, "has uint64 element. Only int64 is supported."),
        ({"examples": [{"f": 1e39}]}, "to float without loss of precision"),
    ]:
        refused(lambda doc=doc: jt.examples_input(doc, "regress"), words)
