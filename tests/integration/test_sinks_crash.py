"""Sinks under SIGKILL, and `gateway replay` against a real gateway.

Crash tests: a subprocess writes as fast as it can with rotation at 64 KiB and
is killed with SIGKILL at an arbitrary moment, three times on the same files.
Afterwards every rotated file is whole, every newline-terminated line (every
complete TFRecord) is valid, and the only damage Linux allows (an incomplete
last record of the active file, when the kill lands inside a multi-page
write) is removed by the next writer that opens the file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.replay import add_replay_parser, run_replay
from gateway.sinks.capture import CaptureWriter, iter_tfrecords, read_prediction_logs
from gateway.sinks.divergence_log import SCHEMA
from gateway.sinks.jsonl import JsonlWriter
from gateway.workers import free_port
from tests.support import wait_until

ROTATE_BYTES = 64 * 1024

DIVERGENCE_WRITER = textwrap.dedent(
    """
    import sys
    from gateway.sinks.divergence_log import DivergenceLog

    log = DivergenceLog(sys.argv[1], rotate_mb=64 / 1024, keep=50, sensitive_features={"ssn"},
                        replica="host-1:8500", flush_interval=0.001)
    fields = dict(model="fraud", comparison="shadow", primary_version=1, shadow_version=2,
                  rows=1, latency_ms={"primary": 1.92, "shadow": 2.41},
                  outputs={"scores": {"kind": "probabilities", "diverged": True, "max_abs": 0.3}},
                  diverged=True, within_noise=None,
                  feature_mismatches={"primary": [{"feature": "ssn", "kind": "unseen_category",
                                                   "value": "123", "count": 1}], "shadow": []},
                  features={"amount": 400.0, "country": "DE", "ssn": "123"},
                  input_digest="sha256:" + "ab" * 32)
    run = sys.argv[2]
    print("ready", flush=True)
    i = 0
    while True:
        log.divergence(request_id=f"{run}-{i}", seq=i, run=run, pad="x" * (i % 3000), **fields)
        i += 1
    """
)

CAPTURE_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from gateway.sinks.capture import CaptureWriter

    w = CaptureWriter(sys.argv[1], rotate_mb=64 / 1024, keep=5, flush_interval=0.001)
    reqs = []
    for n in (1, 50, 700):
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "m"
        req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((n, 4), np.float32)))
        resp = predict_pb2.PredictResponse()
        resp.outputs["y"].CopyFrom(tf.make_tensor_proto(np.ones((n, 3), np.float32)))
        reqs.append((req, resp))
    print("ready", flush=True)
    i = 0
    while True:
        w.write(*reqs[i % 3])
        i += 1
    """
)


def _kill_while_writing(script: str, path: Path, run: str, min_rotations: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path), run],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        marker = path.with_name(f"{path.name}.{min_rotations}")
        wait_until(
            marker.exists,
            60,
            f"the writer to rotate {min_rotations} times ({marker.name})",
            seen=lambda: [f.name for f in _files(path)],
        )
        # time is the behaviour: SIGKILL at an arbitrary moment of the write stream
        time.sleep(random.uniform(0.0, 0.2))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def _files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + "*"))


def _check_jsonl_files(path: Path) -> tuple[int, int]:
    """All complete lines valid; returns (records, bytes of an incomplete tail)."""
    records = 0
    tail = 0
    for file in _files(path):
        data = file.read_bytes()
        complete, _, rest = data.rpartition(b"\n")
        if file != path:
            assert rest == b"", f"rotated file {file.name} ends with a partial line"
        tail += len(rest)
        for line in complete.splitlines():
            rec = json.loads(line)
            assert rec["schema"] == SCHEMA and rec["event"] == "divergence"
            assert rec["features"]["ssn"] == "<redacted>"
            assert rec["feature_mismatches"]["primary"][0]["value"] == "<redacted>"
            records += 1
        assert file.stat().st_size <= ROTATE_BYTES or data.count(b"\n") <= 1
    return records, tail


def test_divergence_log_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "div" / "divergence.jsonl"
    for run in ("a", "b", "c"):
        _kill_while_writing(DIVERGENCE_WRITER, path, run, min_rotations=3)
        records, tail = _check_jsonl_files(path)
        assert records > 100
        # The next writer removes an incomplete last line, if the kill left one.
        JsonlWriter(path).close()
        assert path.read_bytes()[-1:] in (b"", b"\n")
        assert _check_jsonl_files(path)[1] == 0
    # per run, sequence numbers only increase across files (oldest file first)
    seqs: dict[str, list[int]] = {}
    files = sorted(_files(path), key=lambda p: -int(p.suffix[1:]) if p != path else 0)
    for file in files:
        for line in file.read_bytes().splitlines():
            rec = json.loads(line)
            seqs.setdefault(rec["run"], []).append(rec["seq"])
    for run, values in seqs.items():
        assert values == sorted(set(values)), run


class _Tails:
    """on_truncated callback collecting (path, offset, bytes)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Path, int, int]] = []

    def __call__(self, path: Path, offset: int, nbytes: int) -> None:
        self.seen.append((path, offset, nbytes))


def test_capture_survives_sigkill(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "cap" / "requests.tfrecord"
    for run in ("a", "b"):
        _kill_while_writing(CAPTURE_WRITER, path, run, min_rotations=3)
        for file in _files(path):
            tails = _Tails()
            n = sum(1 for _ in iter_tfrecords(file, on_truncated=tails))
            assert n > 0 or file == path
            if file != path:
                assert not tails.seen, f"rotated file {file.name} has a truncated record"
                assert sum(1 for _ in tf.data.TFRecordDataset(str(file))) == n
        CaptureWriter(path).close()  # repairs a truncated tail, if any
        tails = _Tails()
        list(iter_tfrecords(path, on_truncated=tails))
        assert not tails.seen
        sum(1 for _ in tf.data.TFRecordDataset(str(path)))  # no DataLossError


# ---------------------------------------------------------------- replay


def _replay(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    add_replay_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["replay", *argv])
    assert args.func is run_replay
    code: int = args.func(args)
    return code


def _last_json(out: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_replay_against_a_real_gateway(
    make_repo: Callable[..., Path],
    gateway_factory: Callable[[dict[str, Any]], Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
    from tests.support import predict_request

    base = make_repo("m", {1: "keras_a", 2: "keras_b"})
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "m",
                    "base_path": str(base),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                }
            ]
        }
    )
    target = f"127.0.0.1:{gw.gateway.port}"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    rng = np.random.default_rng(0)
    capture = tmp_path / "capture" / "requests.tfrecord"
    writer = CaptureWriter(capture, flush_interval=0.01)
    n = 12
    for i in range(n):
        x = rng.normal(scale=3.0, size=(1 + i % 4, 4)).astype(np.float32)
        req = predict_request("m", {"x": x}, version=1)
        resp = stub.Predict(req, timeout=30)
        assert writer.write(req, resp)
    writer.write(predict_request("m", {"x": np.ones((1, 4), np.float32)}), None)  # no response
    assert writer.close()
    assert writer.written == n + 1
    capsys.readouterr()

    # the same version answers the same: no divergence
    assert (
        _replay(str(capture), "--model", "m", "--version", "1", "--target", target, "--json") == 0
    )
    same = _last_json(capsys.readouterr().out)
    assert same["records"] == same["sent"] == same["ok"] == n + 1
    assert same["compared"] == n and same["diverged"] == 0 and same["errors"] == {}
    assert same["max_abs"]["output_0"] <= 1e-5

    # version 2 is another model: divergence, found through the label too
    glob_arg = str(capture.parent / "*.tfrecord")
    assert _replay(glob_arg, "--model", "m", "--label", "canary", "--target", target, "--json") == 0
    other = _last_json(capsys.readouterr().out)
    assert other["compared"] == n and other["diverged"] > 0
    assert other["max_abs"]["output_0"] > 0.05

    # text summary, rate limit, and an unknown version counted by gRPC code
    start = time.monotonic()
    assert (
        _replay(str(capture), "--model", "m", "--version", "7", "--target", target, "--rate", "40")
        == 0
    )
    assert time.monotonic() - start >= n / 40
    text = capsys.readouterr().out
    assert f"errors: {n + 1} (NOT_FOUND={n + 1})" in text

    # a file without records
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    assert _replay(str(empty), "--model", "m", "--target", target) == 1
    assert "no records" in capsys.readouterr().err

    # the capture file is a valid TF Serving warmup file for the gateway
    warm = make_repo("w", {1: "keras_a"})
    (warm / "1" / "assets.extra").mkdir(exist_ok=True)
    (warm / "1" / "assets.extra" / "tf_serving_warmup_requests").write_bytes(capture.read_bytes())
    gw2 = gateway_factory({"models": [{"name": "w", "base_path": str(warm)}]})
    status = admin_pb2_grpc.AdminServiceStub(gw2.channel).GetStatus(
        admin_pb2.GetStatusRequest(model="w"), timeout=10
    )
    assert status.models[0].versions[0].warmup_records == n + 1
    assert len(list(read_prediction_logs(capture))) == n + 1


def test_replay_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    target = f"127.0.0.1:{port}"
    args = ("--model", "m", "--target", target, "--connect-timeout", "0.3")
    assert _replay(str(tmp_path / "missing.tfrecord"), *args) == 1
    assert "no files to replay" in capsys.readouterr().err
    assert _replay(str(empty), *args) == 1
    assert "cannot connect" in capsys.readouterr().err
