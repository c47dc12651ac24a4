"""Mirrored calls in a separate idle-priority process (`mirroring.executor: process`):
the process and every thread of it run at SCHED_IDLE (read back from /proc); mirrored
answers and divergence records equal those of the in-process mode on the same traffic;
a crashed mirror process is restarted while the primary answers throughout; a stalled
one makes the lane's queue overflow, and the drops are counted."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.support import (
    GatewayThread,
    Traffic,
    outputs_of,
    predict_request,
    wait_compared,
    wait_until,
)

SCHED_IDLE = 5  # Linux's policy number, as /proc/<pid>/sched prints it


def _config(tmp: Path, shadow_models, executor: str, **shadow) -> dict:
    base = tmp / "repo" / "m"
    if not base.exists():
        shutil.copytree(shadow_models["a"], base / "1")
        shutil.copytree(shadow_models["b"], base / "2")
    return {
        "mirroring": {"executor": executor, "linger_ms": 1},
        "models": [
            {
                "name": "m",
                "base_path": str(base),
                "version_policy": {"all": {}},
                "primary": 1,
                "shadows": [{"version": 2, "timeout_ms": 5000, **shadow}],
            }
        ],
    }


def _process_ready(gw: GatewayThread):
    process = gw.gateway.mirror.process
    assert process is not None
    gw.call(process.wait_ready())
    for version in (1, 2):  # the noise-free comparisons need both arms loaded there
        gw.call(process.wait_loaded("m", version))
    return process


def _policy(pid: int) -> set[int]:
    """The scheduling policy of every thread of `pid`."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "sched").read_text().splitlines():
            if line.startswith("policy"):
                found.add(int(line.split(":")[1]))
    return found


def _records(path: Path) -> dict[str, dict]:
    out = {}
    for file in sorted(path.parent.glob(path.name + "*")):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            if record.get("comparison") == "shadow":
                out[record["request_id"]] = record
    return out


def _send(gw: GatewayThread, x: np.ndarray, prefix: str) -> list[dict]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    answers = []
    for i in range(len(x)):
        response = stub.Predict(
            predict_request("m", {"x": x[i : i + 1]}),
            metadata=[("x-request-id", f"{prefix}-{i}")],
            timeout=30,
        )
        answers.append(outputs_of(response))
    return answers


def test_idle_priority_and_the_same_records_as_in_process(shadow_models, tmp_path):
    x = shadow_models["x"][:40]
    results = {}
    for executor in ("in_process", "process"):
        d = tmp_path / executor
        d.mkdir()
        with GatewayThread(_config(d, shadow_models, executor), d) as gw:
            if executor == "process":
                process = _process_ready(gw)
                assert process.policy == "idle"
                assert _policy(process.pid) == {SCHED_IDLE}
                assert _policy(os.getpid()) != {SCHED_IDLE}  # the gateway itself is not
            answers = _send(gw, x, "r")
            wait_compared(gw, "m", len(x))
            assert gw.gateway.mirror._log.flush(10)
            results[executor] = (answers, _records(gw.divergence_log))
    (answers_in, records_in), (answers_out, records_out) = results.values()
    for a, b in zip(answers_in, answers_out, strict=True):
        np.testing.assert_array_equal(a["output_0"], b["output_0"])
    assert set(records_in) == set(records_out) == {f"r-{i}" for i in range(40)}
    volatile = {"ts", "time", "timestamp", "shadow_latency_ms", "latency_ms", "seq"}
    for rid, record in records_in.items():
        mine = {k: v for k, v in record.items() if k not in volatile and "latency" not in k}
        theirs = {k: v for k, v in records_out[rid].items() if k in mine}
        assert mine == theirs, rid


def test_a_crashed_mirror_process_is_restarted_and_the_primary_answers(shadow_models, tmp_path):
    with GatewayThread(_config(tmp_path, shadow_models, "process"), tmp_path) as gw:
        process = _process_ready(gw)
        first = process.pid
        request = predict_request("m", {"x": shadow_models["x"][:1]})
        with Traffic(gw.channel, request, threads=3) as traffic:
            traffic.wait_for_requests(30)
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: process.restarts == 1, 30, "the mirror process restarted")
            gw.call(process.wait_ready())
            gw.call(process.wait_loaded("m", 2))
            assert process.pid not in (None, first)
            before = wait_compared(gw, "m", 1)[0].compared
            traffic.wait_for_requests(60)
            wait_until(
                lambda: wait_compared(gw, "m", 1)[0].compared > before,
                60,
                "comparisons to go on after the restart",
            )
        assert traffic.errors == []  # the primary answered throughout


def test_a_stalled_mirror_process_overflows_the_queue_and_drops_are_counted(
    shadow_models, tmp_path
):
    cfg = _config(tmp_path, shadow_models, "process", queue_size=8, timeout_ms=200)
    with GatewayThread(cfg, tmp_path) as gw:
        process = _process_ready(gw)
        _send(gw, shadow_models["x"][:2], "warm")
        wait_compared(gw, "m", 2)
        os.kill(process.pid, signal.SIGSTOP)
        try:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
            for i in range(120):
                stub.Predict(predict_request("m", {"x": shadow_models["x"][i % 50 : i % 50 + 1]}))
            (lane,) = wait_compared(gw, "m", 122)
            assert lane.dropped > 0, lane
            assert lane.timeouts > 0, lane
            reg = gw.gateway.metrics.registry
            labels = {
                "model": "m",
                "comparison": "shadow",
                "primary_version": "1",
                "shadow": "2",
                "outcome": "dropped",
            }
            assert reg.get_sample_value("gateway_shadow_requests_total", labels) == lane.dropped
        finally:
            os.kill(process.pid, signal.SIGCONT)
