"""Gates, including the small-number edge cases."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import GatesConfig, MinSamplesConfig
from gateway.core.errors import ConfigError
from gateway.routing.arm_stats import ArmStats, StepStats
from gateway.routing.gates import GateResult, Gates, MinSamples, evaluate
from tests.unit.routing.plans import gates, parse

ALL = gates(
    max_divergence_rate=0.02,
    max_error_rate_ratio=1.5,
    max_p99_latency_ratio=1.3,
    max_feature_skew=0.1,
)


def arm(requests: int = 0, errors: int = 0, latency: float = 0.010, client_errors: int = 0):
    a = ArmStats()
    for _ in range(requests - errors - client_errors):
        a.record("OK", latency)
    for _ in range(errors):
        a.record("INTERNAL", latency)
    for _ in range(client_errors):
        a.record("INVALID_ARGUMENT", 0.0001)
    return a


def step(primary: ArmStats | None = None, canary: ArmStats | None = None, previous=None):
    s = StepStats(started_at=0.0)
    s.primary = primary or ArmStats()
    s.canary = canary or ArmStats()
    s.previous_primary = previous
    return s


def one(gates: Gates, stats: StepStats, mins: MinSamples | None = None) -> GateResult:
    (result,) = evaluate(gates, stats, mins)
    return result


ERR = gates(max_error_rate_ratio=1.5)

# (name, primary (requests, errors), canary (requests, errors), expected value or None, passed)
ERROR_CASES = [
    ("canary 0 errors passes with no primary at all", None, (10, 0), 0.0, True),
    ("canary 0 errors passes at once", (10000, 50), (1, 0), 0.0, True),
    ("one error never fails (primary 0 errors)", (10000, 0), (500, 1), 1.0, True),
    ("primary 0 errors: value = canary error count", (10000, 0), (500, 2), 2.0, False),
    ("floor 1/canary beats the tiny primary rate", (10000, 1), (500, 1), 1.0, True),
    ("real ratio once the primary rate is above the floor", (10000, 100), (1000, 15), 1.5, True),
    ("real ratio failing", (10000, 100), (1000, 16), 1.6, False),
    ("canary errors, too few canary requests: not judged", (10000, 0), (49, 5), None, True),
    ("canary errors, no primary reference: not judged", (99, 0), (500, 5), None, True),
    ("both arms 100 % errors: ratio 1", (1000, 1000), (500, 500), 1.0, True),
]


@pytest.mark.parametrize(
    ("name", "primary", "canary", "value", "passed"),
    ERROR_CASES,
    ids=[c[0] for c in ERROR_CASES],
)
def test_error_rate_ratio(name, primary, canary, value, passed):
    p = arm(*primary) if primary else None
    result = one(ERR, step(p, arm(*canary)))
    assert result.name == "error_rate_ratio"
    assert result.passed is passed
    if value is None:
        assert result.value is None and not result.judged
    else:
        assert result.judged and result.value == pytest.approx(value)


def test_client_errors_never_count():
    result = one(ERR, step(arm(1000, 0), arm(1000, 0, client_errors=900)))
    assert result.value == 0.0 and result.passed


def test_error_ratio_uses_previous_primary_at_100_percent():
    previous = arm(2000, 2)
    result = one(ERR, step(ArmStats(), arm(1000, 2), previous=previous))
    assert result.judged and result.value == pytest.approx(2.0)  # floor 1/1000 > 0.1 %
    assert "previous-step primary" in result.detail
    # the current primary wins when it has enough requests
    result = one(ERR, step(arm(1000, 20), arm(1000, 2), previous=previous))
    assert "previous-step" not in result.detail and result.value == pytest.approx(0.1)


def test_error_detail_names_figures():
    result = one(ERR, step(arm(10000, 0), arm(500, 2)))
    assert "canary 2/500 = 0.400%" in result.detail
    assert "primary 0/10000 = 0.000%" in result.detail
    assert "floor 1/500" in result.detail
    assert result.describe().startswith("error_rate_ratio=2 > 1.5 (")


DIV = gates(max_divergence_rate=0.02)


@pytest.mark.parametrize(
    ("compared", "diverged", "value", "passed"),
    [
        (0, 0, None, True),
        (99, 50, None, True),  # not enough samples yet, however bad
        (100, 2, 0.02, True),  # at the threshold passes
        (100, 3, 0.03, False),
        (5000, 0, 0.0, True),
    ],
)
def test_divergence_rate(compared, diverged, value, passed):
    canary = ArmStats()
    for i in range(compared):
        canary.record_comparison(i < diverged)
    result = one(DIV, step(canary=canary))
    assert result.passed is passed
    assert result.value == (None if value is None else pytest.approx(value))
    assert result.judged is (value is not None)


LAT = gates(max_p99_latency_ratio=1.3)


@pytest.mark.parametrize(
    ("p_n", "p_lat", "c_n", "c_lat", "judged", "passed"),
    [
        (1000, 0.010, 99, 0.050, False, True),  # canary too few
        (99, 0.010, 1000, 0.050, False, True),  # primary too few
        (1000, 0.010, 1000, 0.012, True, True),
        (1000, 0.010, 1000, 0.014, True, False),
        (1000, 0.0, 1000, 0.0, True, True),  # zero latencies do not divide by zero
    ],
)
def test_p99_latency_ratio(p_n, p_lat, c_n, c_lat, judged, passed):
    result = one(LAT, step(arm(p_n, latency=p_lat), arm(c_n, latency=c_lat)))
    assert result.judged is judged
    assert result.passed is passed


def test_p99_ignores_errors_latency():
    # slow server errors are the error gate's business, not the latency gate's
    canary = arm(1000, latency=0.010)
    for _ in range(100):
        canary.record("DEADLINE_EXCEEDED", 30.0)
    result = one(LAT, step(arm(1000, latency=0.010), canary))
    assert result.value == pytest.approx(1.0)


def test_feature_skew():
    skew = gates(max_feature_skew=0.1)
    canary = ArmStats()
    assert not one(skew, step(canary=canary)).judged
    canary.record_skew(0.1)
    assert one(skew, step(canary=canary)).passed
    canary.record_skew(0.11)
    result = one(skew, step(canary=canary))
    assert result.failed and result.value == 0.11


def test_disabled_gates_give_no_results_and_order_is_fixed():
    assert evaluate(gates(), step()) == []
    names = [r.name for r in evaluate(ALL, step())]
    assert names == ["divergence_rate", "error_rate_ratio", "p99_latency_ratio", "feature_skew"]
    assert ALL.enabled == tuple(names)
    assert gates(max_feature_skew=0.2).enabled == ("feature_skew",)


def test_min_samples_are_configurable():
    mins = MinSamples.from_config(
        MinSamplesConfig(compared=10, error_requests=5, primary_requests=10, latency=10)
    )
    canary = arm(20, 3)
    for i in range(10):
        canary.record_comparison(i == 0)
    results = evaluate(ALL, step(arm(20, 0), canary), mins)
    by_name = {r.name: r for r in results}
    assert by_name["divergence_rate"].value == pytest.approx(0.1)
    assert by_name["error_rate_ratio"].value == pytest.approx(3.0)
    assert by_name["p99_latency_ratio"].judged
    with pytest.raises(ValidationError, match=r"MinSamplesConfig\ncompared\n"):
        MinSamplesConfig(compared=0)


def test_gates_from_config():
    d = {
        "max_divergence_rate": 0.02,
        "max_error_rate_ratio": 1.5,
        "max_p99_latency_ratio": 1.3,
        "max_feature_skew": 0.1,
    }
    assert Gates.from_config(GatesConfig.model_validate(d)) == ALL
    assert Gates.from_config(GatesConfig.model_validate(d)).to_dict() == d
    default = Gates.from_config(GatesConfig())  # no `gates:` block: the config's defaults
    assert default == Gates.from_config(GatesConfig.model_validate({"max_feature_skew": None}))
    assert default.enabled == ("divergence_rate", "error_rate_ratio", "p99_latency_ratio")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_eror_rate_ratio": 1}, r"rollout\.gates\.max_eror_rate_ratio: unknown key"),
        (
            {"max_error_rate_ratio": 0},
            r"rollout\.gates\.max_error_rate_ratio: Input should be greater than 0",
        ),
        (
            {"max_divergence_rate": -0.1},
            r"rollout\.gates\.max_divergence_rate: Input should be greater than or equal to 0",
        ),
        (
            {"max_feature_skew": "high"},
            r"rollout\.gates\.max_feature_skew: Input should be a valid number",
        ),
        ({"max_feature_skew": True}, r"rollout\.gates\.max_feature_skew: Input should be a valid"),
        (
            {"max_p99_latency_ratio": float("inf")},
            r"rollout\.gates\.max_p99_latency_ratio: Input should be a finite number",
        ),
        ([1, 2], r"rollout\.gates: Input should be a valid dictionary"),
    ],
)
def test_gates_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=r"^models\[0\]\." + message):
        parse({"candidate": 2, "primary": 1, "gates": data})


def test_gate_result_round_trip():
    result = one(ERR, step(arm(10000, 0), arm(500, 2)))
    assert GateResult.from_dict(result.to_dict()) == result
    with pytest.raises(ValueError, match="malformed gate result"):
        GateResult.from_dict({"name": "x"})
