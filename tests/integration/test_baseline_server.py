"""Integration test: the naive baseline server against a tiny SavedModel, then the load
generator (2 client processes) against the baseline server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
B = np.array([1.0, -1.0, 0.5], dtype=np.float32)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(W)
            self.b = tf.Variable(B)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"y": tf.matmul(x, self.w) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def double(self, x: Any) -> Any:
            return {"z": x * 2.0}

    module = Affine()
    path = tmp_path_factory.mktemp("models") / "demo" / "1"
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve, "double": module.double}
    )
    return path


@pytest.fixture(scope="module")
def baseline_target(saved_model: Path) -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [
        sys.executable,
        "-m",
        "loadtest.baseline_server",
        "--model-dir",
        str(saved_model),
        "--model-name",
        "demo",
        "--version",
        "1",
        "--port",
        "0",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    # The server prints one line once it is ready; if it dies, readline() returns "".
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        pytest.fail(f"baseline server did not start: {line!r} (exit {proc.poll()})")
    target = line.removeprefix("listening on ")
    assert target.startswith("127.0.0.1:")
    try:
        yield target
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("baseline server did not stop on SIGTERM")
        assert code == 0


def _predict(target: str, request: Any) -> Any:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=30)


def _request(signature: str = "", version: int | None = None) -> tuple[Any, np.ndarray]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return request, x


def test_predict_matches_in_process_call(saved_model: Path, baseline_target: str) -> None:
    import tensorflow as tf

    request, x = _request()
    response = _predict(baseline_target, request)
    got = tf.make_ndarray(response.outputs["y"])
    loaded = tf.saved_model.load(str(saved_model))
    expected = loaded.signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, x @ W + B, rtol=1e-5)
    assert response.model_spec.name == "demo"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_named_signature_and_errors(baseline_target: str) -> None:
    import grpc
    import tensorflow as tf

    request, x = _request(signature="double", version=1)
    response = _predict(baseline_target, request)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["z"]), x * 2.0)
    assert response.model_spec.signature_name == "double"

    bad_sig, _ = _request(signature="nope")
    with pytest.raises(grpc.RpcError) as err:
        _predict(baseline_target, bad_sig)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    bad_version, _ = _request(version=7)
    with pytest.raises(grpc.RpcError) as err:
        _predict(baseline_target, bad_version)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_loadgen_against_baseline(baseline_target: str, tmp_path: Path) -> None:
    from loadtest.loadgen import LoadResult, LoadSpec, run_load

    spec = LoadSpec(
        target=baseline_target,
        model="demo",
        version=1,
        concurrency=2,
        procs=2,
        duration=2.0,
        warmup=0.5,
    )
    result = run_load(spec)
    assert result.ok > 0
    assert result.errors == {}
    assert result.sent == result.ok
    assert result.latency.count == result.ok
    assert result.throughput_rps > 0
    assert 0 < result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms
    out = tmp_path / "r.json"
    result.write_json(out)
    assert LoadResult.read_json(out) == result
