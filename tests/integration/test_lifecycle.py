"""Version lifecycle: broken versions fail with a reason while the old one keeps
serving, retries on change, availability-preserving swaps, and no failed requests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from gateway.bundle.warmup import write_warmup
from gateway.core.states import VersionState
from tests.support import Traffic, predict_request

X = np.ones((1, 4), np.float32)
AVAILABLE, FAILED, END = VersionState.AVAILABLE, VersionState.FAILED, VersionState.END


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _data_shard(v: Path) -> Path:
    return next((v / "variables").glob("variables.data-*"))


def _bad_warmup(v: Path) -> None:
    write_warmup(v, [predict_request("m", {"x": np.ones((1, 7), np.float32)})])


CORRUPTIONS = {
    "missing variables.index": (
        lambda v: os.remove(v / "variables" / "variables.index"),
        "variables/variables.index: missing",
    ),
    "truncated variables.index": (
        lambda v: _truncate(v / "variables" / "variables.index"),
        "variables/variables.index: unreadable",
    ),
    "truncated data shard": (
        lambda v: _truncate(_data_shard(v), 0.3),
        "variables: data shard truncated or corrupt",
    ),
    "missing data shard": (
        lambda v: os.remove(_data_shard(v)),
        "variables/variables.data-00000-of-00001: missing",
    ),
    "truncated saved_model.pb": (
        lambda v: _truncate(v / "saved_model.pb"),
        "saved_model.pb: cannot parse",
    ),
    "garbage saved_model.pb": (
        lambda v: (v / "saved_model.pb").write_bytes(os.urandom(4096)),
        "saved_model.pb: cannot parse",
    ),
    "empty saved_model.pb": (
        lambda v: (v / "saved_model.pb").write_bytes(b""),
        "saved_model.pb: no MetaGraph",
    ),
    "failing warmup": (
        _bad_warmup,
        "tf_serving_warmup_requests: record 0 failed: input 'x': expected shape [?, 4], got [1, 7]",
    ),
}


def _stage(models_dir: Path, built: str, base: Path, version: int, corrupt=None) -> None:
    """Prepare a version next to the repo and rename it in (atomic, like a careful deployer)."""
    staging = base.parent / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(models_dir / built, staging)
    if corrupt is not None:
        corrupt(staging)
    shutil.rmtree(base / str(version), ignore_errors=True)
    os.rename(staging, base / str(version))


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_broken_version_fails_with_reason_old_keeps_serving_and_fix_is_retried(
    kind, make_repo, models_dir, gateway_factory
):
    corrupt, reason = CORRUPTIONS[kind]
    base = make_repo("m", {1: "keras_a"})
    gw = gateway_factory({"models": [{"name": "m", "base_path": str(base)}]})
    with Traffic(gw.channel, predict_request("m", {"x": X})) as traffic:
        traffic.wait_for_requests(20)
        _stage(models_dir, "keras_b", base, 2, corrupt)
        status = gw.monitor.wait_for("m", 2, {FAILED})
        assert reason in status.error, status.error
        traffic.wait_for_requests(50)
        assert gw.monitor.get("m", 1).state is AVAILABLE

        # reported through TF Serving's ModelService: END + error message
        ms = model_service_pb2_grpc.ModelServiceStub(gw.channel)
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "m"
        by_version = {s.version: s for s in ms.GetModelStatus(req).model_version_status}
        assert by_version[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert by_version[2].state == get_model_status_pb2.ModelVersionStatus.END
        assert reason in by_version[2].status.error_message
        assert (
            gw.gateway.metrics.registry.get_sample_value(
                "gateway_version_load_failures_total", {"model": "m", "version": "2"}
            )
            >= 1
        )

        # unchanged files are not retried...
        gw.call(gw.gateway.manager.wait_polls(5))
        assert gw.monitor.get("m", 2).failures == 1
        # ...a fixed version is, and then replaces version 1
        _stage(models_dir, "keras_b", base, 2)
        gw.monitor.wait_for("m", 2, {AVAILABLE})
        gw.monitor.wait_for("m", 1, {END})
        traffic.wait_for_requests(20)
    assert traffic.errors == []
    assert traffic.versions[0] == 1 and traffic.versions[-1] == 2
    # atomic swap: once version 2 has answered, no request sent afterwards gets version 1
    # (requests that resolved version 1 before the swap may still finish after it)
    first_two = min(answered for _, answered, v in traffic.answers if v == 2)
    assert {v for sent, _, v in traffic.answers if sent > first_two} == {2}


def test_swap_under_load_then_empty_and_vanished_base_path_keep_serving(
    make_repo, models_dir, gateway_factory, tmp_path
):
    base = make_repo("m", {1: "keras_a"})
    gw = gateway_factory({"models": [{"name": "m", "base_path": str(base)}]})
    with Traffic(gw.channel, predict_request("m", {"x": X}), threads=6) as traffic:
        traffic.wait_for_requests(30)
        _stage(models_dir, "keras_b", base, 2)
        gw.monitor.wait_for("m", 1, {END})
        traffic.wait_for_requests(30)
        # every version directory removed: nothing is unloaded
        parked = tmp_path / "parked"
        parked.mkdir()
        os.rename(base / "1", parked / "1")
        os.rename(base / "2", parked / "2")
        gw.call(gw.gateway.manager.wait_polls(3))
        assert gw.monitor.get("m", 2).state is AVAILABLE
        # base_path itself vanishes
        os.rename(base, tmp_path / "gone")
        gw.call(gw.gateway.manager.wait_polls(3))
        traffic.wait_for_requests(30)
        assert gw.monitor.get("m", 2).state is AVAILABLE
    assert traffic.errors == []
    assert set(traffic.versions) == {1, 2}


def test_failed_only_version_reports_not_serving_then_recovers(
    make_repo, models_dir, gateway_factory
):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    base = make_repo("m", {})
    _stage(models_dir, "keras_a", base, 1, CORRUPTIONS["truncated data shard"][0])
    gw = gateway_factory({"models": [{"name": "m", "base_path": str(base)}]})
    gw.monitor.wait_for("m", 1, {FAILED})
    health = health_pb2_grpc.HealthStub(gw.channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="m")).status
        == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    _stage(models_dir, "keras_a", base, 1)
    gw.monitor.wait_for("m", 1, {AVAILABLE})
    gw.call(gw.gateway.manager.wait_polls(1))
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="m")).status
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_warmup_records_are_replayed(make_repo, models_dir, gateway_factory):
    base = make_repo("m", {})
    _stage(
        models_dir,
        "keras_a",
        base,
        1,
        lambda v: write_warmup(v, [predict_request("m", {"x": X})] * 3),
    )
    gw = gateway_factory({"models": [{"name": "m", "base_path": str(base)}]})
    assert gw.monitor.wait_for("m", 1, {AVAILABLE}).warmup_records == 3


def test_specific_policy_and_labels(make_repo, gateway_factory):
    base = make_repo("m", {1: "keras_a", 2: "keras_b", 3: "keras_a"})
    gw = gateway_factory(
        {"models": [{"name": "m", "base_path": str(base), "version_policy": {"specific": [1, 3]}}]}
    )
    gw.monitor.wait_for("m", 1, {AVAILABLE})
    gw.monitor.wait_for("m", 3, {AVAILABLE})
    assert gw.monitor.get("m", 2) is None
    assert sorted(gw.gateway.manager.view("m").versions) == [1, 3]
