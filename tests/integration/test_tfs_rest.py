"""TF Serving's REST API on `server.rest_api_port`, called with a plain HTTP client
(http.client, one keep-alive connection per test) against real SavedModels: every
endpoint and format answers what TF Serving's document says, and what the stock gRPC
stubs get for the same request."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from gateway.samples import build_half_plus_two, make_example
from gateway.transport.status import HTTP_STATUS
from gateway.workers import free_port
from tests.support import outputs_of, predict_request, wait_compared

X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
LIMIT = 256 * 1024  # server.max_message_bytes of these gateways


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    doc: Any


class Rest:
    """One HTTP/1.1 connection to the REST port (kept alive across calls)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        self.conn.request(method, path, body=body, **kwargs)
        response = self.conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, json.loads(data) if data else None)

    def post(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return self.call("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.call("GET", path, **kwargs)


@pytest.fixture(scope="session")
def rest_models(tmp_path_factory):
    """TF Serving's half_plus_two (our TF1 build of it) and a TF2 model with string
    outputs: `data: string [?]` -> `echo_bytes` (the input), `upper`, `length`."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("rest_models")
    build_half_plus_two(root / "hpt" / "1")

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data")])
        def serve(self, data):
            return {
                "echo_bytes": tf.identity(data),
                "upper": tf.strings.upper(data),
                "length": tf.strings.length(data),
            }

    text = Text()
    tf.saved_model.save(text, str(root / "text" / "1"), signatures={"serving_default": text.serve})
    return root


@pytest.fixture
def served(make_repo, gateway_factory, rest_models, tmp_path):
    keras = make_repo("keras", {1: "keras_a", 2: "keras_b"})
    repos = {
        "module": make_repo("module", {1: "module"}),
        "est": make_repo("est", {1: "estimator"}),
        "hpt": tmp_path / "repo" / "hpt",
        "text": tmp_path / "repo" / "text",
    }
    shutil.copytree(rest_models / "hpt", repos["hpt"])
    shutil.copytree(rest_models / "text", repos["text"])
    gw = gateway_factory(
        {
            "server": {"rest_api_port": free_port(), "max_message_bytes": LIMIT},
            "models": [
                {
                    "name": "keras",
                    "base_path": str(keras),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                },
                *({"name": name, "base_path": str(path)} for name, path in repos.items()),
            ],
        }
    )
    gw.rest = Rest(gw.gateway.rest_port)
    gw.stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    return gw


def _f32(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def test_half_plus_two_answers_as_in_tf_servings_document(served):
    rest = served.rest
    reply = rest.post("/v1/models/hpt:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (reply.status, reply.doc) == (200, {"predictions": [2.5, 3.0, 4.5]})
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-gateway-replica"] == served.gateway.replica
    assert reply.headers["x-request-id"]
    sock = rest.conn.sock
    # JSON integers are converted to the float input; columnar answers `outputs`
    assert rest.post("/v1/models/hpt:predict", {"instances": [1, 2, 5]}).doc == {
        "predictions": [2.5, 3.0, 4.5]
    }
    reply = rest.post(
        "/v1/models/hpt/versions/1:predict",
        {"signature_name": "serving_default", "inputs": [3.0, 4.0]},
    )
    assert reply.doc == {"outputs": [3.5, 4.0]}
    # NaN and Infinity are read and written as TF Serving's tokens
    reply = rest.call("POST", "/v1/models/hpt:predict", b'{"instances": [NaN, Infinity, 1.0]}')
    assert reply.status == 200
    nan, inf, value = reply.doc["predictions"]
    assert np.isnan(nan) and inf == float("inf") and value == 2.5
    # TF Serving's regress and classify examples on the same model
    reply = rest.post(
        "/v1/models/hpt:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}, {"x": 2.0}]},
    )
    assert reply.doc == {"results": [42.0, 3.0]}
    reply = rest.post(
        "/v1/models/hpt:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}
    )
    assert reply.doc == {"results": [[["", 12.0]]]}
    assert rest.conn.sock is sock  # one keep-alive connection throughout

    grpc_y = outputs_of(
        served.stub.Predict(predict_request("hpt", {"x": _f32([1.0, 2.0, 5.0])}), timeout=10)
    )["y"]
    np.testing.assert_array_equal(grpc_y, [2.5, 3.0, 4.5])


def test_predict_row_and_columnar_by_version_and_label_equal_grpc(served):
    rest = served.rest
    cases = [
        ("/v1/models/keras/versions/1:predict", {"version": 1}),
        ("/v1/models/keras/labels/canary:predict", {"label": "canary"}),
        ("/v1/models/keras:predict", {}),
    ]
    for path, spec in cases:
        grpc_out = outputs_of(served.stub.Predict(predict_request("keras", {"x": X}, **spec)))
        expected = grpc_out["output_0"]
        rows = rest.post(path, {"instances": X.tolist()})
        assert rows.status == 200, rows.doc
        np.testing.assert_array_equal(_f32(rows.doc["predictions"]), expected)
        named_rows = rest.post(path, {"instances": [{"x": row} for row in X.tolist()]})
        assert named_rows.doc == rows.doc
        columns = rest.post(path, {"signature_name": "serving_default", "inputs": X.tolist()})
        np.testing.assert_array_equal(_f32(columns.doc["outputs"]), expected)
        assert rest.post(path, {"inputs": {"x": X.tolist()}}).doc == columns.doc
    v1 = _f32(rest.post(cases[0][0], {"instances": X.tolist()}).doc["predictions"])
    v2 = _f32(rest.post(cases[1][0], {"instances": X.tolist()}).doc["predictions"])
    assert not np.allclose(v1, v2)  # the versions (and so the routes) really differ


def test_several_outputs_are_objects_per_row_or_one_object_of_columns(served):
    rest = served.rest
    grpc_out = outputs_of(served.stub.Predict(predict_request("module", {"x": X})))
    rows = rest.post("/v1/models/module:predict", {"instances": X.tolist()}).doc["predictions"]
    assert [set(r) for r in rows] == [{"y", "argmax"}] * len(X)
    np.testing.assert_array_equal(_f32([r["y"] for r in rows]), grpc_out["y"])
    assert [r["argmax"] for r in rows] == grpc_out["argmax"].tolist()  # int64 as JSON ints
    assert all(type(r["argmax"]) is int for r in rows)
    columns = rest.post("/v1/models/module:predict", {"inputs": {"x": X.tolist()}}).doc["outputs"]
    np.testing.assert_array_equal(_f32(columns["y"]), grpc_out["y"])
    assert columns["argmax"] == grpc_out["argmax"].tolist()


def test_b64_inputs_and_outputs(served):
    rest = served.rest
    # serialized tf.Example in as {"b64": ...}: the estimator's predict signature
    examples = [make_example(r).SerializeToString() for r in ([1.0, 2.0], [3.0, -1.0])]
    grpc_out = outputs_of(
        served.stub.Predict(
            predict_request(
                "est", {"examples": np.array(examples, dtype=object)}, signature="predict"
            )
        )
    )
    reply = rest.post(
        "/v1/models/est:predict",
        {
            "signature_name": "predict",
            "instances": [{"b64": base64.b64encode(e).decode()} for e in examples],
        },
    )
    assert reply.status == 200, reply.doc
    rows = reply.doc["predictions"]
    np.testing.assert_array_equal(
        _f32([r["probabilities"] for r in rows]), grpc_out["probabilities"]
    )
    np.testing.assert_array_equal(_f32([r["value"] for r in rows]), grpc_out["value"])

    # out: `_bytes` outputs always as b64; other strings as text unless they are not UTF-8
    text = rest.post("/v1/models/text:predict", {"instances": ["hello", "wörld"]}).doc
    assert text == {
        "predictions": [
            {
                "echo_bytes": {"b64": base64.b64encode(b"hello").decode()},
                "upper": "HELLO",
                "length": 5,
            },
            {
                "echo_bytes": {"b64": base64.b64encode("wörld".encode()).decode()},
                "upper": "WöRLD",
                "length": 6,
            },
        ]
    }
    binary = b"\xff\xfe\x00a"
    reply = rest.post(
        "/v1/models/text:predict",
        {"inputs": [{"b64": base64.b64encode(binary).decode()}, "ok"]},
    )
    grpc_out = outputs_of(
        served.stub.Predict(predict_request("text", {"data": np.array([binary, b"ok"], object)}))
    )
    outputs = reply.doc["outputs"]
    assert [base64.b64decode(v["b64"]) for v in outputs["echo_bytes"]] == [binary, b"ok"]
    assert [base64.b64decode(v["b64"]) for v in outputs["upper"]] == grpc_out["upper"].tolist()
    assert outputs["length"] == grpc_out["length"].tolist() == [4, 2]


def test_classify_and_regress_with_examples_and_context_equal_grpc(served):
    rest = served.rest
    rows = [[1.0, 2.0], [0.0, -1.0], [4.0, 0.5]]
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "est"
    req.input.example_list.examples.extend(make_example(r) for r in rows)
    grpc_c = served.stub.Classify(req, timeout=10).result
    reply = rest.post("/v1/models/est:classify", {"examples": [{"x": r} for r in rows]})
    assert reply.status == 200, reply.doc
    assert [[label for label, _ in row] for row in reply.doc["results"]] == [["neg", "pos"]] * 3
    np.testing.assert_array_equal(
        _f32([[score for _, score in row] for row in reply.doc["results"]]),
        _f32([[c.score for c in cl.classes] for cl in grpc_c.classifications]),
    )

    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.name = "est"
    rreq.model_spec.signature_name = "regress"
    rreq.input.example_list.examples.extend(make_example(r) for r in rows)
    grpc_r = [r.value for r in served.stub.Regress(rreq, timeout=10).result.regressions]
    reply = rest.post(
        "/v1/models/est/versions/1:regress",
        {"signature_name": "regress", "examples": [{"x": r} for r in rows]},
    )
    assert reply.doc == {"results": grpc_r} and grpc_r == [3.0, -1.0, 4.5]

    # context features are merged into every example (example_list_with_context)
    reply = rest.post(
        "/v1/models/est:regress",
        {"signature_name": "regress", "context": {"x": [10.0, 20.0]}, "examples": [{}, {}]},
    )
    assert reply.doc == {"results": [30.0, 30.0]}
    # JSON integers are int64 features, as in TF Serving: this model parses floats
    reply = rest.post(
        "/v1/models/est:regress", {"signature_name": "regress", "examples": [{"x": [1, 2]}]}
    )
    assert reply.status == 400 and "error" in reply.doc


def _grpc_status(served, **spec: Any) -> Any:
    ms = model_service_pb2_grpc.ModelServiceStub(served.channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "keras"
    if "version" in spec:
        req.model_spec.version.value = spec["version"]
    if "label" in spec:
        req.model_spec.version_label = spec["label"]
    return json_format.MessageToDict(
        ms.GetModelStatus(req, timeout=10), always_print_fields_with_no_presence=True
    )


def test_model_status_by_version_and_label_as_tf_serving_prints_it(served):
    rest = served.rest
    ok = {"error_code": "OK", "error_message": ""}
    reply = rest.get("/v1/models/keras")
    assert reply.status == 200
    assert reply.doc == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": ok},
            {"version": "2", "state": "AVAILABLE", "status": ok},
        ]
    }
    assert reply.doc == _grpc_status(served)
    one = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert rest.get("/v1/models/keras/versions/1").doc == one == _grpc_status(served, version=1)
    assert rest.get("/v1/models/keras/labels/stable").doc == one
    assert rest.get("/v1/models/keras/labels/canary").doc == _grpc_status(served, label="canary")
    assert rest.get("/V1/MODELS/keras/versions/2").doc["model_version_status"][0]["version"] == "2"


def test_model_metadata_as_tf_serving_prints_it(served):
    rest = served.rest
    reply = rest.get("/v1/models/hpt/metadata")
    assert reply.status == 200
    assert reply.doc["model_spec"] == {"name": "hpt", "signature_name": "", "version": "1"}
    sigs = reply.doc["metadata"]["signature_def"]["signature_def"]
    unknown = {"dim": [], "unknown_rank": True}  # this TF1 graph's x and y have no shape
    assert sigs["serving_default"] == {
        "inputs": {"x": {"dtype": "DT_FLOAT", "tensor_shape": unknown, "name": "x:0"}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "tensor_shape": unknown, "name": "y:0"}},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    assert set(sigs) == {
        "serving_default",
        "classify_x_to_y",
        "regress_x_to_y",
        "regress_x_to_y2",
        "regress_x2_to_y3",
    }
    # the same SignatureDefMap the gRPC GetModelMetadata answers, by version and by label
    for path, spec in (("/versions/2", {"version": 2}), ("/labels/stable", {"label": "stable"})):
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = "keras"
        if "version" in spec:
            req.model_spec.version.value = spec["version"]
        else:
            req.model_spec.version_label = spec["label"]
        response = served.stub.GetModelMetadata(req, timeout=10)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sigmap)
        doc = rest.get(f"/v1/models/keras{path}/metadata").doc
        assert doc["model_spec"]["version"] == str(response.model_spec.version.value)
        x = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
        assert x["tensor_shape"] == {
            "dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}],
            "unknown_rank": False,
        }
        assert doc["metadata"]["signature_def"] == json_format.MessageToDict(
            sigmap, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )


def _grpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_errors_are_tf_servings_json_with_its_http_statuses(served):
    rest = served.rest
    # unknown model and version: NOT_FOUND, the gRPC answer's words
    reply = rest.post("/v1/models/nope:predict", {"instances": [1.0]})
    grpc_err = _grpc_error(lambda: served.stub.Predict(predict_request("nope", {"x": X})))
    assert reply.status == HTTP_STATUS[grpc_err.code().name] == 404
    assert reply.doc == {"error": grpc_err.details()}
    assert "Servable not found for request" in reply.doc["error"]
    assert rest.get("/v1/models/nope").status == 404
    assert rest.get("/v1/models/nope/metadata").status == 404
    reply = rest.post("/v1/models/keras/versions/9:predict", {"instances": X.tolist()})
    assert reply.status == 404 and "version 9" in reply.doc["error"]

    # bad JSON: 400 naming the position
    reply = rest.post("/v1/models/hpt:predict", b'{"instances": [1.0, 2.0,]}')
    assert reply.status == 400
    assert reply.doc["error"].startswith("JSON Parse error: ")
    assert "at offset: 23 (line 1, column 24)" in reply.doc["error"], reply.doc
    assert "The document is empty" in rest.post("/v1/models/hpt:predict", b"").doc["error"]

    # wrong type, ragged list, wrong shape: 400 naming the input
    reply = rest.post("/v1/models/keras:predict", {"instances": [["a", 1, 2, 3]]})
    assert reply.status == 400
    assert "input 'x'" in reply.doc["error"]
    assert 'JSON Value: "a" Type: String is not of expected type: float' in reply.doc["error"]
    reply = rest.post("/v1/models/keras:predict", {"inputs": {"x": [[1, 2, 3, 4], [1, 2]]}})
    assert reply.status == 400 and "input 'x'" in reply.doc["error"]
    assert "ragged" in reply.doc["error"] and "at inputs['x'][1]" in reply.doc["error"]
    reply = rest.post("/v1/models/keras:predict", {"instances": [[1.0, 2.0, 3.0]]})
    grpc_err = _grpc_error(
        lambda: served.stub.Predict(predict_request("keras", {"x": _f32([[1.0, 2.0, 3.0]])}))
    )
    assert (reply.status, reply.doc["error"]) == (400, grpc_err.details())
    reply = rest.post("/v1/models/text:predict", {"instances": [1, 2]})
    assert reply.status == 400 and "is not of expected type: string" in reply.doc["error"]

    # the request's shape
    for body, words in [
        ({"instances": [1.0], "inputs": [1.0]}, "only one of 'inputs' or 'instances'"),
        ({"signature_name": 3, "instances": [1.0]}, "'signature_name' key must be a string"),
        ({"x": [1.0]}, "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"signature_name": "nope", "instances": [1.0]}, "signature_name 'nope' not found"),
        ([1, 2], "Is not object"),
    ]:
        reply = rest.post("/v1/models/hpt:predict", body)
        assert reply.status == 400 and words in reply.doc["error"], (body, reply.doc)
    reply = rest.post("/v1/models/keras:classify", {"examples": [{"x": 1.0}]})
    assert reply.status == 400 and "classification signature" in reply.doc["error"]
    reply = rest.post("/v1/models/est:classify", {"examples": [{"x": None}]})
    assert (
        reply.status == 400
        and "Feature: x has element with unexpected JSON type: Null" in (reply.doc["error"])
    )

    # paths: unknown -> 404; under /v1/ but no endpoint -> TF Serving's 400
    assert rest.get("/nope").status == 404 and "error" in rest.get("/nope").doc
    for method, path, words in [
        ("GET", "/v1/foo", "Malformed request: GET /v1/foo"),
        ("GET", "/v1/models", "Missing model name in request."),
        ("POST", "/v1/models/hpt/metadata", "Malformed request"),
        ("GET", "/v1/models/hpt:predict", "Malformed request"),
        ("POST", "/v1/models/hpt:PREDICT", "Malformed request"),
        ("PUT", "/v1/models/hpt", "Malformed request"),
        ("POST", f"/v1/models/hpt/versions/{2**64}:predict", "Failed to convert version"),
    ]:
        reply = rest.call(method, path, b"{}")
        assert reply.status == 400 and words in reply.doc["error"], (method, path, reply.doc)


def test_body_over_max_message_bytes_is_413(served):
    rest = served.rest
    big = json.dumps({"instances": [1.0] * (LIMIT // 4)}).encode()
    assert len(big) > LIMIT
    reply = rest.post("/v1/models/hpt:predict", big)
    assert reply.status == 413
    assert "at most 262144 bytes (server.max_message_bytes)" in reply.doc["error"]
    # without a Content-Length (chunked), the limit still holds
    chunked = Rest(served.gateway.rest_port)
    reply = chunked.post(
        "/v1/models/hpt:predict",
        (big[i : i + 8192] for i in range(0, len(big), 8192)),
        encode_chunked=True,
        headers={"Transfer-Encoding": "chunked"},
    )
    assert reply.status == 413
    # just under the limit is served
    fits = json.dumps({"instances": [1.0] * 1000}).encode()
    assert Rest(served.gateway.rest_port).post("/v1/models/hpt:predict", fits).status == 200


def test_request_id_and_metrics_like_grpc(served):
    rest = served.rest
    reply = rest.post(
        "/v1/models/hpt:predict", {"instances": [1.0]}, headers={"X-Request-Id": "abc-1"}
    )
    assert reply.headers["x-request-id"] == "abc-1"
    reply = rest.post("/v1/models/hpt:predict", {"instances": [1.0]})
    generated = reply.headers["x-request-id"]
    assert len(generated) == 32 and generated != "abc-1"
    reply = rest.get("/v1/models/nope", headers={"x-request-id": "err-1"})
    assert reply.status == 404 and reply.headers["x-request-id"] == "err-1"
    rest.post(
        "/v1/models/hpt:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}
    )
    text = (
        urllib.request.urlopen(
            f"http://127.0.0.1:{served.gateway.metrics_port}/metrics", timeout=10
        )
        .read()
        .decode()
    )
    for series in (
        'gateway_requests_total{code="OK",method="Predict",model="hpt",protocol="tfs_rest",version="1"} 2.0',
        'gateway_requests_total{code="NOT_FOUND",method="GetModelStatus",model="(unknown)",protocol="tfs_rest",version=""} 1.0',
        'gateway_requests_total{code="OK",method="Regress",model="hpt",protocol="tfs_rest",version="1"} 1.0',
        'gateway_request_latency_seconds_count{method="Predict",model="hpt",protocol="tfs_rest",version="1"} 2.0',
    ):
        assert series in text, series


def _records(path: Path) -> list[dict]:
    return [
        json.loads(line)
        for file in sorted(path.parent.glob(path.name + "*"))
        for line in file.read_text().splitlines()
    ]


def test_rest_requests_are_mirrored_to_shadows_like_grpc(shadow_models, tmp_path, gateway_factory):
    base = tmp_path / "repo" / "m"
    for version, src in ((1, shadow_models["a"]), (2, shadow_models["b"])):
        shutil.copytree(src, base / str(version))
    gw = gateway_factory(
        {
            "server": {"rest_api_port": free_port()},
            "models": [
                {
                    "name": "m",
                    "base_path": str(base),
                    "version_policy": {"all": {}},
                    "primary": 1,
                    "shadows": [{"version": 2}],
                }
            ],
        }
    )
    rest = Rest(gw.gateway.rest_port)
    x = shadow_models["x"][:5]
    for i in range(5):
        reply = rest.post(
            "/v1/models/m:predict",
            {"instances": x[i : i + 1].tolist()},
            headers={"x-request-id": f"rest-{i}"},
        )
        assert reply.status == 200, reply.doc
    wait_compared(gw, "m", 5)
    log = gw.gateway.mirror._log
    assert log is not None and log.flush(10)
    records = [r for r in _records(gw.divergence_log) if r.get("comparison") == "shadow"]
    assert sorted(r["request_id"] for r in records) == [f"rest-{i}" for i in range(5)]
    assert {r["protocol"] for r in records} == {"tfs_rest"}
    assert {(r["primary_version"], r["shadow_version"]) for r in records} == {(1, 2)}
