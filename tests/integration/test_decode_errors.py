"""A request whose bytes do not parse as the RPC's message gets INVALID_ARGUMENT naming
the message type and the parse error, on every unary service of the gRPC port, is
counted, and leaves the server answering."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.support import GatewayThread, outputs_of, predict_request

X = np.ones((2, 4), np.float32)

METHODS = {
    "/tensorflow.serving.PredictionService/Predict": "tensorflow.serving.PredictRequest",
    "/tensorflow.serving.PredictionService/Classify": "tensorflow.serving.ClassificationRequest",
    "/tensorflow.serving.PredictionService/Regress": "tensorflow.serving.RegressionRequest",
    "/tensorflow.serving.PredictionService/MultiInference": (
        "tensorflow.serving.MultiInferenceRequest"
    ),
    "/tensorflow.serving.PredictionService/GetModelMetadata": (
        "tensorflow.serving.GetModelMetadataRequest"
    ),
    "/tensorflow.serving.ModelService/GetModelStatus": "tensorflow.serving.GetModelStatusRequest",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest": (
        "tensorflow.serving.ReloadConfigRequest"
    ),
    "/gateway.v1.AdminService/GetStatus": "gateway.v1.GetStatusRequest",
    "/gateway.v1.AdminService/UpdateRollout": "gateway.v1.UpdateRolloutRequest",
    "/inference.GRPCInferenceService/ModelInfer": "inference.ModelInferRequest",
    "/inference.GRPCInferenceService/ModelMetadata": "inference.ModelMetadataRequest",
    "/grpc.health.v1.Health/Check": "grpc.health.v1.HealthCheckRequest",
}

BAD = {
    "random bytes": b"\xff\xff\xff\xff\x0f",
    "truncated length": b"\x0a\x80\x01abc",
    "deep groups": b"\xa3\x06" * 200 + b"\xa4\x06" * 200,  # field 100, start/end group
}


@pytest.fixture(scope="module")
def gw(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    shutil.copytree(models_dir / "keras_a", root / "repo" / "keras" / "1")
    cfg = {"models": [{"name": "keras", "base_path": str(root / "repo" / "keras")}]}
    with GatewayThread(cfg, root) as g:
        yield g


def raw_call(gw: GatewayThread, method: str, payload: bytes) -> grpc.RpcError:
    call = gw.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        call(payload, timeout=10)
    return err.value


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", sorted(BAD))
def test_unparseable_request_is_invalid_argument_naming_the_type(gw, method, case):
    err = raw_call(gw, method, BAD[case])
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, err.details())
    assert f"could not parse the request as {METHODS[method]}" in err.details()
    assert dict(err.trailing_metadata() or ()).get("x-request-id")


def test_invalid_utf8_in_the_model_name_is_invalid_argument(gw):
    req = predict_request("keras", {"x": X}, signature="serving_default")
    req.model_spec.name = "kxras"
    payload = req.SerializeToString().replace(b"kxras", b"k\xffras")
    err = raw_call(gw, "/tensorflow.serving.PredictionService/Predict", payload)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in err.details()


def test_decode_errors_are_counted_and_the_server_still_answers(gw):
    reg = gw.gateway.metrics.registry
    labels = {"protocol": "tfs_grpc", "method": "Predict"}
    before = reg.get_sample_value("gateway_request_decode_errors_total", labels) or 0.0
    raw_call(gw, "/tensorflow.serving.PredictionService/Predict", BAD["random bytes"])
    after = reg.get_sample_value("gateway_request_decode_errors_total", labels)
    assert after == before + 1
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    response = stub.Predict(
        predict_request("keras", {"x": X}, signature="serving_default"), timeout=30
    )
    assert isinstance(response, predict_pb2.PredictResponse)
    assert next(iter(outputs_of(response).values())).shape[0] == 2
    assert reg.get_sample_value("gateway_internal_errors_total", labels) is None
