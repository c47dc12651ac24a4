"""The Open Inference Protocol (KServe v2) over HTTP/REST, through tritonclient.http as a
Triton user calls it, against real SavedModels: health, metadata, JSON and binary tensors
(Triton's binary data extension) in and out, BYTES, output selection, versions and labels;
answers equal TF Serving's Predict of the same request; errors are `{"error"}` with the
HTTP status of their gRPC code and name the input; a REST request goes through the data
plane (shadows, the divergence log) like Predict and v2 gRPC."""

from __future__ import annotations

import json
import shutil
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from aiohttp import web
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.samples import build_half_plus_two, make_example
from gateway.transport import oip_rest
from gateway.workers import free_port
from tests.support import outputs_of, predict_request, wait_compared, wait_until

X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
EXAMPLES = np.array(
    [make_example(v).SerializeToString() for v in ([1.0, 2.0], [-0.5, 0.25], [3.0, -1.0])],
    dtype=object,
)
TEXT_EXAMPLES = np.array(  # float32 bytes below 0x80: valid UTF-8, so they travel as JSON
    [make_example(v).SerializeToString() for v in ([2.0, 0.5], [3.0, 2.5])], dtype=object
)


def serve_rest(gw):
    """An `aiohttp.web.Application` with the v2 routes (`oip_rest.add_routes`) on the
    gateway's loop, on an ephemeral loopback port; returns (url, stop)."""

    async def start():
        app = web.Application(client_max_size=gw.gateway.config.server.max_message_bytes)
        oip_rest.add_routes(
            app,
            gw.gateway.plane,
            gw.gateway.manager,
            gw.gateway.metrics,
            gw.gateway.replica,
            gw.gateway.config.server.max_message_bytes,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, port = gw.call(start())
    return f"127.0.0.1:{port}", lambda: gw.call(runner.cleanup())


@pytest.fixture(scope="module")
def half_plus_two(tmp_path_factory):
    return build_half_plus_two(tmp_path_factory.mktemp("hpt") / "1")


@pytest.fixture
def served(make_repo, gateway_factory, half_plus_two):
    keras = make_repo("keras", {1: "keras_a", 2: "keras_b"})
    module = make_repo("module", {1: "module"})
    est = make_repo("est", {1: "estimator"})
    half = make_repo("half", {})
    shutil.copytree(half_plus_two, half / "1")
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "keras",
                    "base_path": str(keras),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                },
                {"name": "module", "base_path": str(module)},
                {"name": "est", "base_path": str(est)},
                {"name": "half", "base_path": str(half)},
            ],
            "server": {"rest_api_port": free_port()},  # the gateway's own REST port
        }
    )
    gw.url = f"127.0.0.1:{gw.gateway.rest_port}"
    gw.client = triton.InferenceServerClient(url=gw.url)
    yield gw
    gw.client.close()


def predict(gw, model, inputs, **kwargs):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    return outputs_of(stub.Predict(predict_request(model, inputs, **kwargs), timeout=10))


def infer_input(name, array, datatype, binary=True):
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def http(gw, path, body=None, headers=None):
    """(status, headers, body) of a plain HTTP call (POST when there is a body)."""
    request = urllib.request.Request(
        f"http://{gw.url}{path}",
        data=body if body is None or isinstance(body, bytes) else json.dumps(body).encode(),
        headers=headers or {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def error_of(gw, path, body=None, headers=None):
    """(status, error message) of a call that fails with the protocol's error body."""
    status, response_headers, content = http(gw, path, body, headers)
    assert status != 200, content
    assert response_headers["Content-Type"].startswith("application/json")
    answer = json.loads(content)
    assert list(answer) == ["error"], answer
    return status, answer["error"]


def test_health_and_metadata(served):
    client = served.client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("keras")
    assert client.is_model_ready("keras", "1") and client.is_model_ready("keras", "canary")
    assert not client.is_model_ready("keras", "7")
    assert not client.is_model_ready("nope")
    assert error_of(served, "/v2/models/keras/versions/7/ready")[0] == 400
    status, message = error_of(served, "/v2/models/nope/ready")
    assert status == 404 and "'nope'" in message

    server = client.get_server_metadata()
    assert (server["name"], server["version"]) == ("tf-gateway", "0.1.0")
    assert server["extensions"] == ["binary_tensor_data"]

    meta = client.get_model_metadata("keras")
    assert meta == {
        "name": "keras",
        "versions": ["1", "2"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output_0", "datatype": "FP32", "shape": [-1, 3]}],
    }
    # the same answer as v2 gRPC (whose JSON form has string shapes)
    grpc_client = triton_grpc.InferenceServerClient(url=f"127.0.0.1:{served.gateway.port}")
    try:
        for name, version in [("est", "1"), ("module", ""), ("keras", "stable")]:
            over_grpc = grpc_client.get_model_metadata(name, version, as_json=True)
            over_rest = client.get_model_metadata(name, version)
            for key in ("inputs", "outputs"):
                for tensor in over_grpc[key]:
                    tensor["shape"] = [int(d) for d in tensor["shape"]]
            assert over_rest == over_grpc
    finally:
        grpc_client.close()
    assert client.get_model_metadata("est")["inputs"] == [
        {"name": "inputs", "datatype": "BYTES", "shape": [-1]}
    ]
    status, message = error_of(served, "/v2/models/nope")
    assert status == 404 and "'nope'" in message
    status, message = error_of(served, "/v2/models/keras/versions/7")
    assert status == 404 and "version 7" in message


@pytest.mark.parametrize(
    ("binary_in", "binary_out"),
    [(True, None), (True, False), (False, True), (False, False)],
    ids=["binary-default", "binary-in-json-out", "json-in-binary-out", "json"],
)
def test_infer_fp32_equals_predict_for_versions_and_labels(served, binary_in, binary_out):
    client = served.client
    outputs = None if binary_out is None else [triton.InferRequestedOutput("output_0", binary_out)]
    for version, kwargs, answered in [
        ("", {}, "2"),
        ("1", {"version": 1}, "1"),
        ("stable", {"label": "stable"}, "1"),
    ]:
        result = client.infer(
            "keras",
            [infer_input("x", X, "FP32", binary_in)],
            model_version=version,
            outputs=outputs,
            request_id="r-1",
        )
        response = result.get_response()
        assert (response["model_name"], response["model_version"], response["id"]) == (
            "keras",
            answered,
            "r-1",
        )
        (out,) = response["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("output_0", "FP32", [5, 3])
        assert ("data" in out) == (binary_out is False)  # no outputs named: all binary
        if binary_out is not False:
            assert out["parameters"] == {"binary_data_size": 60}
        expected = predict(served, "keras", {"x": X}, **kwargs)["output_0"]
        got = result.as_numpy("output_0")
        assert got.dtype == np.float32 and got.shape == (5, 3)
        np.testing.assert_array_equal(got, expected)  # float32 JSON round-trips exactly

    # TF1 graph: half_plus_two's serving_default feeds the non-placeholder tensor `x`
    x = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
    y = client.infer("half", [infer_input("x", x, "FP32", binary_in)]).as_numpy("y")
    np.testing.assert_array_equal(y, predict(served, "half", {"x": x})["y"])


def test_output_selection_and_int64(served):
    client = served.client
    expected = predict(served, "module", {"x": X})
    for binary in (True, False):
        result = client.infer(
            "module",
            [infer_input("x", X, "FP32", binary)],
            outputs=[
                triton.InferRequestedOutput("argmax", binary),
                triton.InferRequestedOutput("y", not binary),
            ],
        )
        outs = result.get_response()["outputs"]
        assert [(o["name"], "data" in o) for o in outs] == [
            ("argmax", not binary),
            ("y", binary),
        ]
        assert result.as_numpy("argmax").dtype == np.int64
        np.testing.assert_array_equal(result.as_numpy("argmax"), expected["argmax"])
        np.testing.assert_array_equal(result.as_numpy("y"), expected["y"])
    one = client.infer(
        "module",
        [infer_input("x", X, "FP32")],
        outputs=[triton.InferRequestedOutput("argmax", binary_data=False)],
    )
    assert [o["name"] for o in one.get_response()["outputs"]] == ["argmax"]
    assert one.get_response()["outputs"][0]["data"] == X.argmax(axis=1).tolist()
    for algorithm in ("gzip", "deflate"):  # compressed request bodies, as tritonclient sends
        result = client.infer(
            "module", [infer_input("x", X, "FP32")], request_compression_algorithm=algorithm
        )
        np.testing.assert_array_equal(result.as_numpy("y"), expected["y"])


def test_bytes_inputs_and_signature_parameter(served):
    client = served.client
    result = client.infer("est", [infer_input("inputs", EXAMPLES, "BYTES")])
    expected = predict(served, "est", {"inputs": EXAMPLES})
    classes = result.as_numpy("classes")  # binary BYTES: bytes elements
    assert classes.shape == (3, 2) and classes.tolist() == expected["classes"].tolist()
    np.testing.assert_array_equal(result.as_numpy("scores"), expected["scores"])

    # the `predict` signature, picked with the signature_name request parameter
    result = client.infer(
        "est",
        [infer_input("examples", EXAMPLES, "BYTES")],
        outputs=[triton.InferRequestedOutput("value")],
        parameters={"signature_name": "predict"},
    )
    expected = predict(served, "est", {"examples": EXAMPLES}, signature="predict")
    assert [o["name"] for o in result.get_response()["outputs"]] == ["value"]
    np.testing.assert_array_equal(result.as_numpy("value"), expected["value"])
    np.testing.assert_allclose(result.as_numpy("value")[:, 0], [3.0, -0.25, 2.0], rtol=1e-6)

    # BYTES as JSON strings in and out
    result = client.infer(
        "est",
        [infer_input("inputs", TEXT_EXAMPLES, "BYTES", binary=False)],
        outputs=[triton.InferRequestedOutput("classes", binary_data=False)],
    )
    (out,) = result.get_response()["outputs"]
    assert out == {
        "name": "classes",
        "datatype": "BYTES",
        "shape": [2, 2],
        "data": ["neg", "pos"] * 2,
    }
    expected = predict(served, "est", {"inputs": TEXT_EXAMPLES})["classes"]
    assert [c.encode() for c in result.as_numpy("classes").reshape(-1)] == expected.reshape(
        -1
    ).tolist()


def test_curl_style_json_and_request_ids(served):
    body = {
        "id": "own-1",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X[:2].tolist()}],
    }  # nested rows, as the specification allows
    status, headers, content = http(
        served, "/v2/models/keras/versions/1/infer", body, {"x-request-id": "header-1"}
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(content)
    assert headers["x-request-id"] == "own-1" == answer["id"]  # the request's `id` wins
    assert headers["x-gateway-replica"] == served.gateway.replica
    expected = predict(served, "keras", {"x": X[:2]}, version=1)["output_0"]
    assert answer["outputs"] == [
        {
            "name": "output_0",
            "datatype": "FP32",
            "shape": [2, 3],
            "data": pytest.approx(expected.reshape(-1).tolist(), rel=1e-6),
        }
    ]
    del body["id"]
    status, headers, content = http(
        served, "/v2/models/keras/infer", body, {"X-Request-Id": "header-2"}
    )
    assert status == 200 and headers["x-request-id"] == "header-2"
    assert "id" not in json.loads(content)
    status, headers, _ = http(served, "/v2/health/live")
    assert status == 200 and headers["x-request-id"]


def _raw(gw, path, header, binary, length=None):
    text = json.dumps(header).encode()
    hl = str(len(text) if length is None else length)
    return error_of(gw, path, text + binary, {"Inference-Header-Content-Length": hl})


def test_errors_are_http_statuses_naming_the_input(served):
    client = served.client
    status, message = error_of(
        served,
        "/v2/models/nope/infer",
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
    )
    assert status == 404 and "'nope'" in message
    status, message = error_of(served, "/v2/models/keras/infer", b"{not json")
    assert status == 400 and "invalid JSON" in message
    status, message = error_of(served, "/v2/models/keras/infer", b"[1, 2]")
    assert status == 400 and "expected a JSON object" in message

    def bad(tensor, *fragments, status=400, model="keras"):
        got, message = error_of(served, f"/v2/models/{model}/infer", {"inputs": [tensor]})
        assert got == status, (got, message)
        for fragment in fragments:
            assert fragment in message, (fragment, message)

    x20 = X.reshape(-1).tolist()
    bad({"name": "x", "shape": [5, 4], "datatype": "INT32", "data": list(range(20))},
        "input 'x'", "dtype")  # fmt: skip
    bad({"name": "x", "shape": [5, 4], "datatype": "FLOAT", "data": x20},
        "input 'x'", "unknown datatype 'FLOAT'")  # fmt: skip
    bad({"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": x20},
        "input 'x'", "negative dimension")  # fmt: skip
    bad({"name": "x", "shape": [6, 4], "datatype": "FP32", "data": x20},
        "input 'x'", "shape [6, 4] needs 24 values in data, got 20")  # fmt: skip
    bad({"name": "x", "shape": [5, "4"], "datatype": "FP32", "data": x20},
        "input 'x'", "shape must be an array of integers")  # fmt: skip
    bad({"name": "x", "shape": [5, 4], "datatype": "FP32", "data": ["a"] * 20},
        "input 'x'", "FP32 data must be numbers", "element 0 is a string")  # fmt: skip
    bad({"name": "x", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3.5, 4]},
        "input 'x'", "INT32 data must be integers", "element 2")  # fmt: skip
    bad({"name": "x", "shape": [1, 4], "datatype": "INT8", "data": [1, 2, 300, 4]},
        "input 'x'", "300 is out of range for INT8")  # fmt: skip
    bad({"name": "x", "shape": [5, 4], "datatype": "FP32"},
        "input 'x'", "expected data, or parameters.binary_data_size")  # fmt: skip
    bad({"name": "y", "shape": [5, 4], "datatype": "FP32", "data": x20}, "missing input 'x'")
    bad({"name": "x", "shape": [2, 5], "datatype": "FP32", "data": x20[:10]},
        "input 'x'", "shape")  # fmt: skip
    bad({"name": "x", "shape": [5, 4], "datatype": "FP32", "data": x20,
         "parameters": {"shared_memory_region": "r"}}, "shared memory", status=501)  # fmt: skip
    with pytest.raises(triton.InferenceServerException) as err:  # tritonclient sees them too
        client.infer("keras", [infer_input("x", X.astype(np.int32), "INT32")])
    assert err.value.status() == "400" and "input 'x'" in err.value.message()
    with pytest.raises(triton.InferenceServerException) as err:
        client.infer("keras", [infer_input("x", X, "FP32")], model_version="7")
    assert err.value.status() == "404" and "version 7" in err.value.message()

    # binary data: sizes against the shape and against the body
    tensor = {"name": "x", "shape": [6, 4], "datatype": "FP32",
              "parameters": {"binary_data_size": 80}}  # fmt: skip
    path = "/v2/models/keras/infer"
    status, message = _raw(served, path, {"inputs": [tensor]}, X.tobytes())
    assert status == 400 and "input 'x'" in message and "80 bytes" in message
    assert "needs 96" in message
    tensor["shape"] = [5, 4]
    status, message = _raw(served, path, {"inputs": [tensor]}, X.tobytes()[:40])
    assert status == 400 and "input 'x': binary_data_size 80 runs past the binary data" in message
    status, message = _raw(served, path, {"inputs": [tensor]}, X.tobytes() + b"\0" * 4)
    assert status == 400 and "4 bytes of binary data after" in message
    status, message = _raw(served, path, {"inputs": [tensor]}, X.tobytes(), length=10**6)
    assert status == 400 and "Inference-Header-Content-Length" in message
    status, message = error_of(served, path, json.dumps({"inputs": [tensor]}).encode())
    assert status == 400 and "runs past the binary data (0 bytes" in message
    elements = b"".join(struct.pack("<I", len(e)) + e for e in EXAMPLES[:2])
    strings = {"name": "inputs", "shape": [3], "datatype": "BYTES",
               "parameters": {"binary_data_size": len(elements)}}  # fmt: skip
    status, message = _raw(served, "/v2/models/est/infer", {"inputs": [strings]}, elements)
    assert status == 400 and "input 'inputs'" in message and "2 BYTES elements" in message
    status, message = _raw(
        served, path, {"inputs": [{**tensor, "datatype": "BF16",
                                   "parameters": {"binary_data_size": 40}}]}, b"\0" * 40
    )  # fmt: skip
    assert status == 400 and "input 'x'" in message and "FP32 [-1, 4]" in message

    # outputs
    x = {"name": "x", "shape": [5, 4], "datatype": "FP32", "data": x20}
    status, message = error_of(
        served, "/v2/models/module/infer", {"inputs": [x], "outputs": [{"name": "nope"}]}
    )
    assert status == 400 and "'nope'" in message
    status, message = error_of(
        served,
        "/v2/models/module/infer",
        {"inputs": [x], "outputs": [{"name": "y", "parameters": {"classification": 2}}]},
    )
    assert status == 501 and "classification" in message


def test_metrics(served):
    served.client.infer("keras", [infer_input("x", X, "FP32")], model_version="1")
    served.client.infer("keras", [infer_input("x", X, "FP32")], model_version="stable")
    served.client.is_model_ready("keras", "2")
    with pytest.raises(triton.InferenceServerException):
        served.client.infer("nope", [infer_input("x", X, "FP32")])
    reg = served.gateway.metrics.registry

    def count(method, model, version, code="OK"):
        labels = {
            "protocol": "oip_rest",
            "method": method,
            "model": model,
            "version": version,
            "code": code,
        }
        return reg.get_sample_value("gateway_requests_total", labels)

    assert count("ModelInfer", "keras", "1") == 2.0  # labelled by the answering version
    assert count("ModelReady", "keras", "2") == 1.0
    assert count("ModelInfer", "(unknown)", "", "NOT_FOUND") == 1.0


def test_three_protocols_are_mirrored_and_logged_with_their_protocol(
    shadow_models, tmp_path, gateway_factory
):
    base = tmp_path / "repo" / "m"
    for version, src in {1: shadow_models["a"], 2: shadow_models["b"]}.items():
        shutil.copytree(src, base / str(version))
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "m",
                    "base_path": str(base),
                    "version_policy": {"all": {}},
                    "primary": 1,
                    "shadows": [{"version": 2}],
                }
            ],
            "server": {"rest_api_port": free_port()},
        }
    )
    rest = triton.InferenceServerClient(url=f"127.0.0.1:{gw.gateway.rest_port}")
    v2 = triton_grpc.InferenceServerClient(url=f"127.0.0.1:{gw.gateway.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    x = shadow_models["x"][:3]
    try:
        for i in range(3):
            row = x[i : i + 1]
            predict_answer = stub.Predict(
                predict_request("m", {"x": row}), metadata=[("x-request-id", f"tfs-{i}")]
            )
            tensor = triton_grpc.InferInput("x", [1, 4], "FP32")
            tensor.set_data_from_numpy(row)
            grpc_answer = v2.infer("m", [tensor], request_id=f"oip-grpc-{i}")
            rest_answer = rest.infer("m", [infer_input("x", row, "FP32")], request_id=f"rest-{i}")
            expected = outputs_of(predict_answer)["output_0"]
            np.testing.assert_array_equal(grpc_answer.as_numpy("output_0"), expected)
            np.testing.assert_array_equal(rest_answer.as_numpy("output_0"), expected)
        wait_compared(gw, "m", 9)
        log = gw.gateway.mirror._log
        assert log is not None and log.flush(10)
        records = wait_until(
            lambda: [
                r
                for r in map(json.loads, gw.divergence_log.read_text().splitlines())
                if r["event"] == "divergence"
            ],
            10,
            "divergence records",
        )
    finally:
        rest.close()
        v2.close()
    assert sorted((r["protocol"], r["request_id"]) for r in records) == sorted(
        (protocol, f"{prefix}-{i}")
        for protocol, prefix in [
            ("tfs_grpc", "tfs"),
            ("oip_grpc", "oip-grpc"),
            ("oip_rest", "rest"),
        ]
        for i in range(3)
    )
    assert {(r["primary_version"], r["shadow_version"]) for r in records} == {(1, 2)}
    for i in range(3):
        same = [r for r in records if r["request_id"].endswith(f"-{i}")]
        assert len(same) == 3
        assert len({json.dumps(r["features"], sort_keys=True) for r in same}) == 1


def test_routes_on_an_application_and_unknown_paths(served):
    """`add_routes` serves the same API on an aiohttp Application of one's own; paths that
    are not the protocol's are 404/405 with the error body, TF Serving's /v1 still answers."""
    url, stop = serve_rest(served)
    client = triton.InferenceServerClient(url=url)
    try:
        assert client.is_server_live() and client.is_model_ready("keras", "stable")
        result = client.infer("keras", [infer_input("x", X, "FP32")], model_version="1")
        expected = predict(served, "keras", {"x": X}, version=1)["output_0"]
        np.testing.assert_array_equal(result.as_numpy("output_0"), expected)
    finally:
        client.close()
        stop()
    status, message = error_of(served, "/v2/models/keras/explain", {"inputs": []})
    assert status == 404 and "Open Inference Protocol" in message
    status, message = error_of(served, "/v2/models/keras/infer")  # a GET
    assert status == 405 and "GET /v2/models/keras/infer" in message
    status, _, content = http(served, "/v1/models/keras")
    assert status == 200 and json.loads(content)["model_version_status"]
