"""`gateway demo`: build a small model repository, serve it, send real gRPC traffic.

Runs the gateway as a subprocess exactly as `gateway serve` would, talks to it
with the stock TF Serving stubs, and shows: versions and labels, batching under
concurrent load, a corrupted version failing while the good one keeps serving,
a bad request getting a clear error, and a clean SIGTERM shutdown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(workdir: Path) -> int:
    """Run the whole demo in `workdir` (recreated); returns an exit code."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    from gateway.samples import build_keras_classifier, write_warmup

    shutil.rmtree(workdir, ignore_errors=True)
    repo = workdir / "models" / "demo"
    _say("building the demo repository (two versions of a small Keras classifier)")
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for version, seed in ((1, 1), (2, 2)):
        path = build_keras_classifier(repo / str(version), seed=seed)
        warm = predict_pb2.PredictRequest()
        warm.model_spec.name = "demo"
        warm.inputs["x"].CopyFrom(tf.make_tensor_proto(x[:1]))
        write_warmup(path, [warm])
        print(f"  {path}")
    port, metrics_port = _free_port(), _free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port},
        "lifecycle": {"poll_interval_seconds": 0.5},
        "logging": {"file": "gateway.log"},
        "models": [
            {
                "name": "demo",
                "base_path": "models/demo",
                "version_policy": {"all": {}},
                "version_labels": {"stable": 1, "canary": 2},
                "batching": {"max_batch_size": 64, "batch_timeout_micros": 0},
            }
        ],
    }
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _say(f"starting: gateway serve --config {config_path}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        assert proc.stdout is not None
        print("  " + proc.stdout.readline().strip())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        status_req = get_model_status_pb2.GetModelStatusRequest()
        status_req.model_spec.name = "demo"
        _wait(lambda: len(_available(models, status_req)) == 2, 120)
        print(f"  available versions: {_available(models, status_req)}")

        def predict(label: str = "", version: int = 0, rows: np.ndarray = x) -> Any:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "demo"
            if label:
                req.model_spec.version_label = label
            if version:
                req.model_spec.version.value = version
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(rows))
            return stub.Predict(req, timeout=10)

        _say("Predict with the stock tensorflow_serving PredictionServiceStub")
        for label in ("", "stable", "canary"):
            resp = predict(label)
            probs = tf.make_ndarray(resp.outputs["output_0"])
            print(
                f"  label={label or '(none: newest)':<16} answered by version "
                f"{resp.model_spec.version.value}: first row {np.round(probs[0], 4).tolist()}"
            )

        _say("400 concurrent single-row requests (dynamic batching merges them)")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda _: predict("stable", rows=x[:1]), range(400)))
        elapsed = time.perf_counter() - t0
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        calls = _metric(metrics, 'gateway_batch_requests_count{model="demo",version="1"}')
        merged = _metric(metrics, 'gateway_batch_requests_sum{model="demo",version="1"}')
        print(
            f"  {400 / elapsed:.0f} requests/s; version 1 ran {merged:.0f} requests in "
            f"{calls:.0f} model calls (avg {merged / max(calls, 1):.1f} per call)"
        )

        _say("a bad request gets a clear error")
        try:
            predict(rows=np.ones((1, 5), np.float32))
        except grpc.RpcError as exc:
            print(f"  {exc.code().name}: {exc.details()}")
        try:
            predict(version=7)
        except grpc.RpcError as exc:
            print(f"  {exc.code().name}: {exc.details()}")

        _say(
            "a corrupted version 3 appears (truncated variables): it fails, version 2 keeps serving"
        )
        broken = repo / "3"
        shutil.copytree(repo / "2", broken)
        data = next((broken / "variables").glob("variables.data-*"))
        data.write_bytes(data.read_bytes()[:64])
        _wait(lambda: _state(models, status_req, 3)[1] != "", 60)
        state, error = _state(models, status_req, 3)
        print(f"  version 3: {state}; reason: {error}")
        resp = predict()
        print(
            "  a request without a version is still answered by version "
            f"{resp.model_spec.version.value}"
        )

        _say("stopping with SIGTERM (in-flight requests finish, logs flushed)")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        print(f"  gateway exited with code {code}")
        log_lines = (workdir / "gateway.log").read_text().splitlines()
        print(f"  {len(log_lines)} JSON log lines in {workdir / 'gateway.log'}; the last three:")
        for line in log_lines[-3:]:
            print(f"    {line[:160]}")
        return 0 if code == 0 else 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _available(stub: Any, request: Any) -> list[int]:
    try:
        reply = stub.GetModelStatus(request, timeout=5)
    except Exception:
        return []
    return [s.version for s in reply.model_version_status if s.state == 30]


def _state(stub: Any, request: Any, version: int) -> tuple[str, str]:
    from tensorflow_serving.apis import get_model_status_pb2

    for s in stub.GetModelStatus(request, timeout=5).model_version_status:
        if s.version == version:
            name = get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
            return name, s.status.error_message
    return "", ""


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    return 0.0


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError("demo: the gateway did not reach the expected state in time")
