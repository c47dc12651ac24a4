"""The in-flight limits: with the model call held, requests past
`server.max_inflight_requests` are refused at once with RESOURCE_EXHAUSTED and a retry
hint (gRPC and REST), counted, and every admitted request is answered once the model
call is let go."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.workers import free_port
from tests.support import GatewayThread, outputs_of, predict_request, version_hook, wait_until

X = np.ones((1, 4), np.float32)
LIMIT = 3


def holding_hook(release: threading.Event):
    """Version 1's model calls wait for `release` (a held model: requests pile up); the
    event starts set, so loading and warming up pass."""

    def wrap(run):
        def held(inputs):
            if not release.wait(60):
                raise RuntimeError("the test never released the model call")
            return run(inputs)

        return held

    return version_hook(1, wrap)


@pytest.fixture
def held(models_dir, tmp_path):
    shutil.copytree(models_dir / "keras_a", tmp_path / "repo" / "m" / "1")
    release = threading.Event()
    release.set()
    cfg = {
        "server": {
            "max_inflight_requests": LIMIT,
            "rest_api_port": free_port(),
        },
        "models": [{"name": "m", "base_path": str(tmp_path / "repo" / "m")}],
    }
    with GatewayThread(cfg, tmp_path, hooks=[holding_hook(release)]) as gw:
        yield gw, release
        release.set()


def test_requests_past_the_limit_are_shed_with_a_retry_hint(held):
    gw, release = held
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    admission = gw.gateway.plane._admission
    release.clear()
    with ThreadPoolExecutor(LIMIT) as pool:
        admitted = [
            pool.submit(stub.Predict, predict_request("m", {"x": X}), timeout=60)
            for _ in range(LIMIT)
        ]
        wait_until(lambda: admission.requests == LIMIT, 30, "the limit reached")

        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(predict_request("m", {"x": X}), timeout=10)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server.max_inflight_requests" in err.value.details()
        assert dict(err.value.trailing_metadata())["grpc-retry-pushback-ms"] == "100"

        conn = http.client.HTTPConnection("127.0.0.1", gw.gateway.rest_port, timeout=10)
        body = json.dumps({"instances": X.tolist()})
        conn.request("POST", "/v1/models/m:predict", body)
        reply = conn.getresponse()
        assert reply.status == 429
        assert reply.getheader("Retry-After") == "1"
        assert "server.max_inflight_requests" in json.loads(reply.read())["error"]

        release.set()
        answers = [f.result(60) for f in admitted]
    assert all(outputs_of(a) for a in answers)
    assert admission.requests == 0 and admission.bytes == 0
    reg = gw.gateway.metrics.registry
    assert reg.get_sample_value("gateway_requests_shed_total", {"limit": "requests"}) == 2.0
    assert reg.get_sample_value("gateway_inflight_requests") == 0.0
    # and the next request is served
    assert outputs_of(stub.Predict(predict_request("m", {"x": X}), timeout=30))
