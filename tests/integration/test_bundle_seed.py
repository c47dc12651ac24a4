"""Issue #3 seed scenario: a model trained on Normalization-ed inputs, exported with its
adapted layer, served with raw inputs; the same model without its preprocessing fails its
self test; an out-of-range request is logged, and rejected when configured."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

from gateway.core.states import VersionState
from gateway.sinks.logging import add_request_id
from tests.support import outputs_of, predict_request


def test_raw_requests_get_training_predictions(seed_bundle, gateway_factory):
    gw = gateway_factory({"models": [{"name": "fraud", "base_path": str(seed_bundle["with"])}]})
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    raw = np.array([[1.0], [1.7], [2.2], [2.9]], np.float32)
    expected = seed_bundle["model"].predict(np.asarray(seed_bundle["norm"](raw)), verbose=0)
    got = outputs_of(stub.Predict(predict_request("fraud", {"x": raw}), timeout=10))
    (name,) = got
    np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5)
    # float64 raw values are accepted too (raw features are checked by kind, not width)
    got64 = outputs_of(stub.Predict(predict_request("fraud", {"x": raw.astype(np.float64)})))
    np.testing.assert_allclose(got64[name], expected, rtol=1e-4, atol=1e-5)
    # without preprocessing the model would answer something else entirely
    assert not np.allclose(seed_bundle["model"].predict(raw, verbose=0), expected, atol=0.1)

    # GetModelMetadata advertises the raw-feature signature
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "fraud"
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(req).metadata["signature_def"].Unpack(sigmap)
    x_info = sigmap.signature_def["serving_default"].inputs["x"]
    assert x_info.name == "x" and [d.size for d in x_info.tensor_shape.dim] == [-1, 1]


def test_export_without_preprocessing_fails_its_self_test(seed_bundle, gateway_factory):
    gw = gateway_factory({"models": [{"name": "fraud", "base_path": str(seed_bundle["without"])}]})
    status = gw.monitor.wait_for("fraud", 1, {VersionState.FAILED})
    assert status.error.startswith("self test: output ")
    assert "preprocessing missing from the bundle" in status.error


def test_out_of_range_is_logged_then_rejected_when_configured(seed_bundle, gateway_factory):
    from structlog.testing import capture_logs

    gw = gateway_factory({"models": [{"name": "fraud", "base_path": str(seed_bundle["with"])}]})
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)

    with capture_logs(processors=[add_request_id]) as logs:
        resp, call = stub.Predict.with_call(
            predict_request("fraud", {"x": np.array([[400.0]], np.float32)})
        )
    assert resp.outputs  # logged, still answered
    records = [r for r in logs if r["event"] == "feature_mismatch"]
    assert len(records) == 1
    (mismatch,) = [m for m in records[0]["mismatches"] if m["kind"] == "out_of_range"]
    assert mismatch["feature"] == "x" and mismatch["value"] == 400.0 and mismatch["action"] == "log"
    assert records[0]["request_id"] == dict(call.trailing_metadata())["x-request-id"]
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{gw.gateway.metrics_port}/metrics")
        .read()
        .decode()
    )
    assert (
        'gateway_feature_mismatches_total{action="log",feature="x",kind="out_of_range",model="fraud",version="1"} 1.0'
        in metrics
    )

    strict = gateway_factory(
        {
            "models": [
                {
                    "name": "fraud",
                    "base_path": str(seed_bundle["with"]),
                    "feature_checks": {"actions": {"out_of_range": "reject"}},
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(strict.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(predict_request("fraud", {"x": np.array([[400.0]], np.float32)}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "feature 'x'" in details and "400" in details and "training range" in details, details
    # an in-range request still passes
    stub.Predict(predict_request("fraud", {"x": np.array([[2.0]], np.float32)}))


def test_sensitive_feature_values_never_reach_logs_errors_or_metrics(seed_bundle, gateway_factory):
    import json

    from structlog.testing import capture_logs

    secret = 31337.5  # exact in float32; its digits must appear nowhere below
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "fraud",
                    "base_path": str(seed_bundle["with"]),
                    "feature_checks": {"sensitive_features": ["x"]},
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    with capture_logs(processors=[add_request_id]) as logs:
        stub.Predict(predict_request("fraud", {"x": np.array([[secret]], np.float32)}))
    (record,) = [r for r in logs if r["event"] == "feature_mismatch"]
    kinds = {m["kind"] for m in record["mismatches"]}
    assert kinds == {"out_of_range", "z_score"}
    assert all(m["value"] is None and m["feature"] == "x" for m in record["mismatches"])
    record.pop("request_id", None)  # random hex, could contain any digits
    assert "31337" not in json.dumps(record, default=str)
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{gw.gateway.metrics_port}/metrics")
        .read()
        .decode()
    )
    lines = [line for line in metrics.splitlines() if 'feature="x"' in line]
    assert any('kind="out_of_range"' in line for line in lines)
    assert not any("31337" in line for line in lines)

    strict = gateway_factory(
        {
            "models": [
                {
                    "name": "fraud",
                    "base_path": str(seed_bundle["with"]),
                    "feature_checks": {
                        "sensitive_features": ["x"],
                        "actions": {"out_of_range": "reject"},
                    },
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(strict.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(predict_request("fraud", {"x": np.array([[secret]], np.float32)}))
    details = err.value.details()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "feature 'x'" in details and "training range" in details and "31337" not in details


@pytest.mark.parametrize(
    ("action", "outcome"), [("ignore", "ok"), ("log", "ok"), ("reject", "INVALID_ARGUMENT")]
)
def test_unexpected_feature_follows_its_action(action, outcome, seed_bundle, gateway_factory):
    from structlog.testing import capture_logs

    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "fraud",
                    "base_path": str(seed_bundle["with"]),
                    "feature_checks": {"actions": {"unexpected_feature": action}},
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    x = np.array([[2.0]], np.float32)
    request = predict_request("fraud", {"x": x, "extra": np.array([[1.0]], np.float32)})
    with capture_logs() as logs:
        if outcome == "ok":
            got = outputs_of(stub.Predict(request))
            want = outputs_of(stub.Predict(predict_request("fraud", {"x": x})))
            assert got.keys() == want.keys()
            for k in got:
                np.testing.assert_array_equal(got[k], want[k])
        else:
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(request)
            assert err.value.code().name == outcome and "'extra'" in err.value.details()
    logged = [
        m
        for r in logs
        if r["event"] == "feature_mismatch"
        for m in r["mismatches"]
        if m["kind"] == "unexpected_feature"
    ]
    assert (len(logged) == 0) == (action == "ignore")
