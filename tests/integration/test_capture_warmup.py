"""Capture -> warmup: the PredictionLog file the shadow mirror writes for diverged
requests is accepted, as is, as a version's ``assets.extra/tf_serving_warmup_requests``.

The capture is produced by a real gateway shadowing v1 (keras_a) with v2 (keras_b),
every compared request captured (``capture.sample_rate: 1``), so the records are
exactly what `gateway.serving.mirror` and `gateway.sinks.capture` write; the file
is then dropped into a fresh version directory of another model and that version
must load, report every record as a warmup record, and serve.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import wait_compared

N_REQUESTS = 9


@pytest.fixture
def captured(
    make_repo: Callable[..., Path],
    gateway_factory: Callable[[dict[str, Any]], Any],
    tmp_path: Path,
) -> tuple[Path, list[np.ndarray]]:
    """A capture file written by a shadowing gateway, and the inputs sent, in order."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tests.support import predict_request

    base = make_repo("m", {1: "keras_a", 2: "keras_b"})
    capture = tmp_path / "capture" / "m.tfrecord"
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "m",
                    "base_path": str(base),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                    "primary": "stable",
                    "shadows": [{"version": "canary", "concurrency": 1, "timeout_ms": 30000}],
                    "capture": {"path": str(capture), "sample_rate": 1.0},
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    rng = np.random.default_rng(5)
    sent = []
    for i in range(N_REQUESTS):
        x = rng.normal(scale=2.0, size=(1 + i % 3, 4)).astype(np.float32)
        resp = stub.Predict(
            predict_request("m", {"x": x}), metadata=[("x-request-id", f"cap-{i}")], timeout=30
        )
        assert resp.model_spec.version.value == 1
        sent.append(x)
    (lane,) = wait_compared(gw, "m", N_REQUESTS)
    assert lane.compared == N_REQUESTS
    writer = gw.gateway.mirror._capture["m"]
    assert writer.flush(10)
    assert writer.written == N_REQUESTS
    return capture, sent


def test_capture_records_are_the_mirrored_requests(
    captured: tuple[Path, list[np.ndarray]],
) -> None:
    import tensorflow as tf

    from gateway.sinks.capture import read_prediction_logs

    capture, sent = captured
    logs = list(read_prediction_logs(capture))
    assert len(logs) == N_REQUESTS
    # TensorFlow's own reader agrees (CRCs, framing)
    assert sum(1 for _ in tf.data.TFRecordDataset(str(capture))) == N_REQUESTS
    got = sorted(
        (tf.make_ndarray(log.predict_log.request.inputs["x"]) for log in logs),
        key=lambda a: a.tobytes(),
    )
    want = sorted(sent, key=lambda a: a.tobytes())  # mirror workers may finish out of order
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request, response = log.predict_log.request, log.predict_log.response
        assert request.model_spec.name == "m"
        assert request.model_spec.signature_name == "serving_default"
        assert response.model_spec.version.value == 1  # the primary's answer
        rows = tf.make_ndarray(request.inputs["x"]).shape[0]
        assert tf.make_ndarray(response.outputs["output_0"]).shape == (rows, 3)


def test_capture_is_accepted_as_a_warmup_file(
    captured: tuple[Path, list[np.ndarray]],
    make_repo: Callable[..., Path],
    gateway_factory: Callable[[dict[str, Any]], Any],
) -> None:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
    from gateway.core.states import VersionState
    from gateway.lifecycle.loader import WARMUP_FILE
    from tests.support import outputs_of, predict_request

    capture, _ = captured
    repo = make_repo("warm", {1: "keras_b"})
    (repo / "1" / WARMUP_FILE).parent.mkdir(exist_ok=True)
    shutil.copyfile(capture, repo / "1" / WARMUP_FILE)
    gw = gateway_factory({"models": [{"name": "warm", "base_path": str(repo)}]})
    status = gw.monitor.get("warm", 1)
    assert status is not None and status.state is VersionState.AVAILABLE, status
    admin = admin_pb2_grpc.AdminServiceStub(gw.channel)
    (version,) = (
        admin.GetStatus(admin_pb2.GetStatusRequest(model="warm"), timeout=10).models[0].versions
    )
    assert version.warmup_records == N_REQUESTS
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    out = outputs_of(stub.Predict(predict_request("warm", {"x": np.ones((2, 4), np.float32)})))
    assert out["output_0"].shape == (2, 3)


def test_warmup_really_runs_the_captured_records(
    captured: tuple[Path, list[np.ndarray]], models_dir: Path, tmp_path: Path
) -> None:
    """Control: the same file with one record's input reshaped makes the load fail, naming
    the record, so the acceptance above is not vacuous."""
    import tensorflow as tf

    from gateway.core.errors import VersionLoadError
    from gateway.lifecycle.loader import WARMUP_FILE, load_saved_model, warmup
    from gateway.sinks.capture import frame_record, read_prediction_logs
    from gateway.transport.warmup import decode_warmup_record

    capture, _ = captured
    version = tmp_path / "v1"
    shutil.copytree(models_dir / "keras_b", version)
    (version / WARMUP_FILE).parent.mkdir(exist_ok=True)
    shutil.copyfile(capture, version / WARMUP_FILE)
    loaded = load_saved_model("warm", 1, version)
    assert warmup(loaded, decode_warmup_record) == N_REQUESTS

    logs = list(read_prediction_logs(capture))
    bad = logs[4]
    bad.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 5), np.float32)))
    (version / WARMUP_FILE).write_bytes(
        b"".join(frame_record(log.SerializeToString()) for log in logs)
    )
    with pytest.raises(VersionLoadError, match=r"tf_serving_warmup_requests: record 4 failed"):
        warmup(loaded, decode_warmup_record)


def test_capture_with_a_logged_unexpected_feature_is_a_valid_warmup_file(
    seed_bundle: dict[str, Any],
    tmp_path: Path,
    gateway_factory: Callable[[dict[str, Any]], Any],
) -> None:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from gateway.bundle.format import MANIFEST, build_manifest
    from gateway.core.states import VersionState
    from gateway.lifecycle.loader import WARMUP_FILE
    from tests.support import predict_request

    base = tmp_path / "fraud"
    for version in (1, 2):
        shutil.copytree(seed_bundle["with"] / "1", base / str(version))
    capture = tmp_path / "capture.tfrecord"
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "fraud",
                    "base_path": str(base),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                    "primary": "stable",
                    "shadows": [{"version": "canary", "timeout_ms": 30000}],
                    "capture": {"path": str(capture), "sample_rate": 1.0},
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    inputs = {"x": np.array([[2.0]], np.float32), "extra": np.array([[1.0]], np.float32)}
    assert stub.Predict(predict_request("fraud", inputs), timeout=30).model_spec.version.value == 1
    wait_compared(gw, "fraud", 1)
    assert gw.gateway.mirror._capture["fraud"].flush(10)

    # A bundle's files are covered by its manifest: rebuild it after adding the warmup file.
    version_dir = tmp_path / "warm" / "1"
    shutil.copytree(seed_bundle["with"] / "1", version_dir)
    shutil.copyfile(capture, version_dir / WARMUP_FILE)
    (version_dir / MANIFEST).write_bytes(
        build_manifest(version_dir, "training").SerializeToString()
    )
    gw2 = gateway_factory({"models": [{"name": "fraud", "base_path": str(version_dir.parent)}]})
    status = gw2.monitor.get("fraud", 1)
    assert status is not None and status.state is VersionState.AVAILABLE, status.error
