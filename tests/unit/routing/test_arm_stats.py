"""Per-arm step statistics."""

from __future__ import annotations

import math
import random

import pytest

from gateway.routing.arm_stats import (
    SERVER_ERROR_CODES,
    ArmStats,
    LatencyHistogram,
    StepStats,
    is_server_error,
)
from gateway.routing.router import Arm


@pytest.mark.parametrize(
    ("code", "server"),
    [
        ("INTERNAL", True),
        ("UNAVAILABLE", True),
        ("DEADLINE_EXCEEDED", True),
        ("RESOURCE_EXHAUSTED", True),
        ("UNKNOWN", True),
        ("OK", False),
        ("INVALID_ARGUMENT", False),
        ("NOT_FOUND", False),
        ("FAILED_PRECONDITION", False),
        ("UNIMPLEMENTED", False),
        ("UNAUTHENTICATED", False),
        ("PERMISSION_DENIED", False),
    ],
)
def test_server_error_classification(code, server):
    assert is_server_error(code) is server
    arm = ArmStats()
    arm.record(code, 0.01)
    assert arm.requests == 1
    assert arm.errors == int(server)
    assert arm.client_errors == int(not server and code != "OK")
    assert arm.latency.count == int(code == "OK")  # latency of successful requests only


def test_counts_and_rates():
    arm = ArmStats()
    assert arm.error_rate is None and arm.divergence_rate is None and arm.p99() is None
    for _ in range(95):
        arm.record("OK", 0.010)
    for _ in range(3):
        arm.record("INVALID_ARGUMENT", 0.001)
    arm.record("INTERNAL", 0.5)
    arm.record("UNAVAILABLE", 0.5)
    assert (arm.requests, arm.errors, arm.client_errors) == (100, 2, 3)
    assert arm.errors_by_code == {"INTERNAL": 1, "UNAVAILABLE": 1}
    assert arm.error_rate == 0.02
    arm.record_comparison(True)
    arm.record_comparison(False)
    arm.record_comparison(False)
    arm.record_comparison(False)
    assert (arm.compared, arm.diverged, arm.divergence_rate) == (4, 1, 0.25)
    d = arm.to_dict()
    assert d["requests"] == 100 and d["errors_by_code"] == {"INTERNAL": 1, "UNAVAILABLE": 1}
    assert d["p99_seconds"] == pytest.approx(0.010, rel=0.03)


def test_feature_skew_keeps_max_and_ignores_nan():
    arm = ArmStats()
    assert arm.max_feature_skew is None
    arm.record_skew(0.05)
    arm.record_skew(float("nan"))
    arm.record_skew(0.2)
    arm.record_skew(0.1)
    assert arm.max_feature_skew == 0.2


def test_percentiles_within_bucket_error():
    rng = random.Random(1)
    values = [rng.lognormvariate(math.log(0.02), 0.6) for _ in range(20_000)]
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    values.sort()
    for q in (0.5, 0.9, 0.99):
        exact = values[math.ceil(q * len(values)) - 1]
        assert h.percentile(q) == pytest.approx(exact, rel=0.025)
    assert h.percentile(0.0) == pytest.approx(values[0], rel=0.025)
    assert h.percentile(1.0) == values[-1]


def test_percentile_edges():
    h = LatencyHistogram()
    assert h.percentile(0.99) is None
    h.record(0.0123)
    assert h.percentile(0.5) == 0.0123  # clamped to the exact min / max
    h.record(0.0)
    h.record(1e9)  # beyond the last bucket: still counted, max exact
    assert h.percentile(1.0) == 1e9
    h.record(math.inf)
    assert h.count == 4
    with pytest.raises(ValueError):
        h.record(-0.001)
    with pytest.raises(ValueError):
        h.record(float("nan"))
    with pytest.raises(ValueError):
        h.percentile(1.5)


def test_merge():
    a, b = ArmStats(), ArmStats()
    a.record("OK", 0.01)
    a.record("INTERNAL", 0.01)
    b.record("OK", 0.02)
    b.record("INTERNAL", 0.01)
    b.record_comparison(True)
    b.record_skew(0.3)
    a.merge(b)
    assert (a.requests, a.errors, a.latency.count, a.compared, a.diverged) == (4, 2, 2, 1, 1)
    assert a.errors_by_code == {"INTERNAL": 2}
    assert a.max_feature_skew == 0.3
    assert a.latency.max == 0.02


def test_step_stats_record_and_reset():
    s = StepStats(started_at=100.0, step="t1")
    s.record(Arm.PRIMARY, "OK", 0.01)
    s.record(Arm.CANARY, "INTERNAL", 0.01)
    s.arm(Arm.CANARY).record_comparison(True)
    assert s.primary.requests == 1 and s.canary.errors == 1 and s.canary.compared == 1
    assert s.elapsed(130.0) == 30.0
    old_primary = s.primary
    s.reset(200.0, "t2")
    assert (s.started_at, s.step) == (200.0, "t2")
    assert s.primary.requests == 0 and s.canary.requests == 0
    assert s.previous_primary is old_primary
    s.reset(300.0)  # empty primary keeps the older reference
    assert s.previous_primary is old_primary
    assert s.to_dict()["previous_primary"]["requests"] == 1


def test_record_is_constant_time_enough():
    # 200k records well under a second: O(1) per call, no per-sample storage.
    arm = ArmStats()
    for i in range(200_000):
        arm.record("OK", 0.001 + (i % 100) * 1e-4)
    assert arm.requests == 200_000


def test_server_error_codes_constant():
    assert (
        frozenset({"INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN"})
        == SERVER_ERROR_CODES
    )


def test_bad_latency_counts_nothing():
    arm = ArmStats()
    with pytest.raises(ValueError):
        arm.record("OK", -1.0)
    assert arm.requests == 0 and arm.latency.count == 0
