"""Over a real gateway: a tiny request asking for a huge tensor (TF Serving's broadcast
form, a v2 shape with one value) is refused RESOURCE_EXHAUSTED / HTTP 429 naming the input
and the limit on every API, and the server allocates nothing for it (its RSS, the gateway
runs in this process, barely moves); malformed shapes are INVALID_ARGUMENT / 400; JSON
nested too deeply is a 400, never a 500; `server.max_tensor_elements` is the limit."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.workers import free_port
from tests.support import GatewayThread, outputs_of, predict_request

X = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
BILLION = [250_000_000, 4]  # 10**9 float elements: 4 GB if allocated
ELEMENTS = "server.max_tensor_elements"
MiB = 1 << 20


@pytest.fixture(scope="module")
def gw(models_dir, tmp_path_factory):
    """The default limits (4 MiB messages: at most 4194304 elements a tensor)."""
    root = tmp_path_factory.mktemp("decode_limits")
    shutil.copytree(models_dir / "keras_a", root / "repo" / "keras" / "1")
    cfg = {
        "server": {"rest_api_port": free_port()},
        "models": [{"name": "keras", "base_path": str(root / "repo" / "keras")}],
    }
    with GatewayThread(cfg, root) as g:
        g.stub = prediction_service_pb2_grpc.PredictionServiceStub(g.channel)
        g.v2 = service_pb2_grpc.GRPCInferenceServiceStub(g.channel)
        g.url = f"http://127.0.0.1:{g.gateway.rest_port}"
        yield g


def rss() -> int:
    """This process's resident set (bytes): the gateway runs in it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def shaped(dims: list[int], **fields: Any) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "keras"
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, **fields)
    for d in dims:
        tensor.tensor_shape.dim.add(size=d)
    req.inputs["x"].CopyFrom(tensor)
    return req


def grpc_error(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    return err.value.code(), err.value.details()


def http(gw: Any, path: str, body: Any) -> tuple[int, Any]:
    """(status, JSON document) of a POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{gw.url}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def answer(gw: Any) -> np.ndarray:
    (out,) = outputs_of(gw.stub.Predict(predict_request("keras", {"x": X}), timeout=10)).values()
    return out


def test_a_tiny_predict_asking_for_a_billion_floats_allocates_nothing(gw):
    before_answer = answer(gw)  # warm: the channel, the model's first call
    request = shaped(BILLION, float_val=[1.0])
    assert request.ByteSize() < 1024
    before = rss()
    for _ in range(5):
        code, details = grpc_error(gw.stub.Predict, request)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert "input 'x'" in details and ELEMENTS in details and "4194304" in details
    code, details = grpc_error(gw.stub.Predict, shaped([2**40, 2**40], float_val=[1.0]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and ELEMENTS in details
    assert rss() - before < 50 * MiB
    np.testing.assert_array_equal(answer(gw), before_answer)
    assert before_answer.shape[0] == 2


def test_rank_and_negative_dimensions_are_invalid_argument(gw):
    code, details = grpc_error(gw.stub.Predict, shaped([1] * 70, float_val=[1.0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "input 'x'" in details and "70 dimensions" in details
    assert "server.max_tensor_rank" in details
    code, details = grpc_error(gw.stub.Predict, shaped([10**12, 0, -1]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "negative dimension" in details
    assert answer(gw).shape[0] == 2


def test_the_same_request_over_v2_grpc_is_resource_exhausted(gw):
    answer(gw)
    before = rss()
    for contents in ({"raw": b"\0" * 4}, {"typed": [1.0]}):
        tensor = service_pb2.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=BILLION
        )
        request = service_pb2.ModelInferRequest(model_name="keras", inputs=[tensor])
        if "raw" in contents:
            request.raw_input_contents.append(contents["raw"])
        else:
            request.inputs[0].contents.fp32_contents.extend(contents["typed"])
        assert request.ByteSize() < 1024
        code, details = grpc_error(gw.v2.ModelInfer, request)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert "input 'x'" in details and ELEMENTS in details
    deep = service_pb2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1] * 70)
    code, details = grpc_error(
        gw.v2.ModelInfer, service_pb2.ModelInferRequest(model_name="keras", inputs=[deep])
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "server.max_tensor_rank" in details
    assert rss() - before < 50 * MiB
    assert answer(gw).shape[0] == 2


def test_the_same_request_over_v2_rest_is_429(gw):
    answer(gw)
    before = rss()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": BILLION, "data": [1.0]}]}
    status, doc = http(gw, "/v2/models/keras/infer", body)
    assert status == 429 and list(doc) == ["error"], doc
    assert "input 'x'" in doc["error"] and ELEMENTS in doc["error"]
    body["inputs"][0]["shape"] = [1] * 70
    status, doc = http(gw, "/v2/models/keras/infer", body)
    assert status == 400 and "server.max_tensor_rank" in doc["error"], doc
    assert rss() - before < 50 * MiB
    ok = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X.tolist()}]}
    status, doc = http(gw, "/v2/models/keras/infer", ok)
    assert status == 200, doc
    np.testing.assert_allclose(doc["outputs"][0]["data"], answer(gw).reshape(-1), rtol=1e-6)


def test_json_nested_too_deeply_is_400_on_both_rest_apis(gw):
    deep = b'{"a": ' * 1000 + b"1.0" + b"}" * 1000  # parses (orjson reads 1024 levels)
    too_deep = b"[" * 3000 + b"]" * 3000
    v2_data = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [%s]}]}'
    cases = [
        ("/v1/models/keras:predict", b'{"instances": %s}' % too_deep),
        ("/v1/models/keras:predict", b'{"instances": [%s]}' % deep),
        ("/v1/models/keras:predict", b'{"inputs": {"x": %s}}' % deep),
        ("/v1/models/keras:predict", b'{"signature_name": %s, "inputs": [1.0]}' % deep),
        ("/v1/models/keras:predict", b'{"instances": ' + b"[" * 900),  # unterminated
        ("/v1/models/keras:predict", b'{"instances": %s}' % (b"[" * 900 + b"1.0" + b"]" * 900)),
        ("/v2/models/keras/infer", b'{"inputs": %s}' % too_deep),
        ("/v2/models/keras/infer", v2_data % deep),
    ]
    for path, body in cases:
        status, doc = http(gw, path, body)
        assert status == 400 and list(doc) == ["error"], (path, status, doc)
    # 900 levels of lists parse: the rank limit refuses them
    status, doc = http(gw, *cases[5])
    assert "input 'x'" in doc["error"] and "server.max_tensor_rank" in doc["error"], doc
    assert answer(gw).shape[0] == 2


def test_server_max_tensor_elements_is_the_limit(make_repo, gateway_factory):
    """A small `server.max_tensor_elements`: 64 elements ([16, 4]) are served, 68
    ([17, 4]) refused on every API, naming the input and the configured limit."""
    keras = make_repo("keras", {1: "keras_a"})
    small = gateway_factory(
        {
            "server": {"rest_api_port": free_port(), "max_tensor_elements": 64},
            "models": [{"name": "keras", "base_path": str(keras)}],
        }
    )
    small.url = f"http://127.0.0.1:{small.gateway.rest_port}"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(small.channel)
    at_cap = np.ones((16, 4), np.float32)
    over = np.ones((17, 4), np.float32)
    (out,) = outputs_of(stub.Predict(predict_request("keras", {"x": at_cap}), timeout=10)).values()
    assert out.shape[0] == 16
    code, details = grpc_error(stub.Predict, predict_request("keras", {"x": over}))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert "input 'x'" in details and "more than 64" in details and ELEMENTS in details

    status, doc = http(small, "/v1/models/keras:predict", {"instances": over.tolist()})
    assert status == 429 and list(doc) == ["error"], doc
    assert "input 'x'" in doc["error"] and "64" in doc["error"] and ELEMENTS in doc["error"]
    status, doc = http(small, "/v1/models/keras:predict", {"inputs": {"x": over.tolist()}})
    assert status == 429 and ELEMENTS in doc["error"], doc
    status, doc = http(small, "/v1/models/keras:predict", {"instances": at_cap.tolist()})
    assert status == 200, doc
    np.testing.assert_allclose(doc["predictions"], out, rtol=1e-6)

    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [17, 4], "data": [1.0] * 68}]}
    status, doc = http(small, "/v2/models/keras/infer", body)
    assert status == 429 and ELEMENTS in doc["error"], doc

    client = triton.InferenceServerClient(url=f"127.0.0.1:{small.gateway.port}")
    try:
        tensor = triton.InferInput("x", list(over.shape), "FP32")
        tensor.set_data_from_numpy(over)
        with pytest.raises(InferenceServerException) as err:
            client.infer("keras", [tensor])
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED", err.value.message()
        assert "input 'x'" in err.value.message() and ELEMENTS in err.value.message()
        tensor = triton.InferInput("x", list(at_cap.shape), "FP32")
        tensor.set_data_from_numpy(at_cap)
        np.testing.assert_allclose(client.infer("keras", [tensor]).as_numpy("output_0"), out)
    finally:
        client.close()
