"""Router: deterministic keyed split, monotone in the percentage, random keyless split."""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing.rollout import RolloutState, Status, start
from gateway.routing.router import (
    Arm,
    RouteDecision,
    choose_arm,
    decide,
    key_hash_hex,
    routing_hash,
)
from tests.unit.routing.plans import plan

ROLLOUT = "demo/2/1"

# Pinned: these must never change, or every user would switch arms on upgrade.
PINNED = [
    ("user-1", 0.0006710892610686248),
    ("user-2", 0.6817042178346399),
    ("alice", 0.9406201717274902),
    ("42", 0.008037115652007487),
    ("ünïcode", 0.46600194757957125),
]


class NoRandom(random.Random):
    """An rng that fails the test if the keyed path touches it."""

    def random(self) -> float:
        raise AssertionError("keyed routing must not use the rng")


@pytest.mark.parametrize(("key", "expected"), PINNED)
def test_routing_hash_is_pinned(key, expected):
    assert routing_hash("demo", key, ROLLOUT) == expected


def _reference_hash(model: str, key: str, rollout_id: str) -> float:
    """Independent re-statement of the spec: length-prefixed parts, sha256, first 8 bytes."""

    def part(b: bytes) -> bytes:
        return len(b).to_bytes(8, "big") + b

    data = part(b"tf-gateway/route/v1") + b"".join(
        part(s.encode()) for s in (model, key, rollout_id)
    )
    u = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
    return (u >> 11) / 2**53


@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
@settings(max_examples=200, deadline=None)
def test_routing_hash_matches_spec_and_is_in_unit_interval(model, key, rollout_id):
    h = routing_hash(model, key, rollout_id)
    assert 0.0 <= h < 1.0
    assert h == _reference_hash(model, key, rollout_id)


def test_encoding_is_unambiguous():
    assert routing_hash("ab", "c", "x") != routing_hash("a", "bc", "x")
    assert routing_hash("a", "b", "cx") != routing_hash("a", "bc", "x")


def test_largest_uint64_stays_below_one():
    # float(2**64 - 1) / 2**64 would be exactly 1.0; the 53-bit truncation avoids it
    assert ((2**64 - 1) >> 11) / 2**53 < 1.0


def test_same_key_same_arm_across_fresh_processes(tmp_path: Path):
    code = (
        "from gateway.routing.router import routing_hash\n"
        f"for k, _ in {PINNED!r}:\n"
        f"    print(repr(routing_hash('demo', k, {ROLLOUT!r})))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert [float(v) for v in out] == [v for _, v in PINNED]


def test_same_key_same_arm_on_every_call():
    for key, _ in PINNED:
        arms = {choose_arm("demo", key, ROLLOUT, 25.0, NoRandom()) for _ in range(20)}
        assert len(arms) == 1


def test_pinned_arms():
    # user-1 (0.00067) and 42 (0.008) are canary at 1 %; alice (0.94) only at 100 %.
    assert choose_arm("demo", "user-1", ROLLOUT, 1, NoRandom()) is Arm.CANARY
    assert choose_arm("demo", "42", ROLLOUT, 1, NoRandom()) is Arm.CANARY
    assert choose_arm("demo", "user-2", ROLLOUT, 50, NoRandom()) is Arm.PRIMARY
    assert choose_arm("demo", "alice", ROLLOUT, 94, NoRandom()) is Arm.PRIMARY
    assert choose_arm("demo", "alice", ROLLOUT, 95, NoRandom()) is Arm.CANARY


def test_rollout_id_and_model_reshuffle_keys():
    keys = [f"u{i}" for i in range(2000)]
    a = {k for k in keys if routing_hash("demo", k, "demo/2/1") < 0.25}
    b = {k for k in keys if routing_hash("demo", k, "demo/2/2") < 0.25}
    c = {k for k in keys if routing_hash("other", k, "demo/2/1") < 0.25}
    assert a != b and a != c
    assert 0.15 < len(a & b) / len(a) < 0.35  # independent: overlap ~ 25 %


@given(
    st.text(min_size=1, max_size=30),
    st.floats(0, 100),
    st.floats(0, 100),
)
@settings(max_examples=300, deadline=None)
def test_monotone_in_percentage(key, p1, p2):
    lo, hi = sorted((p1, p2))
    if choose_arm("m", key, "r", lo, NoRandom()) is Arm.CANARY:
        assert choose_arm("m", key, "r", hi, NoRandom()) is Arm.CANARY


def test_zero_and_hundred_percent():
    for key, _ in PINNED:
        assert choose_arm("demo", key, ROLLOUT, 0, NoRandom()) is Arm.PRIMARY
        assert choose_arm("demo", key, ROLLOUT, 100, NoRandom()) is Arm.CANARY
    rng = random.Random(1)
    assert all(choose_arm("m", None, "r", 0, rng) is Arm.PRIMARY for _ in range(1000))
    assert all(choose_arm("m", None, "r", 100, rng) is Arm.CANARY for _ in range(1000))


@pytest.mark.parametrize("percent", [1.0, 5.0, 25.0, 50.0])
def test_observed_keyed_split_within_5_sigma(percent):
    n = 100_000
    p = percent / 100
    canary = sum(routing_hash("demo", f"user-{i}", ROLLOUT) < p for i in range(n))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(canary - n * p) <= 5 * sigma, (canary, n * p, sigma)


def test_keyless_split_uses_rng():
    rng = random.Random(7)
    expected_draws = random.Random(7)
    arms = [choose_arm("demo", None, ROLLOUT, 30, rng) for _ in range(1000)]
    expected = [Arm.CANARY if expected_draws.random() < 0.30 else Arm.PRIMARY for _ in range(1000)]
    assert arms == expected
    n = 20_000
    rng = random.Random(3)
    canary = sum(choose_arm("demo", None, ROLLOUT, 30, rng) is Arm.CANARY for _ in range(n))
    assert abs(canary - 0.3 * n) <= 5 * math.sqrt(n * 0.3 * 0.7)


def test_empty_key_is_keyless():
    rng = random.Random(0)
    arms = {choose_arm("demo", "", ROLLOUT, 50, rng) for _ in range(200)}
    assert arms == {Arm.PRIMARY, Arm.CANARY}


@pytest.mark.parametrize("bad", [-1, 100.5, float("nan")])
def test_bad_percentage(bad):
    with pytest.raises(ValueError, match="canary_percent"):
        choose_arm("demo", "k", ROLLOUT, bad, random.Random())


def test_key_hash_hex():
    h = key_hash_hex("demo", "user-1")
    assert h == "670f53ff6acaa587"
    assert len(h) == 16 and int(h, 16) >= 0
    assert key_hash_hex("demo", "user-1") == h
    assert key_hash_hex("other", "user-1") != h  # salted with the model
    assert "user-1" not in h
    assert int(h[:13], 16) / 2**52 != routing_hash("demo", "user-1", ROLLOUT)


# ------------------------------------------------------------------ decide

PLAN = plan(steps=[10.0, 100.0])


def _state(status: Status, weight: float = 10.0) -> RolloutState:
    running, _ = start(RolloutState.new("demo", PLAN), PLAN, 0.0)
    return RolloutState(
        rollout_id=running.rollout_id,
        model="demo",
        primary=1,
        candidate=2,
        status=status,
        step_index=0,
        weight=weight,
        step_started_at=0.0,
    )


def test_decide_no_state_is_primary_default_version():
    assert decide(None, "k", None, NoRandom()) == RouteDecision(Arm.PRIMARY, None, "no_rollout")


@pytest.mark.parametrize("status", [Status.PENDING, Status.ROLLED_BACK])
def test_decide_inactive_is_primary(status):
    d = decide(None, "user-1", _state(status), NoRandom())
    assert d == RouteDecision(Arm.PRIMARY, 1, "no_rollout")
    assert not d.in_experiment


def test_decide_after_promotion_serves_new_primary():
    state = _state(Status.PROMOTED, 100.0)
    state = replace(state, primary=2)
    assert decide(None, "user-1", state, NoRandom()) == RouteDecision(Arm.PRIMARY, 2, "no_rollout")


@pytest.mark.parametrize("status", [Status.RUNNING, Status.PAUSED])
def test_decide_keyed_split(status):
    state = _state(status, 10.0)
    assert decide(None, "user-1", state, NoRandom()) == RouteDecision(Arm.CANARY, 2, "keyed")
    assert decide(None, "alice", state, NoRandom()) == RouteDecision(Arm.PRIMARY, 1, "keyed")
    # consistent with choose_arm and the state's rollout id
    for key in ("user-1", "user-2", "alice", "42"):
        arm = choose_arm("demo", key, state.rollout_id, 10.0, NoRandom())
        assert decide(None, key, state, NoRandom()).arm is arm


def test_decide_keyless_uses_rng():
    state = _state(Status.RUNNING, 50.0)
    rng = random.Random(5)
    decisions = [decide(None, None, state, rng) for _ in range(200)]
    assert {d.reason for d in decisions} == {"random"}
    assert {d.arm for d in decisions} == {Arm.PRIMARY, Arm.CANARY}
    assert all(d.version == (2 if d.arm is Arm.CANARY else 1) for d in decisions)
    assert all(d.in_experiment for d in decisions)


@pytest.mark.parametrize(
    ("status", "version", "arm"),
    [
        (Status.RUNNING, 2, Arm.CANARY),
        (Status.RUNNING, 1, Arm.PRIMARY),
        (Status.RUNNING, 7, Arm.PRIMARY),
        (Status.ROLLED_BACK, 2, Arm.PRIMARY),
    ],
)
def test_decide_explicit_version_bypasses_split(status, version, arm):
    state = _state(status, 100.0)  # 100 %: any split would say canary
    d = decide(version, "alice", state, NoRandom())
    assert d == RouteDecision(arm, version, "explicit")
    assert not d.in_experiment
    assert decide(version, None, None, NoRandom()) == RouteDecision(
        Arm.PRIMARY, version, "explicit"
    )
