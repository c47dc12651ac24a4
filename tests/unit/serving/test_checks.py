"""Wiring of feature checks and skew windows from the model config, and the skew monitor
(gauges, one drift log record per crossing, one recovery record)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from gateway.analysis.feature_checks import Action, CheckKind
from gateway.analysis.statistics import compute_statistics
from gateway.config import ModelConfig
from gateway.core.servable import LoadedVersion
from gateway.serving.checks import SkewMonitor, build_checks, mismatch_record
from gateway.sinks.metrics import Metrics

RNG = np.random.default_rng(5)
STATS = compute_statistics(
    {
        "x": RNG.uniform(1.0, 3.0, size=(2000, 1)),
        "city": RNG.choice(np.array(["oslo", "rome", "lima"]), size=2000),
    }
)


def _version(stats: Any = STATS) -> LoadedVersion:
    bundle = SimpleNamespace(statistics=stats)
    return LoadedVersion("m", 1, Path("."), {}, None, extensions={"bundle": bundle})


def _model(**kw: Any) -> ModelConfig:
    return ModelConfig.model_validate({"name": "m", "base_path": ".", **kw})


def test_build_checks_maps_the_model_config() -> None:
    model = _model(
        feature_checks={
            "actions": {"out_of_range": "reject"},
            "margin": 0.5,
            "z_threshold": 10,
            "sensitive_features": ["x"],
            "per_feature": {"city": {"actions": {"unseen_category": "reject"}}},
        },
        skew={"window_values": None, "window_seconds": 60, "min_values": 7},
    )
    checker, window = build_checks(model, _version())
    assert checker is not None and window is not None
    cfg = checker.config
    assert cfg.action(CheckKind.OUT_OF_RANGE, "x") is Action.REJECT
    assert cfg.action(CheckKind.UNSEEN_CATEGORY, "city") is Action.REJECT
    assert cfg.action(CheckKind.UNSEEN_CATEGORY, "other") is Action.LOG
    assert (cfg.margin, cfg.z_threshold, cfg.sensitive_features) == (0.5, 10.0, {"x"})
    # margin 0.5 of a ~[1, 3] range: 3.9 passes, 4.1 does not; the value is withheld
    (m,) = checker.check({"x": np.array([[4.1]]), "city": np.array(["oslo"])})
    assert (m.kind, m.action, m.value) == (CheckKind.OUT_OF_RANGE, Action.REJECT, None)
    assert mismatch_record(m)["value"] is None
    assert checker.check({"x": np.array([[3.9]]), "city": np.array(["oslo"])}) == []
    assert window.config.min_values == 7
    assert window._max_values is None and window._max_age == 60  # time-based only


def test_build_checks_off_switches_and_versions_without_statistics() -> None:
    assert build_checks(_model(), _version(stats=None)) == (None, None)
    no_bundle = LoadedVersion("m", 1, Path("."), {}, None)
    assert build_checks(_model(), no_bundle) == (None, None)
    checker, window = build_checks(
        _model(feature_checks={"enabled": False}, skew={"enabled": False}), _version()
    )
    assert checker is None and window is None


def _table(window: Any) -> dict[str, Any]:
    runner = SimpleNamespace(skew=window)
    return {"m": SimpleNamespace(versions={1: runner})}


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_skew_monitor_gauges_and_one_log_record_per_crossing() -> None:
    model = _model(skew={"window_values": 500, "min_values": 100})
    _, window = build_checks(model, _version())
    assert window is not None
    metrics = Metrics()
    monitor = SkewMonitor(metrics)
    table = _table(window)
    labels = {"model": "m", "version": "1", "feature": "x"}

    window.add({"x": RNG.uniform(1.0, 3.0, size=(500, 1)), "city": RNG.choice(["oslo"], 500)})
    with capture_logs() as logs:
        monitor.check(table)
    report = window.report()
    assert _sample(metrics, "gateway_feature_skew", metric="js", **labels) == pytest.approx(
        report["x"].js
    )
    assert _sample(metrics, "gateway_feature_drifted", **labels) == 0.0
    # city: training ~1/3 each, serving only "oslo": L-inf ~2/3 crosses the default 0.1
    city = [r for r in logs if r["event"] == "feature_skew_drift"]
    assert [r["feature"] for r in city] == ["city"]
    assert city[0]["crossed"] == ["linf"] and city[0]["log_level"] == "warning"
    assert city[0]["linf"] == pytest.approx(report["city"].linf)

    # x drifts beyond the training max: one record, however often the monitor runs
    window.add({"x": RNG.uniform(2.5, 6.0, size=(500, 1))})
    with capture_logs() as logs:
        monitor.check(table)
        monitor.check(table)
    drift = [r for r in logs if r["event"] == "feature_skew_drift"]
    assert [(r["model"], r["version"], r["feature"]) for r in drift] == [("m", 1, "x")]
    assert "js" in drift[0]["crossed"] and drift[0]["js"] > 0.1
    assert drift[0]["num_values"] == window.report()["x"].num_values
    assert _sample(metrics, "gateway_feature_drifted", **labels) == 1.0
    assert _sample(metrics, "gateway_feature_skew", metric="js", **labels) > 0.1  # type: ignore[operator]

    # back to the training distribution: one recovery record, gauge back to 0
    window.add({"x": RNG.uniform(1.0, 3.0, size=(2000, 1))})
    with capture_logs() as logs:
        monitor.check(table)
        monitor.check(table)
    recovered = [r for r in logs if r["event"] == "feature_skew_recovered"]
    assert [r["feature"] for r in recovered] == ["x"]
    assert _sample(metrics, "gateway_feature_drifted", **labels) == 0.0
