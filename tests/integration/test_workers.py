"""`gateway serve --workers 2`: two processes share the port (SO_REUSEPORT) and both answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import yaml
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.workers import free_port
from tests.support import in_process, outputs_of, predict_request, wait_until


def _requests_served(metrics_port: int) -> float:
    try:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    except OSError:
        return -1.0
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('gateway_requests_total{code="OK",method="Predict"')
    )


def test_two_workers_share_the_port_and_both_serve(make_repo, tmp_path):
    base = make_repo("m", {1: "keras_a"})
    port, metrics_port = free_port(), free_port()
    while metrics_port + 1 == port:
        metrics_port = free_port()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {
                    "host": "127.0.0.1",
                    "port": port,
                    "metrics_port": metrics_port,
                    "workers": 2,
                    "tf_intra_op_threads": 1,
                },
                "logging": {"file": "gw.log"},
                "models": [{"name": "m", "base_path": str(base)}],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"listening on 127.0.0.1:{port} (2 workers)")
        x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
        expected = in_process(base / "1", "serving_default", {"x": x})["output_0"]
        last_error: list[str] = ["none"]

        def both_answered() -> bool:
            if min(_requests_served(metrics_port), _requests_served(metrics_port + 1)) > 0:
                return True
            # a new channel (connection) per request: the kernel spreads connections over workers
            with grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                try:
                    out = outputs_of(stub.Predict(predict_request("m", {"x": x}), timeout=10))[
                        "output_0"
                    ]
                except grpc.RpcError as exc:
                    # a worker still loading its model copy
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND), (
                        exc
                    )
                    last_error[0] = f"{exc.code().name}: {exc.details()}"
                    return False
                np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
            return False

        wait_until(
            both_answered,
            120,
            "both workers to answer a Predict",
            seen=lambda: (
                f"OK Predicts per worker: {_requests_served(metrics_port)}, "
                f"{_requests_served(metrics_port + 1)}; last error {last_error[0]}"
            ),
            interval=0.05,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
