"""Skew metrics against hand-computed values, and the sliding serving window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.analysis.skew import (
    SkewRules,
    SkewThresholds,
    SkewWindow,
    categorical_linf,
    js_divergence,
    linf_distance,
    psi,
)
from gateway.analysis.statistics import FeatureStatistics, compute_statistics
from gateway.config import SkewConfig


def rules(**kw: object) -> SkewRules:
    """The rules of a `skew` block with these keys (the config's defaults for the others)."""
    return SkewRules.from_config(SkewConfig.model_validate(kw))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_js_divergence_by_hand() -> None:
    assert js_divergence([1, 0], [0, 1]) == 1.0
    assert js_divergence([3, 3], [1, 1]) == 0.0
    # p = (.5, .5), q = (1, 0), m = (.75, .25)
    expected = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * (
        math.log2(1 / 0.75)
    )
    assert js_divergence([5, 5], [2, 0]) == pytest.approx(expected)
    assert expected == pytest.approx(0.311278, abs=1e-6)
    assert math.isnan(js_divergence([0, 0], [1, 1]))
    with pytest.raises(ValueError, match="different bucket counts"):
        js_divergence([1, 2], [1, 2, 3])


def test_linf_by_hand() -> None:
    assert linf_distance([2, 2], [1, 3]) == 0.25
    assert linf_distance([1, 1, 2], [1, 1, 2]) == 0.0
    assert categorical_linf({"a": 3, "b": 1}, {"a": 1, "c": 1}) == 0.5


def test_psi_by_hand() -> None:
    # (.25 - .5) ln(.25/.5) + (.75 - .5) ln(.75/.5) = .25 ln 3
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(3))
    assert psi([7, 3], [70, 30]) == pytest.approx(0.0)
    # empty bucket -> epsilon
    eps = 1e-4
    expected = (0.5 - 1) * math.log(0.5 / 1) + (0.5 - eps) * math.log(0.5 / eps)
    assert psi([1, 0], [1, 1], epsilon=eps) == pytest.approx(expected)


def _small_stats() -> FeatureStatistics:
    # x: edges (0, 1.5, 3) counts (2, 2); quantile edges (0, 1.5, 3) counts (2, 2)
    return compute_statistics(
        {"x": np.array([0.0, 1.0, 2.0, 3.0]), "c": np.array(["a", "a", "b", "c"])},
        histogram_buckets=2,
        quantile_buckets=2,
    )


def test_window_metrics_equal_hand_computed_values_with_overflow_buckets() -> None:
    stats = _small_stats()
    w = SkewWindow(stats, rules(min_values=1), max_values=100)
    # buckets: (<0) [0, 1.5) [1.5, 3] (>3); training (0, 2, 2, 0)
    w.add({"x": np.array([0.0, 1.0, 1.5, 3.0]), "c": np.array(["a", "b"])})
    r = w.report()
    assert r["x"].num_values == 4 and r["x"].js == 0.0 and r["x"].linf == 0.0
    assert r["x"].psi == pytest.approx(0.0)
    # -5 is below the training min, the tens above the max: training never had that mass
    w2 = SkewWindow(stats, rules(min_values=1), max_values=100)
    w2.add({"x": np.array([-5.0, 0.0, 10.0, 10.0])})
    w2.add({"x": np.array([np.nan, np.inf, -np.inf])})  # non-finite values are left out
    r = w2.report()
    assert r["x"].num_values == 4
    # p = (0, .5, .5, 0), q = (.25, .25, 0, .5), m = (.125, .375, .25, .25)
    kl_p = 0.5 * math.log2(0.5 / 0.375) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = 0.25 * math.log2(0.25 / 0.125) + 0.25 * math.log2(0.25 / 0.375) + 0.5 * math.log2(2)
    assert r["x"].js == pytest.approx(0.5 * (kl_p + kl_q))
    assert r["x"].js == pytest.approx(0.655639, abs=1e-6)
    assert r["x"].linf == 0.5
    # PSI on the quantile buckets (here the same edges 0, 1.5, 3), empty shares -> 1e-4
    e, a = (1e-4, 0.5, 0.5, 1e-4), (0.25, 0.25, 1e-4, 0.5)
    assert r["x"].psi == pytest.approx(
        sum((y - x) * math.log(y / x) for x, y in zip(e, a, strict=True))
    )
    # a stream entirely beyond the training max is as far from training as it gets
    w3 = SkewWindow(stats, rules(min_values=1), max_values=100)
    w3.add({"x": np.full(10, 400.0)})
    assert w3.report()["x"].js == 1.0 and w3.report()["x"].linf == 1.0
    # categorical: buckets a, b, c, other; training (2, 1, 1, 0), serving (1, 1, 0, 0)
    rc = w.report()["c"]
    assert rc.linf == pytest.approx(0.25)  # |2/4 - 1/2|, |1/4 - 1/2|, |1/4 - 0|
    w.add({"c": np.array(["zz", "zz"], dtype=object)})
    rc = w.report()["c"]
    # serving (1, 1, 0, 2) / 4: |.5 - .25|, |.25 - .25|, |.25 - 0|, |0 - .5|
    assert rc.linf == pytest.approx(0.5)
    assert rc.js == pytest.approx(js_divergence([2, 1, 1, 0], [1, 1, 0, 2]))
    assert rc.crossed == ("linf",)


def test_constant_training_feature_counts_any_other_value_as_drift() -> None:
    stats = compute_statistics({"k": np.full(50, 7.0)})
    w = SkewWindow(stats, rules(min_values=1), max_values=100)
    w.add({"k": np.full(10, 7.0)})
    assert w.report()["k"].js == 0.0
    w.add({"k": np.full(10, 7.5)})
    # training (0, 1, 0) vs serving (0, .5, .5): m = (0, .75, .25)
    kl_train = 1.0 * math.log2(1 / 0.75)
    kl_serving = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    expected = 0.5 * (kl_train + kl_serving)
    assert w.report()["k"].js == pytest.approx(expected)


def test_count_window_keeps_about_the_last_n_values() -> None:
    stats = _small_stats()
    w = SkewWindow(stats, max_values=100, num_slices=10)
    w.add({"x": np.zeros(250)})
    n = w.report()["x"].num_values
    assert 100 <= n <= 110
    # the old zeros are pushed out by threes
    w.add({"x": np.full(120, 3.0)})
    for _ in range(30):
        w.add({"x": np.array([3.0])})
    r = w.report()["x"]
    assert 100 <= r.num_values <= 110
    assert r.js == pytest.approx(js_divergence([2, 2], [0, 1]))


def test_time_window_drops_old_slices() -> None:
    stats = _small_stats()
    clock = FakeClock()
    w = SkewWindow(stats, max_values=None, max_age_seconds=10, num_slices=5, clock=clock)
    w.add({"x": np.zeros(10)})  # slice 0 (t in [0, 2))
    clock.now = 3.0
    w.add({"x": np.full(5, 3.0)})  # slice 1
    clock.now = 11.0  # slice 5: slices 0..5 are kept (10 s plus the current slice)
    assert w.report()["x"].num_values == 15
    clock.now = 12.0  # slice 6: slice 0 expires
    assert w.report()["x"].num_values == 5
    clock.now = 100.0
    assert w.report()["x"].num_values == 0
    w.add({"x": np.zeros(3)})
    assert w.report()["x"].num_values == 3


def test_drifting_stream_crosses_threshold_and_training_stream_does_not() -> None:
    rng = np.random.default_rng(7)
    train = {
        "x": rng.normal(0.0, 1.0, (20_000, 1)),
        "c": rng.choice(["a", "b", "c", "d"], 20_000, p=[0.4, 0.3, 0.2, 0.1]),
    }
    stats = compute_statistics(train)
    config = rules(
        numeric={"js": 0.05, "psi": 0.2},
        categorical={"linf": 0.1},
        min_values=500,
    )
    clock = FakeClock()
    same = SkewWindow(stats, config, max_values=5_000, clock=clock)
    drift = SkewWindow(stats, config, max_values=5_000, clock=clock)
    for step in range(60):
        clock.now = float(step)
        same.add(
            {
                "x": rng.normal(0.0, 1.0, (64, 1)),
                "c": rng.choice(["a", "b", "c", "d"], 64, p=[0.4, 0.3, 0.2, 0.1]),
            }
        )
        shift = min(step / 20, 1.0)
        drift.add(
            {
                "x": rng.normal(1.5 * shift, 1.0, (64, 1)),
                "c": rng.choice(["a", "b", "c", "d"], 64, p=[0.1, 0.2, 0.3, 0.4]),
            }
        )
    assert same.drifted() == []
    rep = same.report()
    assert rep["x"].js < 0.05 and rep["x"].psi < 0.2 and rep["c"].linf < 0.1
    assert sorted(drift.drifted()) == ["c", "x"]
    assert drift.report()["x"].crossed == ("js", "psi")


def test_min_values_and_per_feature_thresholds() -> None:
    stats = _small_stats()
    cfg = rules(min_values=10, per_feature={"x": {"linf": 0.9}})
    w = SkewWindow(stats, cfg, max_values=100)
    w.add({"x": np.full(5, 3.0)})
    assert w.report()["x"].crossed == ()  # too few values
    w.add({"x": np.full(5, 3.0)})
    assert w.report()["x"].crossed == ()  # linf 0.5 <= 0.9, js not checked
    assert w.report()["x"].thresholds == SkewThresholds(js=None, linf=0.9, psi=None)


def test_window_validation() -> None:
    stats = _small_stats()
    with pytest.raises(ValueError, match="max_values and/or max_age_seconds"):
        SkewWindow(stats, max_values=None)
    with pytest.raises(ValueError, match="no training statistics"):
        SkewWindow(stats, features=["nope"])
    w = SkewWindow(stats, features=["x"])
    w.add({"x": np.zeros(3), "c": np.array(["a"]), "other": np.zeros(2)})
    assert set(w.report()) == {"x"}
