"""The admin service's conversions of typed status objects to its protobufs: every field
of `RolloutStatus` and `LaneSummary` arrives, by attribute access."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from gateway._proto.gateway.v1 import admin_pb2
from gateway.routing.arm_stats import StepStats
from gateway.routing.gates import GateResult
from gateway.routing.rollout import Decision, RolloutState, Status
from gateway.routing.router import Arm
from gateway.routing.status import RolloutStatus
from gateway.serving.lane_summary import LaneSummary
from gateway.transport.admin import (
    HISTORY_LIMIT,
    AdminServicer,
    RolloutControls,
    lane_summary,
    rollout_status,
)
from tests.unit.routing.plans import plan

NOW = 1_700_000_000.0


def _names(message) -> set[str]:
    return {field.name for field, _ in message.ListFields()}


def _all_fields(message_type) -> set[str]:
    return {field.name for field in message_type.DESCRIPTOR.fields}


def _status(**overrides) -> RolloutStatus:
    """A readable status with a non-default value in every field the message carries."""
    the_plan = plan(
        steps=[5, 25, 100],
        min_requests_per_step=300,
        min_step_seconds=45,
        routing_key={"header": "X-User-Id"},
    )
    history = tuple(
        Decision(
            at=NOW + i,
            action="set_weight",
            reason=f"decision {i}",
            actor="admin" if i % 2 else "auto",
            from_weight=float(i),
            to_weight=float(i + 1),
        )
        for i in range(HISTORY_LIMIT + 7)
    )
    state = RolloutState(
        rollout_id="demo/2/3",
        model="demo",
        primary=1,
        candidate=2,
        status=Status.PAUSED,
        step_index=1,
        weight=25.0,
        step_started_at=NOW - 30.5,
        failed_gate="divergence_rate=0.5 > 0.02 (1/2 canary answers diverged)",
        history=history,
        attempt=3,
        previous_primary=7,
    )
    stats = StepStats(started_at=NOW - 30.5, step=state.step_token)
    for seconds in (0.001, 0.002, 0.004):
        stats.record(Arm.PRIMARY, "OK", seconds)
    stats.record(Arm.PRIMARY, "INTERNAL", 0.5)
    stats.record(Arm.PRIMARY, "INVALID_ARGUMENT", 0.0001)
    stats.record(Arm.CANARY, "OK", 0.003)
    stats.record(Arm.CANARY, "OK", 0.006)
    stats.record(Arm.CANARY, "UNAVAILABLE", 0.1)
    stats.record(Arm.CANARY, "NOT_FOUND", 0.0002)
    for diverged in (True, False, False):
        stats.primary.record_comparison(diverged)
        stats.canary.record_comparison(not diverged)
    stats.primary.record_skew(0.01)
    stats.canary.record_skew(0.07)
    gates = (
        GateResult("divergence_rate", 2 / 3, 0.02, False, "2/3 canary answers diverged"),
        GateResult("p99_latency_ratio", None, 1.3, True, "waiting for latency samples", False),
        GateResult("error_rate_ratio", math.inf, 1.5, False, "canary 1/4 server errors"),
    )
    fields = dict(
        model="demo",
        replica="gw-a",
        state=state,
        plan=the_plan,
        stats=stats,
        gates=gates,
        waiting_for="waiting for step time 14/45 s",
        missing="candidate version 2 is not available",
        replicas=(("gw-a", stats), ("gw-b", stats)),
        store="redis",
        store_up=True,
    )
    return RolloutStatus(**{**fields, **overrides})


def test_rollout_status_round_trips_every_field():
    status = _status()
    st, the_plan, stats = status.state, status.plan, status.stats
    out = rollout_status(status)

    assert _names(out) == _all_fields(admin_pb2.RolloutStatus) - {"error"}
    assert out.model == "demo"
    assert out.replica == "gw-a"
    assert [r.replica for r in out.replicas] == ["gw-a", "gw-b"]
    assert out.replicas[1].canary.requests == stats.canary.requests
    assert (out.store, out.store_up) == ("redis", True)
    assert out.rollout_id == "demo/2/3"
    assert out.status == "paused"
    assert (out.primary_version, out.candidate_version, out.previous_primary) == (1, 2, 7)
    assert out.weight == 25.0
    assert list(out.steps) == [5.0, 25.0, 100.0]
    assert out.step_index == 1
    assert out.step_started_at == NOW - 30.5
    assert out.min_requests_per_step == 300
    assert out.min_step_seconds == 45.0
    assert out.failed_gate == st.failed_gate
    assert out.waiting_for == "waiting for step time 14/45 s"
    assert out.missing == "candidate version 2 is not available"
    assert out.routing_key == "header:x-user-id"

    for message, arm in ((out.primary, stats.primary), (out.canary, stats.canary)):
        assert _names(message) == _all_fields(admin_pb2.ArmSummary)
        assert message.requests == arm.requests
        assert message.errors == arm.errors == 1
        assert message.client_errors == arm.client_errors == 1
        assert message.error_rate == pytest.approx(arm.error_rate)
        assert message.p50_ms == pytest.approx(arm.p50() * 1e3)
        assert message.p99_ms == pytest.approx(arm.p99() * 1e3)
        assert (message.compared, message.diverged) == (arm.compared, arm.diverged)
        assert message.divergence_rate == pytest.approx(arm.divergence_rate)
        assert message.max_feature_skew == pytest.approx(arm.max_feature_skew)
    assert (out.primary.requests, out.canary.requests) == (5, 4)

    assert [g.name for g in out.gates] == [g.name for g in status.gates]
    judged, waiting, infinite = out.gates
    assert _names(judged) == _all_fields(admin_pb2.GateStatus) - {"passed"}  # False
    assert judged.value == pytest.approx(2 / 3)
    assert (judged.threshold, judged.passed, judged.judged) == (0.02, False, True)
    assert judged.detail == "2/3 canary answers diverged"
    assert math.isnan(waiting.value) and not waiting.judged and waiting.passed
    assert waiting.detail == "waiting for latency samples"
    assert math.isnan(infinite.value)  # not finite: shown as absent, like None

    assert len(out.history) == HISTORY_LIMIT
    for message, decision in zip(out.history, st.history[-HISTORY_LIMIT:], strict=True):
        assert _names(message) == _all_fields(admin_pb2.RolloutDecision)
        assert (message.at, message.action, message.actor, message.reason) == (
            decision.at,
            decision.action,
            decision.actor,
            decision.reason,
        )
        assert (message.from_weight, message.to_weight) == (
            decision.from_weight,
            decision.to_weight,
        )
    assert the_plan.routing_key is not None


def test_rollout_status_without_data_shows_absent_figures():
    status = _status(
        plan=plan(),
        stats=StepStats(started_at=NOW),
        state=RolloutState.new("demo", plan()),
        gates=(),
        waiting_for="",
        missing="",
    )
    out = rollout_status(status)
    assert (out.status, out.step_started_at, out.failed_gate, out.previous_primary) == (
        "pending",
        0.0,
        "",
        0,
    )
    assert out.routing_key == ""  # keyless: random split
    for arm in (out.primary, out.canary):
        assert arm.requests == 0
        assert all(
            math.isnan(getattr(arm, name))
            for name in ("error_rate", "p50_ms", "p99_ms", "divergence_rate", "max_feature_skew")
        )


def test_an_unreadable_rollout_carries_only_its_error():
    out = rollout_status(RolloutStatus.unreadable("demo", "state file is not JSON"))
    assert _names(out) == {"model", "error"}
    assert (out.model, out.error) == ("demo", "state file is not JSON")


def test_a_status_is_either_readable_or_unreadable():
    with pytest.raises(AssertionError):
        RolloutStatus(model="demo")
    with pytest.raises(AssertionError):
        _status(error="both")


def test_to_dict_is_each_piece_as_json():
    status = _status()
    assert status.to_dict() == {
        "model": "demo",
        "replica": "gw-a",
        "state": status.state.to_dict(),
        "plan": status.plan.to_dict(),
        "stats": status.stats.to_dict(),
        "gates": [g.to_dict() for g in status.gates],
        "waiting_for": status.waiting_for,
        "missing": status.missing,
        "replicas": {"gw-a": status.stats.to_dict(), "gw-b": status.stats.to_dict()},
        "store": "redis",
        "store_up": True,
    }
    assert RolloutStatus.unreadable("demo", "bad").to_dict() == {"model": "demo", "error": "bad"}


def _lane() -> LaneSummary:
    return LaneSummary(
        lane="shadow:canary",
        comparison="shadow",
        target="canary",
        shadow_version=2,
        offered=100,
        compared=90,
        diverged=9,
        divergence_rate=0.1,
        label_flips=3,
        within_noise=4,
        errors=5,
        timeouts=6,
        dropped=7,
        suppressed=8,
        suspended=True,
        queued=11,
        mean_latency_ms=1.25,
        max_abs={"probabilities": 0.5, "logits": 2.0},
        noise_samples=12,
        deterministic=False,
    )


def test_lane_summary_round_trips_every_field():
    lane = _lane()
    out = admin_pb2.LaneSummary()
    lane_summary(out, lane)
    fields = {f.name for f in dataclasses.fields(LaneSummary)}
    assert fields == _all_fields(admin_pb2.LaneSummary)
    assert _names(out) == fields - {"deterministic"}  # False is the proto default
    for name in fields - {"max_abs"}:
        assert getattr(out, name) == pytest.approx(getattr(lane, name)), name
    assert dict(out.max_abs) == lane.max_abs


class FakeContext:
    def invocation_metadata(self):
        return ()

    def set_trailing_metadata(self, trailing):
        pass

    async def abort(self, code, details, trailing_metadata=()):
        raise AssertionError(f"aborted: {code} {details}")


class FakeMetrics:
    def observe_request(self, method, model, version, code, seconds, protocol):
        pass


class FakeRollouts:
    """A `RolloutControls` that answers with one fixed status."""

    def __init__(self, status: RolloutStatus) -> None:
        self.status_ = status
        self.acted: list[tuple[str, str, float | None, str]] = []

    def status(self, name: str) -> RolloutStatus:
        return self.status_

    async def act(
        self, name: str, action: str, weight: float | None = None, reason: str = ""
    ) -> RolloutStatus:
        self.acted.append((name, action, weight, reason))
        return self.status_


def _servicer(rollouts: RolloutControls | None = None, lanes=()) -> AdminServicer:
    async def reload():
        return []

    return AdminServicer(
        None,  # the manager: not used by these RPCs
        FakeMetrics(),
        reload,
        lambda model: {},
        lambda model: list(lanes),
        rollouts,
    )


def test_the_rollout_rpcs_answer_with_the_converted_status():
    status = _status()
    rollouts = FakeRollouts(status)
    admin = _servicer(rollouts)
    got = asyncio.run(admin.GetRollout(admin_pb2.GetRolloutRequest(model="demo"), FakeContext()))
    assert got == rollout_status(status)
    request = admin_pb2.UpdateRolloutRequest(
        model="demo", action=admin_pb2.UpdateRolloutRequest.SET_WEIGHT, weight=30, reason="r"
    )
    assert asyncio.run(admin.UpdateRollout(request, FakeContext())) == rollout_status(status)
    assert rollouts.acted == [("demo", "set_weight", 30.0, "r")]


def test_the_divergence_summary_rpc_converts_each_lane():
    lane = _lane()
    admin = _servicer(lanes=[lane, dataclasses.replace(lane, lane="noise", comparison="noise")])
    got = asyncio.run(
        admin.GetDivergenceSummary(
            admin_pb2.GetDivergenceSummaryRequest(model="demo"), FakeContext()
        )
    )
    expected = admin_pb2.LaneSummary()
    lane_summary(expected, lane)
    assert got.model == "demo"
    assert [entry.lane for entry in got.lanes] == ["shadow:canary", "noise"]
    assert got.lanes[0] == expected
