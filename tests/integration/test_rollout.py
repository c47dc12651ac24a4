"""Canary rollouts end to end on a real gateway: a good candidate is promoted step by step,
a divergent, failing or slow one is rolled back with the failing gate named, the primary's
clients never see an error, and admin mutations need the bearer token."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.bundle.attach import attach_bundle
from gateway.routing.router import routing_hash
from tests.support import predict_request, raising_hook, slow_hook, wait_until

Action = admin_pb2.UpdateRolloutRequest
NO_GATES = {
    "max_divergence_rate": None,
    "max_error_rate_ratio": None,
    "max_p99_latency_ratio": None,
}


def _repo(tmp_path: Path, versions: dict[int, Path]) -> Path:
    base = tmp_path / "repo" / "m"
    for version, src in versions.items():
        shutil.copytree(src, base / str(version))
    return base


def _config(tmp_path: Path, base: Path, **rollout: Any) -> dict[str, Any]:
    plan = {
        "candidate": "canary",
        "routing_key": {"header": "x-user-id"},
        "steps": [10, 50, 100],
        "min_requests_per_step": 30,
        "min_step_seconds": 0,
        "gates": {
            "max_divergence_rate": 0.05,
            "max_error_rate_ratio": 1.5,
            "max_p99_latency_ratio": 10.0,
        },
        "min_samples": {
            "compared": 10,
            "error_requests": 10,
            "primary_requests": 10,
            "latency": 30,
        },
        **rollout,
    }
    return {
        "rollouts": {"state_dir": str(tmp_path / "state"), "tick_seconds": 0.05},
        "models": [
            {
                "name": "m",
                "base_path": str(base),
                "version_policy": {"latest": 1},  # the rollout pins both arms loaded
                "version_labels": {"stable": 1, "canary": 2},
                "primary": "stable",
                "divergence": {"output_0": {"kind": "probabilities", "max_abs": 0.01}},
                "rollout": plan,
            }
        ],
    }


class KeyedTraffic:
    """Threads sending Predict with rotating x-user-id keys; records every outcome by key."""

    def __init__(self, channel: grpc.Channel, x: Any, threads: int = 3, keys: int = 400) -> None:
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self._x = x
        self._keys = keys
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[tuple[str, int]] = []
        self.errors: list[tuple[str, str]] = []
        self.completed = [0] * threads
        """Requests finished (answered or failed) per thread."""
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            key = f"user-{i % self._keys}"
            row = self._x[i % len(self._x) : i % len(self._x) + 1]
            try:
                resp = self._stub.Predict(
                    predict_request("m", {"x": row}), metadata=[("x-user-id", key)], timeout=30
                )
                with self._lock:
                    self.answers.append((key, resp.model_spec.version.value))
            except grpc.RpcError as exc:
                with self._lock:
                    self.errors.append((key, f"{exc.code().name}: {exc.details()}"))
            self.completed[offset] += 1
            i += len(self._threads)

    def __enter__(self) -> KeyedTraffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        stuck = sum(t.is_alive() for t in self._threads)
        if stuck and exc[0] is None:
            raise AssertionError(f"{stuck} traffic thread(s) still running 30 s after stop")


def _admin(gw) -> Any:
    return admin_pb2_grpc.AdminServiceStub(gw.channel)


def _wait_status(gw, statuses: set[str], timeout: float = 120.0) -> Any:
    last: list[Any] = []

    def reached() -> Any:
        s = _admin(gw).GetRollout(admin_pb2.GetRolloutRequest(model="m"))
        last[:] = [s]
        return s if s.status in statuses else None

    return wait_until(
        reached,
        timeout,
        f"the rollout to reach one of {sorted(statuses)}",
        seen=lambda: f"rollout stuck: {last}",
        interval=0.05,  # each check is an admin RPC
    )


def test_good_candidate_is_promoted_through_every_step(shadow_models, tmp_path, gateway_factory):
    # a byte-identical candidate: no divergence, same speed, no errors
    base = _repo(tmp_path, {1: shadow_models["a"], 2: shadow_models["a"]})
    gw = gateway_factory(_config(tmp_path, base))
    admin = _admin(gw)
    status = admin.GetRollout(admin_pb2.GetRolloutRequest(model="m"))
    assert (status.status, status.primary_version, status.candidate_version) == ("pending", 1, 2)
    assert status.routing_key == "header:x-user-id" and not status.missing
    with KeyedTraffic(gw.channel, shadow_models["x"]) as traffic:
        started = admin.UpdateRollout(Action(model="m", action=Action.START, reason="go"))
        assert (started.status, started.weight) == ("running", 10.0)
        final = _wait_status(gw, {"promoted", "rolled_back", "paused"})
    assert final.status == "promoted", final.failed_gate
    actions = [(d.action, d.actor, d.to_weight) for d in final.history]
    assert actions == [
        ("start", "admin", 10.0),
        ("advance", "auto", 50.0),
        ("advance", "auto", 100.0),
        ("promote", "auto", 100.0),
    ]
    assert traffic.errors == []
    # the split sent keys to both versions
    versions = {v for _, v in traffic.answers}
    assert versions == {1, 2}
    # promoted: the candidate is the primary, `stable` points at it, the old one is held
    assert (final.primary_version, final.previous_primary) == (2, 1)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    x = shadow_models["x"][:1]
    assert stub.Predict(predict_request("m", {"x": x})).model_spec.version.value == 2
    assert (
        stub.Predict(predict_request("m", {"x": x}, label="stable")).model_spec.version.value == 2
    )
    labels = admin.GetStatus(admin_pb2.GetStatusRequest(model="m")).models[0].labels
    assert labels["stable"] == 2
    # instant rollback of the promotion: version 1 was kept loaded
    reverted = admin.UpdateRollout(Action(model="m", action=Action.ROLLBACK, reason="oops"))
    assert (reverted.status, reverted.primary_version) == ("rolled_back", 1)
    assert stub.Predict(predict_request("m", {"x": x})).model_spec.version.value == 1
    reg = gw.gateway.metrics.registry
    assert (
        reg.get_sample_value(
            "gateway_rollout_decisions_total", {"model": "m", "action": "promote", "actor": "auto"}
        )
        == 1.0
    )
    canary_ok = reg.get_sample_value(
        "gateway_arm_requests_total", {"model": "m", "arm": "canary", "version": "2", "code": "OK"}
    )
    assert canary_ok and canary_ok > 0


@pytest.mark.parametrize(
    ("kind", "gate"),
    [
        ("diverges", "divergence_rate"),
        ("errors", "error_rate_ratio"),
        ("is slow", "p99_latency_ratio"),
    ],
)
def test_bad_candidate_is_rolled_back_with_the_gate_named(
    kind, gate, shadow_models, tmp_path, gateway_factory
):
    hooks = [attach_bundle]
    candidate = shadow_models["a"]
    if kind == "diverges":
        candidate = shadow_models["b"]  # same data, different initialization
    elif kind == "errors":
        hooks.append(raising_hook(2))
    else:
        hooks.append(slow_hook(2, 0.08))
    base = _repo(tmp_path, {1: shadow_models["a"], 2: candidate})
    gw = gateway_factory(_config(tmp_path, base), hooks=hooks)
    admin = _admin(gw)
    with KeyedTraffic(gw.channel, shadow_models["x"]) as traffic:
        admin.UpdateRollout(Action(model="m", action=Action.START))
        final = _wait_status(gw, {"promoted", "rolled_back", "paused"})
        # traffic after the rollback goes to the primary only: wait until each thread
        # finished the request it may have had in flight (sent before the rollback),
        # then for 20 answers to requests sent after it
        marks = list(traffic.completed)
        wait_until(
            lambda: all(c > m for c, m in zip(traffic.completed, marks, strict=True)),
            60,
            "every traffic thread to finish its request sent before the rollback",
            seen=lambda: f"completed {traffic.completed}, at the rollback {marks}",
        )
        after = len(traffic.answers)
        wait_until(
            lambda: len(traffic.answers) >= after + 20,
            60,
            "20 answers to requests sent after the rollout ended",
            seen=lambda: f"{len(traffic.answers) - after} (errors: {traffic.errors[-3:]})",
        )
    assert final.status == "rolled_back", final
    assert final.weight == 0.0 and final.failed_gate.startswith(gate), final.failed_gate
    last = final.history[-1]
    assert (last.action, last.actor) == ("rollback", "auto") and gate in last.reason
    assert final.history[-2].action == "start"  # it never got past the first step
    rollout_id = final.rollout_id
    # the primary's clients never saw an error: every error is a key the split sent to
    # the (failing) canary at the first step
    for key, error in traffic.errors:
        assert kind == "errors", error
        assert routing_hash("m", key, rollout_id) < 0.10, (key, error)
    if kind == "errors":
        assert traffic.errors and all("INTERNAL" in e for _, e in traffic.errors)
    assert {v for _, v in traffic.answers[-20:]} == {1}


def test_admin_mutations_need_the_token(shadow_models, tmp_path, gateway_factory):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    base = _repo(tmp_path, {1: shadow_models["a"], 2: shadow_models["b"]})
    config = _config(tmp_path, base)
    config["server"] = {"admin_token_file": str(token)}
    gw = gateway_factory(config)
    admin = _admin(gw)
    start = Action(model="m", action=Action.START)
    for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "s3cret-token")]):
        with pytest.raises(grpc.RpcError) as err:
            admin.UpdateRollout(start, metadata=metadata)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            admin.ReloadConfig(admin_pb2.ReloadConfigRequest(), metadata=metadata)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # nothing changed; reads need no token
    assert admin.GetRollout(admin_pb2.GetRolloutRequest(model="m")).status == "pending"
    good = [("authorization", "Bearer s3cret-token")]
    assert admin.UpdateRollout(start, metadata=good).status == "running"
    paused = admin.UpdateRollout(Action(model="m", action=Action.PAUSE), metadata=good)
    assert paused.status == "paused"
    weight = admin.UpdateRollout(
        Action(model="m", action=Action.SET_WEIGHT, weight=30), metadata=good
    )
    assert (weight.status, weight.weight) == ("paused", 30.0)
    assert admin.ReloadConfig(admin_pb2.ReloadConfigRequest(), metadata=good) is not None
    # bad actions are client errors naming what is wrong
    with pytest.raises(grpc.RpcError) as err:
        admin.UpdateRollout(Action(model="m", action=Action.SET_WEIGHT, weight=150), metadata=good)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "percent" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        admin.UpdateRollout(Action(model="m", action=Action.RELEASE), metadata=good)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        admin.GetRollout(admin_pb2.GetRolloutRequest(model="nope"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_explicit_version_bypasses_the_split(shadow_models, tmp_path, gateway_factory):
    base = _repo(tmp_path, {1: shadow_models["a"], 2: shadow_models["b"]})
    config = _config(tmp_path, base, steps=[50, 100], min_requests_per_step=10**6, gates=NO_GATES)
    gw = gateway_factory(config)
    admin = _admin(gw)
    s = admin.UpdateRollout(Action(model="m", action=Action.START))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    x = shadow_models["x"][:1]
    by_key = {}
    for i in range(60):
        key = f"k{i}"
        resp = stub.Predict(predict_request("m", {"x": x}), metadata=[("x-user-id", key)])
        by_key[key] = resp.model_spec.version.value
        expected = 2 if routing_hash("m", key, s.rollout_id) < 0.5 else 1
        assert by_key[key] == expected
        for version, label in ((1, None), (2, None), (None, "stable"), (None, "canary")):
            pinned = stub.Predict(
                predict_request("m", {"x": x}, version=version, label=label),
                metadata=[("x-user-id", key)],
            )
            assert pinned.model_spec.version.value == (version or {"stable": 1, "canary": 2}[label])
    assert set(by_key.values()) == {1, 2}
    # explicit requests are not part of the experiment's statistics
    status = admin.GetRollout(admin_pb2.GetRolloutRequest(model="m"))
    assert status.primary.requests + status.canary.requests == 60


def test_feature_skew_of_the_canary_rolls_back(seed_bundle, tmp_path, gateway_factory):
    """Both versions ship training statistics (x in [1, 3]); the canary's traffic drifts
    (x in [2.5, 4]); the skew gate (JS of the canary's serving window) rolls it back."""
    import numpy as np

    base = tmp_path / "repo" / "m"
    shutil.copytree(seed_bundle["with"] / "1", base / "1")
    shutil.copytree(seed_bundle["with"] / "1", base / "2")
    config = _config(
        tmp_path,
        base,
        gates={**NO_GATES, "max_feature_skew": 0.1},
        steps=[100],  # every keyed request goes to the canary
        min_requests_per_step=10**6,
    )
    model = config["models"][0]
    model["skew"] = {"window_values": 1000, "min_values": 50}
    del model["divergence"]
    gw = gateway_factory(config)
    admin = _admin(gw)
    admin.UpdateRollout(Action(model="m", action=Action.START))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    rng = np.random.default_rng(5)
    sent: list[Any] = []  # the rollout status after each drifted request

    def left_running() -> Any:
        x = rng.uniform(2.5, 4, size=(5, 1)).astype(np.float32)
        key = f"u{len(sent)}"
        resp = stub.Predict(predict_request("m", {"x": x}), metadata=[("x-user-id", key)])
        assert resp.model_spec.version.value in (1, 2)
        sent.append(admin.GetRollout(admin_pb2.GetRolloutRequest(model="m")))
        return sent[-1] if sent[-1].status != "running" else None

    # drifted traffic until the controller (ticking every 0.05 s) ends the rollout
    status = wait_until(
        left_running,
        60,
        "the rollout to leave `running` under drifted traffic",
        seen=lambda: f"{len(sent)} requests sent, last status {sent[-1:]}",
    )
    assert status is not None and status.status == "rolled_back", status
    assert status.failed_gate.startswith("feature_skew="), status.failed_gate
    assert float(status.failed_gate.split("=")[1].split()[0]) > 0.1
    assert status.history[-1].action == "rollback" and "feature_skew" in status.history[-1].reason


def test_tf_serving_reload_keeps_the_rollout_and_refuses_broken_labels(
    shadow_models, tmp_path, gateway_factory
):
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
    from tensorflow_serving.config import model_server_config_pb2

    base = _repo(tmp_path, {1: shadow_models["a"], 2: shadow_models["a"]})
    gw = gateway_factory(_config(tmp_path, base))
    ms = model_service_pb2_grpc.ModelServiceStub(gw.channel)

    def reload(labels):
        cfg = model_server_config_pb2.ModelServerConfig()
        mc = cfg.model_config_list.config.add(name="m", base_path=str(base))
        mc.model_version_policy.all.SetInParent()
        for label, version in labels.items():
            mc.version_labels[label] = version
        return ms.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=cfg))

    assert reload({"stable": 1, "canary": 2}).status.error_code == 0
    # TF Serving's config says where and which versions; the rollout block is kept
    status = _admin(gw).GetRollout(admin_pb2.GetRolloutRequest(model="m"))
    assert (status.primary_version, status.candidate_version) == (1, 2)
    with pytest.raises(grpc.RpcError) as err:
        reload({"stable": 1})
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "config.model_config_list.config[0]" in err.value.details()
    assert "rollout.candidate: label 'canary'" in err.value.details()
