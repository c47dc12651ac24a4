"""Shadow traffic end to end: per-request divergence logged and reported, identical copies
show zero divergence, non-deterministic primaries are detected, slow or failing shadows
never touch the primary, and logging failures never stop serving."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.report.cli import main as report_main
from gateway.workers import free_port
from tests.support import (
    outputs_of,
    predict_request,
    slow_hook,
    wait_compared,
    wait_serving,
    wait_until,
)


def _repo(tmp_path: Path, versions: dict[int, Path]) -> Path:
    base = tmp_path / "repo" / "m"
    for version, src in versions.items():
        shutil.copytree(src, base / str(version))
    return base


def _records(path: Path, comparison: str | None = None) -> list[dict]:
    out = []
    for file in sorted(path.parent.glob(path.name + "*")):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            if comparison is None or record.get("comparison") == comparison:
                out.append(record)
    return out


def _flush(gw) -> None:
    log = gw.gateway.mirror._log
    assert log is not None and log.flush(10)


def test_seed_scenario_divergence_logged_and_reported(
    shadow_models, tmp_path, gateway_factory, capsys
):
    base = _repo(tmp_path, {1: shadow_models["a"], 2: shadow_models["b"], 3: shadow_models["a"]})
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "m",
                    "base_path": str(base),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2, "copy": 3},
                    "primary": "stable",
                    "shadows": [{"version": "canary"}, {"version": "copy"}],
                    "divergence": {"output_0": {"kind": "probabilities", "max_abs": 0.05}},
                    "noise_sample_rate": 1.0,
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    x = shadow_models["x"][:150]
    for i in range(150):
        resp = stub.Predict(
            predict_request("m", {"x": x[i : i + 1]}), metadata=[("x-request-id", f"req-{i}")]
        )
        assert resp.model_spec.version.value == 1
    lanes = {lane.lane: lane for lane in wait_compared(gw, "m", 150)}
    canary, copy, noise = lanes["shadow:canary"], lanes["shadow:copy"], lanes["noise"]
    assert canary.compared == 150 and canary.shadow_version == 2
    assert copy.compared == 150 and copy.diverged == 0 and copy.max_abs["output_0"] == 0.0
    assert noise.compared == 150 and noise.deterministic and noise.diverged == 0
    assert 0 < canary.diverged <= 150 and canary.max_abs["output_0"] > 0.0
    _flush(gw)
    records = _records(gw.divergence_log, "shadow")
    by_version = {v: [r for r in records if r["shadow_version"] == v] for v in (2, 3)}
    assert len(by_version[2]) == 150 and len(by_version[3]) == 150
    r = by_version[2][0]
    assert (
        r["schema"] == "gateway.divergence/v1" and r["model"] == "m" and r["primary_version"] == 1
    )
    assert r["request_id"].startswith("req-") and r["input_digest"].startswith("sha256:")
    assert (
        set(r["latency_ms"]) == {"primary", "shadow"}
        and r["outputs"]["output_0"]["kind"] == "probabilities"
    )
    # the per-request records equal what the model versions answer in-process
    from tests.support import in_process

    ref1 = in_process(base / "1", "serving_default", {"x": x})["output_0"]
    ref2 = in_process(base / "2", "serving_default", {"x": x})["output_0"]
    diffs = {
        int(rec["request_id"][4:]): rec["outputs"]["output_0"]["max_abs"] for rec in by_version[2]
    }
    expected = np.abs(ref1 - ref2).max(axis=1)
    np.testing.assert_allclose([diffs[i] for i in range(150)], expected, rtol=1e-4, atol=1e-6)
    flips = ref1.argmax(axis=1) != ref2.argmax(axis=1)
    expected_diverged = (expected > 0.05) | flips
    verdicts = {int(rec["request_id"][4:]): rec["diverged"] for rec in by_version[2]}
    clear = np.abs(expected - 0.05) > 1e-5  # skip rows within float noise of the threshold
    assert [verdicts[i] for i in range(150) if clear[i]] == expected_diverged[clear].tolist()
    assert canary.diverged == int(expected_diverged.sum())

    # the review tool summarizes the same numbers
    capsys.readouterr()
    code = report_main([str(gw.divergence_log), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    groups = {(g["comparison"], g["shadow_version"]): g for g in report["groups"]}
    assert groups[("shadow", 2)]["requests"] == 150
    assert groups[("shadow", 2)]["diverged"] == canary.diverged
    assert groups[("shadow", 3)]["diverged"] == 0
    assert report_main([str(gw.divergence_log), "--fail-if", "divergence_rate>0.99"]) == 0
    if canary.diverged:
        assert report_main([str(gw.divergence_log), "--fail-if", "divergence_rate>0"]) == 1


def test_dropout_at_inference_is_reported_non_deterministic(
    shadow_models, tmp_path, gateway_factory
):
    from structlog.testing import capture_logs

    base = _repo(tmp_path, {1: shadow_models["dropout"]})
    with capture_logs() as logs:
        gw = gateway_factory(
            {"models": [{"name": "m", "base_path": str(base), "noise_sample_rate": 1.0}]}
        )
        stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
        for i in range(30):
            stub.Predict(predict_request("m", {"x": shadow_models["x"][i : i + 1]}))
        (noise,) = wait_compared(gw, "m", 30)
    assert noise.lane == "noise" and not noise.deterministic and noise.diverged > 0
    events = [r for r in logs if r["event"] == "primary_nondeterministic"]
    assert len(events) == 1 and events[0]["model"] == "m"
    reg = gw.gateway.metrics.registry
    assert (
        reg.get_sample_value("gateway_noise_floor_deterministic", {"model": "m", "version": "1"})
        == 0.0
    )


def _raising_model(path: Path) -> Path:
    import tensorflow as tf

    class Raising(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            tf.debugging.assert_less(tf.reduce_sum(x), -1e30, message="this model fails every call")
            return {"output_0": tf.nn.softmax(tf.concat([x[:, :3]], axis=1))}

    module = Raising()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def _latencies(stub, x, n=120):
    out = []
    for i in range(n):
        t = time.perf_counter()
        stub.Predict(predict_request("m", {"x": x[i % len(x) : i % len(x) + 1]}), timeout=10)
        out.append(time.perf_counter() - t)
    return out


@pytest.mark.parametrize("kind", ["sleeps 2 s", "raises"])
def test_slow_or_failing_shadow_leaves_primary_answers_and_latency_alone(
    kind, shadow_models, tmp_path, gateway_factory
):
    from gateway.bundle.attach import attach_bundle

    if kind == "raises":
        bad = _raising_model(tmp_path / "raising")
        hooks = [attach_bundle]
    else:
        bad = shadow_models["b"]
        hooks = [attach_bundle, slow_hook(2, 2.0)]
    base = _repo(tmp_path, {1: shadow_models["a"], 2: bad})
    model = {"name": "m", "base_path": str(base), "version_policy": {"all": {}}, "primary": 1}
    x = shadow_models["x"]
    off = gateway_factory({"models": [model]})
    on = gateway_factory(
        {"models": [{**model, "shadows": [{"version": 2, "timeout_ms": 200}]}]}, hooks=hooks
    )
    stub_off = prediction_service_pb2_grpc.PredictionServiceStub(off.channel)
    stub_on = prediction_service_pb2_grpc.PredictionServiceStub(on.channel)
    # same answers
    for i in range(5):
        a = outputs_of(stub_off.Predict(predict_request("m", {"x": x[i : i + 1]})))
        b = outputs_of(stub_on.Predict(predict_request("m", {"x": x[i : i + 1]})))
        np.testing.assert_array_equal(a["output_0"], b["output_0"])
    # latency, alternating to share the machine's noise
    lat_off, lat_on = [], []
    for _ in range(2):
        lat_off += _latencies(stub_off, x)
        lat_on += _latencies(stub_on, x)
    ratio = statistics.median(lat_on) / statistics.median(lat_off)
    assert ratio < 1.5, f"primary p50 with a shadow that {kind}: {ratio:.2f}x shadow-off"
    (lane,) = wait_compared(on, "m", 245, timeout=120)
    failed = lane.errors if kind == "raises" else lane.timeouts
    # every mirrored request failed and was counted; after 20 in a row the circuit
    # breaker paused the lane, and the rest were counted as suppressed
    assert lane.compared == 0 and lane.offered == 245
    assert failed >= 20 and failed + lane.suppressed + lane.dropped == 245
    assert lane.suspended
    outcome = "error" if kind == "raises" else "timeout"
    reg = on.gateway.metrics.registry
    assert (
        reg.get_sample_value(
            "gateway_shadow_requests_total",
            {
                "model": "m",
                "comparison": "shadow",
                "primary_version": "1",
                "shadow": "2",
                "outcome": outcome,
            },
        )
        == failed
    )
    _flush(on)
    errors = [r for r in _records(on.divergence_log) if r["event"] == "shadow_error"]
    assert len(errors) == failed
    assert {r["error"] for r in errors} == (
        {"INVALID_ARGUMENT"} if kind == "raises" else {"DEADLINE_EXCEEDED"}
    )


def test_unwritable_divergence_log_does_not_stop_serving(shadow_models, tmp_path, gateway_factory):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    base = _repo(tmp_path, {1: shadow_models["a"], 2: shadow_models["b"]})
    gw = gateway_factory(
        {
            "logging": {"divergence_log": str(blocker / "divergence.jsonl")},
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
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    for i in range(40):
        assert (
            stub.Predict(
                predict_request("m", {"x": shadow_models["x"][i : i + 1]})
            ).model_spec.version.value
            == 1
        )
    (lane,) = wait_compared(gw, "m", 40)
    assert lane.compared == 40
    assert gw.gateway.mirror._log.flush(5), "the divergence log did not flush within 5 s"
    dropped = gw.gateway.metrics.registry.get_sample_value(
        "gateway_divergence_log_dropped_total", {"reason": "io_error"}
    )
    assert dropped and dropped >= 40


def test_sigkill_during_logging_leaves_a_parseable_log(shadow_models, tmp_path):
    """A real `gateway serve` process mirroring every request is SIGKILLed mid-stream;
    every line of every divergence log file still parses."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    import grpc
    import yaml

    base = _repo(tmp_path, {1: shadow_models["a"], 2: shadow_models["b"]})
    port = free_port()
    log_path = tmp_path / "logs" / "divergence.jsonl"
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port, "metrics_port": None},
                "logging": {
                    "file": str(tmp_path / "gw.log"),
                    "divergence_log": str(log_path),
                    "rotate_mb": 0.05,
                    "keep": 3,
                },
                "models": [
                    {
                        "name": "m",
                        "base_path": str(base),
                        "version_policy": {"all": {}},
                        "primary": 1,
                        "shadows": [{"version": 2}],
                        "noise_sample_rate": 1.0,
                    }
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    stop = threading.Event()
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("listening")
        wait_serving(f"127.0.0.1:{port}", "m")  # traffic starts once the model answers
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        errors: list[str] = []

        def traffic():
            i = 0
            while not stop.is_set():
                try:
                    stub.Predict(
                        predict_request("m", {"x": shadow_models["x"][i % 600 : i % 600 + 1]}),
                        timeout=5,
                    )
                except grpc.RpcError as exc:
                    errors.append(f"{exc.code().name}: {exc.details()}")
                i += 1

        threads = [threading.Thread(target=traffic, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(
            lambda: len(list(log_path.parent.glob("divergence.jsonl*"))) >= 2,
            120,
            "the gateway to write and rotate the divergence log at least once",
            seen=lambda: (
                f"files {sorted(f.name for f in log_path.parent.glob('divergence.jsonl*'))}, "
                f"{len(errors)} traffic errors (last {errors[-3:]})"
            ),
            interval=0.1,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    files = sorted(log_path.parent.glob("divergence.jsonl*"))
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert len(lines) > 20
    records = [json.loads(line) for line in lines]  # every line parses
    assert all(r["schema"] == "gateway.divergence/v1" for r in records)
    assert {r.get("comparison") for r in records if r["event"] == "divergence"} == {
        "shadow",
        "noise",
    }
