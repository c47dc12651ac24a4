"""`gateway demo`: train and export a small model repository, serve it, send real traffic.

Runs the gateway as a subprocess exactly as `gateway serve` would, talks to it
with the stock TF Serving stubs, and shows: the exported bundle (`gateway
inspect`), raw features preprocessed by each version's own training
preprocessing (checked against the model called in process on the bundle's
preprocessing), labels, batching under concurrent load, a feature mismatch
reported (log record and metrics), distribution skew (`gateway stats` and the
drift log record), version 2 shadowing version 1 (live divergence and `gateway
report`), a canary rollout of version 2 rolled back by its divergence gate, then
promoted by hand and reverted, bad requests' clear errors, a corrupted version
failing while the good one keeps serving, and a clean SIGTERM shutdown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gateway.workers import free_port


def _say(title: str) -> None:
    print(f"\n== {title}", flush=True)


RAW = {
    "amount": np.array([[25.0], [120.0]]),
    "age": np.array([[34.0], [61.0]]),
    "country": np.array([b"DE", b"BR"], dtype=object),
}


def _build(workdir: Path) -> Path:
    from gateway.bundle.inspect import inspect_version
    from gateway.samples import export_fraud_model

    shutil.rmtree(workdir, ignore_errors=True)
    repo = workdir / "models" / "fraud"
    _say("training and exporting two versions of a fraud model with gateway.export_version")
    print(
        "  features: amount (log1p + standardize), age (keras Normalization), country (vocabulary)"
    )
    for version, seed, shift in ((1, 1, 0.0), (2, 2, 0.3)):
        print(f"  {export_fraud_model(repo, version, seed=seed, shift=shift)}")
    lines = inspect_version(repo / "1").splitlines()
    print(f"  `gateway inspect {repo / '1'}` (abridged):")
    keep = ("manifest:", "  verification:", "training statistics", "golden records:")
    stats = lines.index(next(line for line in lines if line.startswith("training statistics")))
    for i, line in enumerate(lines):
        is_stat = i > stats and line.startswith("  ") and not line.startswith("    ")
        if line.startswith(keep) or is_stat:
            print(f"    {line}")
    print("    preprocessing (assets.extra/gateway/preprocessing.pb):")
    for line in _preprocessing_summary(repo / "1"):
        print(f"      {line}")
    return repo


def _preprocessing_summary(version_dir: Path) -> list[str]:
    """One line per raw feature: raw kind/shape and its transform chain."""
    from gateway.bundle.attach import read_bundle

    bundle = read_bundle(version_dir)
    assert bundle is not None and bundle.preprocessing is not None
    out = []
    for name, fp in bundle.preprocessing.features.items():
        steps = []
        for t in fp.transforms:
            if t.kind == "standardize":
                steps.append(f"standardize(mean={t.mean[0]:.4g}, std={t.std[0]:.4g})")  # type: ignore[attr-defined]
            elif t.kind == "vocabulary":
                steps.append(f"vocabulary({len(t.tokens)} tokens, {t.num_oov_buckets} OOV)")  # type: ignore[attr-defined]
            else:
                steps.append(t.kind)
        shape = "[batch" + "".join(f", {d}" for d in fp.raw.shape) + "]"
        out.append(f"{name}: raw {fp.raw.kind} {shape} -> {' -> '.join(steps) or 'pass-through'}")
    return out


def _in_process(version_dir: Path, raw: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The version's preprocessing (read from its bundle) and model, called directly in
    this process: what training computed, to compare with the gateway's answer."""
    import tensorflow as tf

    from gateway.bundle.attach import read_bundle

    bundle = read_bundle(version_dir)
    assert bundle is not None and bundle.preprocessing is not None
    fed = bundle.preprocessing.apply(raw)
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    _, specs = fn.structured_input_signature
    args = {
        k: tf.constant(np.asarray(v).astype(specs[k].dtype.as_numpy_dtype)) for k, v in fed.items()
    }
    return fed, fn(**args)["output_0"].numpy()


def _values(values: Any) -> list[Any]:
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind == "f":
        return [round(float(v), 3) for v in flat]
    return flat.tolist()


def _probs(values: Any) -> list[float]:
    return [round(float(v), 4) for v in np.asarray(values).reshape(-1)]


def _config(workdir: Path, port: int, metrics_port: int) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port},
        "lifecycle": {"poll_interval_seconds": 0.5},
        "logging": {"file": "gateway.log", "divergence_log": "logs/divergence.jsonl"},
        "rollouts": {"state_dir": "state", "tick_seconds": 0.2},
        "models": [
            {
                "name": "fraud",
                "base_path": "models/fraud",
                "version_policy": {"all": {}},
                "version_labels": {"stable": 1, "canary": 2},
                "primary": "stable",
                "batching": {"max_batch_size": 64, "batch_timeout_micros": 0},
                "skew": {"window_values": 2000, "min_values": 100, "check_interval_seconds": 0.5},
                "shadows": [{"version": "canary", "sample_rate": 1.0, "timeout_ms": 1000}],
                "divergence": {"output_0": {"kind": "probabilities", "max_abs": 0.05}},
                "rollout": {
                    "candidate": "canary",
                    "routing_key": {"header": "x-user-id"},
                    "steps": [10, 50, 100],
                    "min_requests_per_step": 40,
                    "min_step_seconds": 0,
                    "gates": {
                        "max_divergence_rate": 0.02,
                        "max_error_rate_ratio": 1.5,
                        "max_p99_latency_ratio": None,
                    },
                    "min_samples": {"compared": 30},
                },
            }
        ],
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


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

    repo = _build(workdir)
    port, metrics_port = free_port(), free_port()
    config_path = _config(workdir, port, metrics_port)
    _say(f"starting: gateway serve --config {config_path}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        print("  " + proc.stdout.readline().strip())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        status_req = get_model_status_pb2.GetModelStatusRequest()
        status_req.model_spec.name = "fraud"
        _wait(lambda: len(_available(models, status_req)) == 2, 120)
        print(f"  available versions: {_available(models, status_req)} (each passed its self test)")

        def predict(
            label: str = "",
            version: int = 0,
            features: dict[str, Any] | None = None,
            metadata: list[tuple[str, str]] | None = None,
        ) -> Any:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "fraud"
            if label:
                req.model_spec.version_label = label
            if version:
                req.model_spec.version.value = version
            for name, value in (features or RAW).items():
                req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            return stub.Predict(req, timeout=10, metadata=metadata)

        _say("Predict with RAW features through the stock TF Serving stub")
        print("  raw request: amount=[25, 120], age=[34, 61], country=[DE, BR]")
        answers = {}
        for label in ("", "stable", "canary"):
            resp = predict(label)
            probs = tf.make_ndarray(resp.outputs["output_0"])
            answers[resp.model_spec.version.value] = probs
            print(
                f"  label={label or '(none: primary)':<16} version {resp.model_spec.version.value}"
                f" (its own preprocessing): P(fraud) = {_probs(probs[:, 1])}"
            )
        print("  the gateway applied each version's training preprocessing; in-process check:")
        for version in (1, 2):
            fed, expected = _in_process(repo / str(version), RAW)
            shown = ", ".join(f"{k}={_values(v)}" for k, v in fed.items())
            same = np.allclose(answers[version], expected, rtol=1e-4, atol=1e-5)
            print(f"    version {version} feeds the model {shown}")
            print(
                f"    model(preprocessing(raw)) in training code: P(fraud) = "
                f"{_probs(expected[:, 1])}  {'== the gateway answer' if same else 'DIFFERS'}"
            )

        _say("400 concurrent single-row requests (dynamic batching merges them)")
        from gateway.samples import fraud_training_data

        sample = fraud_training_data(seed=9, rows=400)
        rows = [{k: v[i : i + 1] for k, v in sample.items()} for i in range(400)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda row: predict("stable", features=row), rows))
        elapsed = time.perf_counter() - t0
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        calls = _metric(metrics, 'gateway_batch_requests_count{model="fraud",version="1"}')
        merged = _metric(metrics, 'gateway_batch_requests_sum{model="fraud",version="1"}')
        print(
            f"  {400 / elapsed:.0f} requests/s; version 1 ran {merged:.0f} requests in "
            f"{calls:.0f} model calls (avg {merged / max(calls, 1):.1f} per call)"
        )

        _say("a request far from the training data is answered and reported")
        predict(
            "stable",
            features={
                "amount": np.array([[5e6]]),
                "age": np.array([[35.0]]),
                "country": np.array([b"XX"], dtype=object),
            },
        )
        time.sleep(0.3)
        records = [
            json.loads(line)
            for line in (workdir / "gateway.log").read_text().splitlines()
            if '"feature_mismatch"' in line
        ]
        for m in records[-1]["mismatches"]:
            print(
                f"  {m['kind']:<16} feature={m['feature']:<8} value={m['value']!r:<12} "
                f"training: {m['reference']}"
            )
        print(f"  (one feature_mismatch log record, request_id {records[-1].get('request_id')})")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        for line in metrics.splitlines():
            if line.startswith("gateway_feature_mismatches_total{"):
                print(f"  {line}")

        _say("distribution skew: version 2 receives amounts ~10x larger than in training")
        shifted = fraud_training_data(seed=5, rows=400, shift=2.3)
        for i in range(0, 400, 20):
            predict("canary", features={k: v[i : i + 20] for k, v in shifted.items()})
        time.sleep(1.5)
        sys.stdout.flush()
        subprocess.run(
            [sys.executable, "-m", "gateway", "stats", "fraud", "--target", f"127.0.0.1:{port}"],
            check=False,
            env=env,
        )
        for line in (workdir / "gateway.log").read_text().splitlines():
            if '"feature_skew_drift"' in line:
                record = json.loads(line)
                print(
                    f"  log: feature_skew_drift model={record['model']} version="
                    f"{record['version']} feature={record['feature']} crossed={record['crossed']} "
                    f"js={record['js']:.4f} (threshold {record['thresholds']['js']})"
                )

        _shadow_and_rollout(workdir, port, channel, predict, env)

        _say("a bad request gets a clear error")
        for features, version in (
            ({**RAW, "age": np.array([[b"old"], [b"young"]], dtype=object)}, 0),
            ({**RAW, "age": np.ones((2, 3))}, 0),
            (None, 7),
        ):
            try:
                predict(version=version, features=features)
            except grpc.RpcError as exc:
                print(f"  {exc.code().name}: {exc.details()}")

        _say("a corrupted version 3 appears (truncated variables): it fails, the rest keep serving")
        staging = workdir / "staging-3"
        shutil.copytree(repo / "2", staging)
        data = next((staging / "variables").glob("variables.data-*"))
        data.write_bytes(data.read_bytes()[:64])
        os.rename(staging, repo / "3")
        _wait(lambda: _state(models, status_req, 3)[1] != "", 60)
        state, error = _state(models, status_req, 3)
        print(f"  version 3: {_admin_state(channel, 3)} (TF Serving GetModelStatus: {state})")
        print(f"  reason: {error}")
        resp = predict()
        print(
            f"  a request without a version is answered by version {resp.model_spec.version.value}"
            " (the primary)"
        )

        _say("stopping with SIGTERM (in-flight requests finish, logs flushed)")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        print(f"  gateway exited with code {code}")
        log_lines = (workdir / "gateway.log").read_text().splitlines()
        print(f"  {len(log_lines)} JSON log lines in {workdir / 'gateway.log'}; the last two:")
        for line in log_lines[-2:]:
            print(f"    {line[:160]}")
        return 0 if code == 0 else 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _shadow_and_rollout(
    workdir: Path, port: int, channel: Any, predict: Any, env: dict[str, str]
) -> None:
    """Shadow figures and report, then a gated canary rollout driven by the CLI."""
    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
    from gateway.samples import fraud_training_data

    admin = admin_pb2_grpc.AdminServiceStub(channel)
    target = ["--target", f"127.0.0.1:{port}"]

    def cli(*args: str, head: int = 0) -> None:
        sys.stdout.flush()
        out = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            check=False,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.splitlines()
        for line in out[:head] if head else out:
            print(f"  | {line}")

    _say("shadow: every answer of version 1 was also computed by version 2, off the critical path")
    time.sleep(0.5)
    summary = admin.GetDivergenceSummary(admin_pb2.GetDivergenceSummaryRequest(model="fraud"))
    for lane in summary.lanes:
        if not lane.offered:
            continue  # the canary comparison lane: used once a rollout runs
        print(
            f"  {lane.lane} (version {lane.shadow_version}): {lane.compared} requests compared, "
            f"{lane.diverged} diverged ({lane.divergence_rate:.1%}), {lane.label_flips} label "
            f"flips, max |dP| {lane.max_abs['output_0']:.3f}, {lane.dropped} dropped, "
            f"{lane.errors + lane.timeouts} errors"
        )
    print("  `gateway report logs/divergence.jsonl` (abridged):")
    time.sleep(1.0)  # the divergence log is written in the background
    cli("report", str(workdir / "logs" / "divergence.jsonl"), head=14)

    _say("canary rollout of version 2 (10% -> 50% -> 100% of users, gate: divergence <= 2%)")
    cli("rollout", "start", "fraud", *target, head=1)
    sample = fraud_training_data(seed=11, rows=600)

    def keyed(i: int) -> None:
        features = {k: v[i : i + 1] for k, v in sample.items()}
        predict(features=features, metadata=[("x-user-id", f"user-{i % 300}")])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(keyed, range(600)))
    _wait(
        lambda: admin.GetRollout(admin_pb2.GetRolloutRequest(model="fraud")).status != "running",
        60,
    )
    status = admin.GetRollout(admin_pb2.GetRolloutRequest(model="fraud"))
    print(f"  the gateway rolled it back by itself: {status.status.upper()}")
    for d in status.history:
        print(f"    {d.action:<9} ({d.actor}) {d.from_weight:g}% -> {d.to_weight:g}%: {d.reason}")
    print(f"  every user is back on version {status.primary_version}")
    print("  the owners review the divergence, decide it is intended, and promote by hand:")
    cli("rollout", "start", "fraud", *target, "--reason", "second attempt", head=1)
    cli("rollout", "promote", "fraud", *target, "--reason", "reviewed: shift is intended", head=2)
    resp = predict()
    print(
        f"  a request without a version is now answered by version {resp.model_spec.version.value}"
    )
    print("  ...and the promotion is reverted in one step (version 1 was kept loaded):")
    cli("rollout", "rollback", "fraud", *target, "--reason", "revert", head=1)
    resp = predict()
    print(f"  a request without a version is answered by version {resp.model_spec.version.value}")
    print("  decisions (`gateway rollout status fraud`):")
    cli("rollout", "status", "fraud", *target)


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


def _admin_state(channel: Any, version: int) -> str:
    """The gateway's own state name of a version (FAILED, AVAILABLE, ...)."""
    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    reply = admin_pb2_grpc.AdminServiceStub(channel).GetStatus(
        admin_pb2.GetStatusRequest(model="fraud"), timeout=5
    )
    for model in reply.models:
        for v in model.versions:
            if v.version == version:
                return str(v.state)
    return "?"


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
