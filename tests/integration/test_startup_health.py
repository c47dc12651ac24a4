"""Health says SERVING for a model only once its configured primary and labels resolve:
a client that waits for SERVING after a (re)start never gets NOT_FOUND, even while a
newer version loads first and the primary is still loading."""

from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.workers import free_port
from tests.support import GatewayThread, predict_request, version_hook

X = np.ones((1, 4), np.float32)


def slow_load(version: int, seconds: float):
    """`version` takes `seconds` longer to load (a big artifact)."""

    def wrap(run):
        return run

    inner = version_hook(version, wrap)

    def hook(loaded):
        if loaded.version == version:
            time.sleep(seconds)  # time is the behaviour: a slow load
        return inner(loaded)

    return hook


@pytest.mark.parametrize(
    ("load_before_serving", "primary"), [(True, "stable"), (False, "stable"), (False, None)]
)
def test_no_not_found_after_health_first_says_serving(
    models_dir, tmp_path, load_before_serving, primary
):
    base = tmp_path / "repo" / "m"
    shutil.copytree(models_dir / "keras_a", base / "1")
    shutil.copytree(models_dir / "keras_b", base / "2")
    port = free_port()
    cfg = {
        "server": {"port": port},
        "lifecycle": {"load_before_serving": load_before_serving},
        "models": [
            {
                "name": "m",
                "base_path": str(base),
                "version_policy": {"all": {}},
                "version_labels": {"stable": 1, "canary": 2},
            }
            | ({"primary": primary} if primary else {})
        ],
    }
    gw = GatewayThread(cfg, tmp_path, hooks=[slow_load(1, 1.5)])
    entered = threading.Event()
    failure: list[BaseException] = []

    def enter() -> None:
        try:
            gw.__enter__()
        except BaseException as exc:  # reported by the test thread below
            failure.append(exc)
        finally:
            entered.set()

    threading.Thread(target=enter, daemon=True).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            seen = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service="m"), timeout=2)
                    seen.append(status.status)
                    if status.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError as exc:
                    seen.append(exc.code())
                time.sleep(0.005)  # the client's polling period
            else:
                raise AssertionError(f"model health never SERVING; saw {seen[-5:]}")
            response = stub.Predict(predict_request("m", {"x": X}), timeout=30)
            assert response.model_spec.version.value == (1 if primary else 2)
            for label, version in (("stable", 1), ("canary", 2)):
                labelled = stub.Predict(predict_request("m", {"x": X}, label=label), timeout=30)
                assert labelled.model_spec.version.value == version
            if not load_before_serving:
                # the port was open while loading: health said NOT_SERVING first
                assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
        assert entered.wait(120) and not failure, failure
    finally:
        entered.wait(120)
        if not failure:
            gw.__exit__(None, None, None)
