"""The rollout state machine, as tables."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from gateway.config import GatesConfig, RolloutConfig
from gateway.core.errors import ConfigError
from gateway.routing import rollout as ro
from gateway.routing.arm_stats import ArmStats, StepStats
from gateway.routing.gates import Gates
from gateway.routing.rollout import (
    Decision,
    InvalidTransition,
    RolloutPlan,
    RolloutState,
    RoutingKey,
    Status,
)
from gateway.routing.router import Arm, decide
from tests.unit.routing import plans

GATES = plans.gates(
    max_divergence_rate=0.02,
    max_error_rate_ratio=1.5,
    max_p99_latency_ratio=1.3,
    max_feature_skew=0.1,
)
PLAN = plans.plan(
    candidate=2,
    primary=1,
    steps=[1.0, 5.0, 25.0, 50.0, 100.0],
    min_requests_per_step=500,
    min_step_seconds=60.0,
    gates=GATES.to_dict(),
    on_failure="rollback",
    routing_key={"header": "x-user-id"},
)
T0 = 1_700_000_000.0


def running(weight: float = 1.0, started: float = T0) -> RolloutState:
    state, _ = ro.start(RolloutState.new("demo", PLAN), PLAN, started)
    if weight != state.weight:
        state = replace(state, weight=weight, step_index=PLAN.step_index_of(weight))
    return state


def stats(
    state: RolloutState,
    *,
    canary: int = 500,
    canary_errors: int = 0,
    primary: int = 5000,
    primary_errors: int = 0,
    canary_latency: float = 0.010,
    compared: int = 200,
    diverged: int = 0,
    skew: float | None = 0.05,
    previous: ArmStats | None = None,
    step: str | None = None,
) -> StepStats:
    s = StepStats(started_at=state.step_started_at or T0, step=state.step_token)
    if step is not None:
        s.step = step
    for i in range(primary):
        s.primary.record("INTERNAL" if i < primary_errors else "OK", 0.010)
    for i in range(canary):
        s.canary.record("INTERNAL" if i < canary_errors else "OK", canary_latency)
    for i in range(compared):
        s.canary.record_comparison(i < diverged)
    if skew is not None:
        s.canary.record_skew(skew)
    s.previous_primary = previous
    return s


def baseline() -> ArmStats:
    a = ArmStats()
    for _ in range(5000):
        a.record("OK", 0.010)
    return a


# name, weight, elapsed seconds, stats kwargs, on_failure,
# expected action, status, weight, text expected in the reason
TICK_CASES = [
    ("advance 1 -> 5", 1, 60, {}, "rollback", "advance", Status.RUNNING, 5, "next 5%"),
    ("advance 50 -> 100", 50, 61, {}, "rollback", "advance", Status.RUNNING, 100, "next 100%"),
    ("hold for time", 1, 30, {}, "rollback", "hold", Status.RUNNING, 1, "step time 30/60 s"),
    (
        "hold for requests",
        1,
        600,
        {"canary": 499},
        "rollback",
        "hold",
        Status.RUNNING,
        1,
        "canary requests 499/500",
    ),
    (
        "hold for time and requests",
        5,
        0,
        {"canary": 10},
        "rollback",
        "hold",
        Status.RUNNING,
        5,
        "step time 0/60 s; canary requests 10/500",
    ),
    (
        "hold for compared samples",
        1,
        60,
        {"compared": 50},
        "rollback",
        "hold",
        Status.RUNNING,
        1,
        "divergence_rate: 50/100 compared canary answers",
    ),
    (
        "hold for skew report",
        1,
        60,
        {"skew": None},
        "rollback",
        "hold",
        Status.RUNNING,
        1,
        "feature_skew: no feature skew reported",
    ),
    (
        "hold on stale stats",
        1,
        60,
        {"step": "other"},
        "rollback",
        "hold",
        Status.RUNNING,
        1,
        "another step",
    ),
    (
        "rollback on error ratio",
        5,
        60,
        {"canary_errors": 10},
        "rollback",
        "rollback",
        Status.ROLLED_BACK,
        0,
        "error_rate_ratio=10 > 1.5",
    ),
    (
        "rollback fails fast mid-step",
        5,
        5,
        {"canary": 100, "compared": 100, "diverged": 10},
        "rollback",
        "rollback",
        Status.ROLLED_BACK,
        0,
        "divergence_rate=0.1 > 0.02",
    ),
    (
        "rollback on latency",
        25,
        60,
        {"canary_latency": 0.020},
        "rollback",
        "rollback",
        Status.ROLLED_BACK,
        0,
        "p99_latency_ratio=2 > 1.3",
    ),
    (
        "rollback on skew",
        1,
        60,
        {"skew": 0.3},
        "rollback",
        "rollback",
        Status.ROLLED_BACK,
        0,
        "feature_skew=0.3 > 0.1",
    ),
    (
        "pause on failure keeps weight",
        5,
        60,
        {"canary_errors": 10},
        "pause",
        "pause",
        Status.PAUSED,
        5,
        "error_rate_ratio=10 > 1.5",
    ),
    (
        "promote at 100 % against the previous primary",
        100,
        60,
        {"primary": 0, "previous": "baseline"},
        "rollback",
        "promote",
        Status.PROMOTED,
        100,
        "version 2 is the primary",
    ),
    (
        "hold at 100 % without a primary reference",
        100,
        60,
        {"primary": 0},
        "rollback",
        "hold",
        Status.RUNNING,
        100,
        "no primary reference",
    ),
]


@pytest.mark.parametrize(
    ("name", "weight", "elapsed", "kw", "on_failure", "action", "status", "to_weight", "text"),
    TICK_CASES,
    ids=[c[0] for c in TICK_CASES],
)
def test_tick(name, weight, elapsed, kw, on_failure, action, status, to_weight, text):
    plan = replace(PLAN, on_failure=on_failure)
    state = running(weight)
    kw = dict(kw)
    if kw.get("previous") == "baseline":
        kw["previous"] = baseline()
    now = T0 + elapsed
    new, decision = ro.tick(state, plan, stats(state, **kw), now)
    assert decision is not None
    assert decision.action == action
    assert text in decision.reason
    assert new.status is status
    assert new.weight == to_weight
    assert (decision.from_weight, decision.to_weight) == (weight, to_weight)
    assert decision.actor == "auto" and decision.at == now
    if action == "hold":
        assert new is state  # nothing changed, nothing recorded
    else:
        assert new.history[-1] == decision
        assert len(new.history) == len(state.history) + 1
    if action in ("rollback", "pause"):
        assert new.failed_gate is not None and new.failed_gate in decision.reason
        assert any(not g["passed"] for g in decision.gates)
    if action == "advance":
        assert new.step_started_at == now
        assert new.step_index == plan.steps.index(to_weight)
        assert new.step_token != state.step_token
    if action == "promote":
        assert (new.primary, new.candidate) == (2, 2)
        assert new.failed_gate is None


def test_tick_only_acts_when_running():
    for status in (Status.PENDING, Status.PAUSED, Status.PROMOTED, Status.ROLLED_BACK):
        state = replace(running(), status=status)
        assert ro.tick(state, PLAN, stats(state), T0 + 999) == (state, None)


def test_tick_rejects_plan_for_other_candidate():
    state = running()
    with pytest.raises(ValueError, match="candidate 2, the plan for 3"):
        ro.tick(state, replace(PLAN, candidate=3), stats(state), T0 + 60)


def test_tick_without_gates_uses_time_and_requests_only():
    plan = replace(PLAN, gates=plans.gates(), min_requests_per_step=0, min_step_seconds=0)
    state = running()
    s = StepStats(started_at=T0, step=state.step_token)
    new, decision = ro.tick(state, plan, s, T0)
    assert decision is not None and decision.action == "advance" and decision.gates == ()


def test_tick_elapsed_counts_from_the_state_not_the_stats():
    # after a restart the stats are fresh, but the step keeps its start time
    state = running()
    s = stats(state)
    s.started_at = T0 + 59
    _, decision = ro.tick(state, PLAN, s, T0 + 60)
    assert decision is not None and decision.action == "advance"


# ------------------------------------------------------------------ manual actions

S = Status
ANY = "no-op"
BAD = InvalidTransition

# action, from status, expected: new status | "no-op" | InvalidTransition
MANUAL_CASES = [
    ("pause", S.RUNNING, S.PAUSED),
    ("pause", S.PAUSED, ANY),
    ("pause", S.PENDING, BAD),
    ("pause", S.PROMOTED, BAD),
    ("pause", S.ROLLED_BACK, BAD),
    ("resume", S.PAUSED, S.RUNNING),
    ("resume", S.RUNNING, ANY),
    ("resume", S.PENDING, BAD),
    ("resume", S.ROLLED_BACK, BAD),
    ("promote", S.PENDING, S.PROMOTED),
    ("promote", S.RUNNING, S.PROMOTED),
    ("promote", S.PAUSED, S.PROMOTED),
    ("promote", S.PROMOTED, ANY),
    ("promote", S.ROLLED_BACK, BAD),
    ("rollback", S.PENDING, S.ROLLED_BACK),
    ("rollback", S.RUNNING, S.ROLLED_BACK),
    ("rollback", S.PAUSED, S.ROLLED_BACK),
    ("rollback", S.ROLLED_BACK, ANY),
    ("rollback", S.PROMOTED, BAD),
    ("set_weight", S.RUNNING, S.RUNNING),
    ("set_weight", S.PAUSED, S.PAUSED),
    ("set_weight", S.PENDING, BAD),
    ("set_weight", S.PROMOTED, BAD),
    ("start", S.PENDING, S.RUNNING),
    ("start", S.RUNNING, ANY),
    ("start", S.PAUSED, BAD),
    ("start", S.ROLLED_BACK, BAD),
]


def _apply(action: str, state: RolloutState, now: float):
    if action == "set_weight":
        return ro.set_weight(state, PLAN, 10, now)
    if action == "rollback":
        return ro.rollback(state, now, "operator says no")
    if action == "start":
        return ro.start(state, PLAN, now)
    return getattr(ro, action)(state, now)


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    MANUAL_CASES,
    ids=[f"{a}-{s.value}" for a, s, _ in MANUAL_CASES],
)
def test_manual_actions(action, status, expected):
    base = RolloutState.new("demo", PLAN) if status is S.PENDING else running(5)
    state = replace(base, status=status)
    now = T0 + 100
    if expected is BAD:
        with pytest.raises(InvalidTransition, match=f"it is {status.value}"):
            _apply(action, state, now)
        return
    new, decision = _apply(action, state, now)
    if expected == ANY:
        assert (new, decision) == (state, None)
        return
    assert decision is not None and decision.action == action
    assert decision.actor == ("auto" if action == "start" else "admin")
    assert new.status is expected
    assert new.history[-1] == decision
    expected_weight = {
        "promote": 100.0,
        "rollback": 0.0,
        "set_weight": 10.0,
        "start": 1.0,
    }.get(action, state.weight)
    assert new.weight == expected_weight
    if action == "promote":
        assert new.primary == 2
    if action in ("resume", "set_weight", "start"):
        assert new.step_started_at == now


def test_resume_clears_failed_gate_and_restarts_step():
    state = running(5)
    plan = replace(PLAN, on_failure="pause")
    paused, _ = ro.tick(state, plan, stats(state, canary_errors=10), T0 + 60)
    assert paused.status is S.PAUSED and paused.failed_gate
    resumed, decision = ro.resume(paused, T0 + 500, "false alarm")
    assert decision is not None and decision.reason == "false alarm"
    assert resumed.status is S.RUNNING and resumed.failed_gate is None
    assert resumed.step_started_at == T0 + 500 and resumed.weight == 5


def test_manual_rollback_keeps_failed_gate():
    plan = replace(PLAN, on_failure="pause")
    state = running(5)
    paused, _ = ro.tick(state, plan, stats(state, canary_errors=10), T0 + 60)
    rolled, decision = ro.rollback(paused, T0 + 70, "confirmed bad")
    assert rolled.failed_gate == paused.failed_gate
    assert decision is not None and decision.reason == "confirmed bad"


def test_set_weight_then_advance_to_next_step_above():
    state = running(1)
    state, decision = ro.set_weight(state, PLAN, 10, T0 + 10)
    assert decision is not None and (decision.from_weight, decision.to_weight) == (1, 10)
    assert state.step_index == 1  # largest step <= 10 is 5
    assert ro.set_weight(state, PLAN, 10, T0 + 20) == (state, None)
    new, decision = ro.tick(state, PLAN, stats(state), T0 + 70)
    assert decision is not None and decision.action == "advance" and new.weight == 25


def test_set_weight_to_100_then_promotes():
    state, _ = ro.set_weight(running(5), PLAN, 100, T0)
    new, decision = ro.tick(state, PLAN, stats(state, primary=0, previous=baseline()), T0 + 60)
    assert decision is not None and decision.action == "promote"


@pytest.mark.parametrize("bad", [0, -1, 101, float("nan")])
def test_set_weight_bounds(bad):
    with pytest.raises(ValueError, match="percent"):
        ro.set_weight(running(), PLAN, bad, T0)


def test_start_from_pending():
    pending = RolloutState.new("demo", PLAN)
    assert pending.status is S.PENDING and pending.weight == 0 and not pending.is_active
    state, decision = ro.start(pending, PLAN, T0)
    assert decision is not None and decision.action == "start"
    assert "version 2 against 1" in decision.reason and "1%/5%/25%/50%/100%" in decision.reason
    assert (state.status, state.weight, state.step_index, state.step_started_at) == (
        S.RUNNING,
        1.0,
        0,
        T0,
    )


def test_rollout_id_is_stable_and_counts_attempts():
    first = RolloutState.new("demo", PLAN)
    assert first.rollout_id == "demo/2/1" == RolloutState.new("demo", PLAN).rollout_id
    rolled, _ = ro.rollback(first, T0, "x")
    second = RolloutState.new("demo", PLAN, previous=rolled)
    assert second.rollout_id == "demo/2/2" and second.attempt == 2


def test_history_is_bounded(monkeypatch):
    monkeypatch.setattr(ro, "MAX_HISTORY", 3)
    state = running()
    for i in range(5):
        state, _ = ro.pause(state, T0 + i)
        state, _ = ro.resume(state, T0 + i)
    assert len(state.history) == 3


# ------------------------------------------------------------------ serialisation


def test_state_json_round_trip():
    state = running(5)
    state, _ = ro.tick(state, PLAN, stats(state, canary_errors=10), T0 + 60)
    text = json.dumps(state.to_dict(), allow_nan=False)
    again = RolloutState.from_dict(json.loads(text))
    assert again == state
    assert again.history[-1].gates[1]["name"] == "error_rate_ratio"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("model"), "model: missing"),
        (lambda d: d.update(status="runing"), "status: expected one of"),
        (lambda d: d.update(weight=120), "weight: expected a percentage"),
        (lambda d: d.update(primary="one"), "primary: expected an integer"),
        (lambda d: d.update(schema=9), "schema: expected 1"),
        (lambda d: d["history"][0].update(action="jump"), r"history\[0\]\.action: unknown action"),
        (lambda d: d["history"][0].update(at="noon"), r"history\[0\]\.at: expected a number"),
        (lambda d: d.update(history={}), "history: expected a list"),
    ],
)
def test_state_from_dict_errors_name_the_key(mutate, message):
    d = running().to_dict()
    mutate(d)
    with pytest.raises(ValueError, match=message):
        RolloutState.from_dict(d)


def test_decision_round_trip():
    d = Decision(T0, "set_weight", "why", (), "admin", 1.0, 10.0)
    assert Decision.from_dict(d.to_dict()) == d


# ------------------------------------------------------------------ plan parsing

LABELS = {"stable": 1, "canary": 2}


CONFIG = {
    "candidate": "canary",
    "routing_key": {"header": "X-User-Id"},
    "steps": [1, 5, 25, 50, 100],
    "min_requests_per_step": 500,
    "min_step_seconds": 60,
    "gates": {
        "max_divergence_rate": 0.02,
        "max_error_rate_ratio": 1.5,
        "max_p99_latency_ratio": 1.3,
        "max_feature_skew": 0.1,
    },
    "on_failure": "rollback",
}


def test_plan_from_config():
    plan = RolloutPlan.from_config(plans.model_config(CONFIG, LABELS, primary="stable"))
    assert plan == PLAN
    assert plan.routing_key == RoutingKey("header", "x-user-id")  # lowercased
    assert RolloutPlan.from_config(plans.model_config(plan.to_dict(), LABELS)) == plan
    feature = RolloutPlan.from_config(
        plans.model_config({"candidate": 3, "primary": 1, "routing_key": {"feature": "user_id"}})
    )
    assert feature.routing_key == RoutingKey("feature", "user_id")
    default_steps = tuple(RolloutConfig(candidate=3).steps)
    assert feature.steps == default_steps and feature.gates == Gates.from_config(GatesConfig())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"candidate": None}, r"rollout\.candidate: expected a version number or a label"),
        ({"candidate": "nope"}, r"rollout\.candidate: label 'nope' is not in version_labels"),
        ({"candidate": "stable"}, r"rollout\.candidate: same version as the primary"),
        ({"candidate": True}, r"rollout\.candidate: expected a version number"),
        ({"steps": []}, r"rollout\.steps: expected a non-empty list"),
        ({"steps": [5, 1, 100]}, r"rollout\.steps: steps must increase, got steps\[1\]"),
        ({"steps": [0, 100]}, r"rollout\.steps\[0\]: Input should be greater than 0"),
        ({"steps": [1, 50]}, r"rollout\.steps: the last step must be 100"),
        ({"steps": [1, "x", 100]}, r"rollout\.steps\[1\]: Input should be a valid number"),
        (
            {"min_requests_per_step": -1},
            r"rollout\.min_requests_per_step: Input should be greater than or equal to 0",
        ),
        (
            {"min_requests_per_step": 1.5},
            r"rollout\.min_requests_per_step: Input should be a valid integer",
        ),
        (
            {"min_step_seconds": -5},
            r"rollout\.min_step_seconds: Input should be greater than or equal to 0",
        ),
        ({"on_failure": "explode"}, r"rollout\.on_failure: Input should be 'rollback' or 'pause'"),
        ({"gates": {"max_p99": 1}}, r"rollout\.gates\.max_p99: unknown key"),
        ({"routing_key": {"cookie": "x"}}, r"rollout\.routing_key\.cookie: unknown key"),
        (
            {"routing_key": {"header": "a", "feature": "b"}},
            r"rollout\.routing_key: expected exactly one",
        ),
        (
            {"routing_key": {"header": ""}},
            r"rollout\.routing_key\.header: String should have at least 1 character",
        ),
        ({"routing_key": "x-user-id"}, r"rollout\.routing_key: Input should be a valid dictionary"),
        ({"stepz": [1]}, r"rollout\.stepz: unknown key"),
    ],
)
def test_plan_config_errors_name_the_key(change, message):
    data = {**CONFIG, **change}
    with pytest.raises(ConfigError, match=message):
        plans.parse(data, LABELS, primary="stable")


def test_plan_needs_candidate_and_primary():
    with pytest.raises(ConfigError, match=r"rollout\.candidate: required"):
        plans.parse({}, LABELS, primary=1)
    with pytest.raises(ConfigError, match=r"models\[0\]: rollout\.primary: required"):
        plans.parse({"candidate": 2}, LABELS)


def test_plan_config_validates():
    with pytest.raises(ConfigError, match="steps"):
        plans.parse({"candidate": 2, "primary": 1, "steps": [50.0]})
    with pytest.raises(ConfigError, match="same version"):
        plans.parse({"candidate": 1, "primary": 1})


# ------------------------------------------------------------------ end to end (pure)


def _simulate(canary_error_rate: float, seed: int = 0) -> RolloutState:
    """Drive decide -> record -> tick over simulated traffic, one tick per simulated second."""
    rng = random.Random(seed)
    plan = replace(PLAN, min_requests_per_step=200, min_step_seconds=10)
    state, _ = ro.start(RolloutState.new("demo", plan), plan, T0)
    step_stats = StepStats(started_at=T0, step=state.step_token)
    now = T0
    user = 0
    while state.is_active and now < T0 + 10_000:
        for _ in range(200):  # 200 requests per simulated second
            user += 1
            route = decide(None, f"user-{user % 50_000}", state, rng)
            assert route.in_experiment
            arm = step_stats.arm(route.arm)
            failing = route.arm is Arm.CANARY and rng.random() < canary_error_rate
            arm.record("INTERNAL" if failing else "OK", rng.uniform(0.008, 0.012))
            if route.arm is Arm.CANARY and rng.random() < 0.5:
                arm.record_comparison(diverged=rng.random() < 0.001)
        step_stats.canary.record_skew(0.01)
        now += 1
        new, decision = ro.tick(state, plan, step_stats, now)
        if new is not state:
            state = new
            step_stats.reset(now, state.step_token)
    return state


def test_simulated_healthy_rollout_is_promoted():
    state = _simulate(canary_error_rate=0.0)
    assert state.status is Status.PROMOTED and state.primary == 2
    actions = [d.action for d in state.history]
    assert actions == ["start", "advance", "advance", "advance", "advance", "promote"]
    assert [d.to_weight for d in state.history] == [1, 5, 25, 50, 100, 100]


def test_simulated_failing_canary_is_rolled_back_at_first_step():
    state = _simulate(canary_error_rate=0.05)
    assert state.status is Status.ROLLED_BACK and state.weight == 0
    assert [d.action for d in state.history] == ["start", "rollback"]
    assert state.failed_gate is not None and state.failed_gate.startswith("error_rate_ratio=")


def test_step_token_survives_a_json_round_trip():
    state = replace(running(), weight=5)  # an int weight, as a hand-built state might have
    again = RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.step_token == state.step_token


# ------------------------------------------------------------------ revert and release


def test_promotion_keeps_the_old_primary_until_released_and_can_be_reverted():
    promoted, decision = ro.promote(running(50), T0 + 10, "ship it")
    assert decision is not None and promoted.status is Status.PROMOTED
    assert (promoted.primary, promoted.previous_primary) == (2, 1)
    # revert: the old primary answers again, at once
    reverted, decision = ro.rollback(promoted, T0 + 20, "")
    assert decision is not None and decision.action == "rollback"
    assert "version 1 is the primary again" in decision.reason
    assert (reverted.status, reverted.primary, reverted.previous_primary, reverted.weight) == (
        Status.ROLLED_BACK,
        1,
        None,
        0.0,
    )
    # release: no more revert
    released, decision = ro.release(promoted, T0 + 20)
    assert decision is not None and decision.action == "release"
    assert released.previous_primary is None and released.primary == 2
    assert ro.release(released, T0 + 30) == (released, None)
    with pytest.raises(InvalidTransition, match="released"):
        ro.rollback(released, T0 + 30, "too late")
    with pytest.raises(InvalidTransition, match="it is running"):
        ro.release(running(5), T0)
    # the automatic promotion holds the old primary too, and it survives a round trip
    assert RolloutState.from_dict(promoted.to_dict()) == promoted
