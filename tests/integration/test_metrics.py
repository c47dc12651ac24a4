"""Prometheus metrics on metrics_port, labelled by model and version."""

from __future__ import annotations

import shutil
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.core.states import VersionState
from tests.support import predict_request


def test_metrics_endpoint_has_request_latency_batch_and_load_failure_series(
    make_repo, models_dir, gateway_factory
):
    base = make_repo("m", {1: "keras_a"})
    gw = gateway_factory(
        {"models": [{"name": "m", "base_path": str(base), "version_policy": {"all": {}}}]}
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    for _ in range(3):
        stub.Predict(predict_request("m", {"x": np.ones((1, 4), np.float32)}))
    with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request("m", {"x": np.ones((1, 5), np.float32)}))
    shutil.copytree(models_dir / "keras_b", base / "2")
    (base / "2" / "saved_model.pb").write_bytes(b"garbage")
    gw.monitor.wait_for("m", 2, {VersionState.FAILED})
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{gw.gateway.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    assert (
        'gateway_requests_total{code="OK",method="Predict",model="m",protocol="tfs_grpc",version="1"} 3.0'
        in text
    )
    assert (
        'gateway_requests_total{code="INVALID_ARGUMENT",method="Predict",model="m",protocol="tfs_grpc",version=""} 1.0'
        in text
    )
    assert (
        'gateway_request_latency_seconds_count{method="Predict",model="m",protocol="tfs_grpc",version="1"} 3.0'
        in text
    )
    assert 'gateway_batch_size_count{model="m",version="1"}' in text
    assert 'gateway_version_load_failures_total{model="m",version="2"} 1.0' in text
    assert 'gateway_version_state{model="m",state="FAILED",version="2"} 1.0' in text
