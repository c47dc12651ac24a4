"""Per-request feature checks against hand-computed training statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.analysis.feature_checks import (
    Action,
    CheckConfig,
    CheckKind,
    FeatureChecker,
    Mismatch,
    rejects,
    worst_action,
)
from gateway.analysis.statistics import compute_statistics
from gateway.config import FeatureChecksConfig, parse_config
from gateway.core.errors import ConfigError

# x: min 1, max 3, mean 2, std sqrt(2/3) ~ 0.8165
TRAIN = {
    "x": np.array([[1.0], [2.0], [3.0]], dtype=np.float32),
    "n": np.array([0.0, np.nan, 10.0]),
    "city": np.array([["paris"], ["oslo"], ["paris"]]),
    "code": np.array([[1, 2], [2, 3], [3, 1]]),
    "ssn": np.array([100.0, 200.0, 300.0]),
}
STATS = compute_statistics(TRAIN, categorical={"code"})
QUIET = {k: Action.IGNORE for k in CheckKind}


def _config(**kw: object) -> CheckConfig:
    """The checks of a `feature_checks` block with these keys."""
    return CheckConfig.from_config(FeatureChecksConfig.model_validate(kw))


def _checker(**kw: object) -> FeatureChecker:
    return FeatureChecker(STATS, _config(**kw))


def _ok_batch(rows: int = 2) -> dict[str, np.ndarray]:
    return {
        "x": np.full((rows, 1), 2.0, dtype=np.float32),
        "n": np.full(rows, 5.0),
        "city": np.array([["oslo"]] * rows, dtype=object),
        "code": np.ones((rows, 2), dtype=np.int64),
        "ssn": np.full(rows, 150.0),
    }


def _only(ms: list[Mismatch], kind: CheckKind) -> Mismatch:
    found = [m for m in ms if m.kind is kind]
    assert len(found) == 1, ms
    return found[0]


def test_clean_batch_has_no_mismatch() -> None:
    assert _checker().check(_ok_batch()) == []
    assert _checker().check(_ok_batch(1)) == []


def test_out_of_range_reports_the_most_extreme_value() -> None:
    batch = _ok_batch(4)
    batch["x"] = np.array([[2.0], [400.0], [0.5], [3.0]], dtype=np.float32)
    m = _only(_checker().check(batch), CheckKind.OUT_OF_RANGE)
    assert (m.feature, m.action, m.value, m.count) == ("x", Action.LOG, 400.0, 2)
    assert m.reference == "[1.0, 3.0]"
    assert m.message() == "feature 'x': value 400.0 outside training range [1.0, 3.0] (2 rows)"


def test_out_of_range_margin() -> None:
    batch = _ok_batch(1)
    batch["x"] = np.array([[3.2]], dtype=np.float32)  # range 2 -> margin 0.1 allows [0.8, 3.2]
    config = {"actions": {CheckKind.Z_SCORE: Action.IGNORE}}
    assert _checker(margin=0.1, **config).check(batch) == []
    batch["x"] = np.array([[3.3]], dtype=np.float32)
    m = _only(_checker(margin=0.1, **config).check(batch), CheckKind.OUT_OF_RANGE)
    assert m.message() == "feature 'x': value 3.3 outside training range [1.0, 3.0] (margin 0.1)"


def test_z_score() -> None:
    std = np.sqrt(2 / 3)
    batch = _ok_batch(3)
    # threshold 1: |z| of 3.0 is 1.22 > 1 and of 1.5 is 0.61
    batch["x"] = np.array([[3.0], [1.5], [2.0]], dtype=np.float32)
    ms = _checker(z_threshold=1.0).check(batch)
    m = _only(ms, CheckKind.Z_SCORE)
    assert (m.value, m.count) == (3.0, 1)
    assert m.reference == f"|z| > 1 (training mean 2, std {std:.6g})"
    assert m.message() == f"feature 'x': value 3.0 has |z| > 1 (training mean 2, std {std:.6g})"
    assert not [m for m in ms if m.kind is CheckKind.OUT_OF_RANGE]
    # default threshold 6: 2 + 6 * 0.8165 = 6.9
    batch["x"] = np.array([[6.8], [7.0], [-3.0]], dtype=np.float32)
    m = _only(_checker(margin=10.0).check(batch), CheckKind.Z_SCORE)
    assert (m.value, m.count) == (7.0, 2)


def test_nan_or_inf() -> None:
    batch = _ok_batch(3)
    batch["x"] = np.array([[np.nan], [2.0], [np.nan]], dtype=np.float32)
    m = _only(_checker().check(batch), CheckKind.NAN_OR_INF)
    assert m.count == 2 and np.isnan(m.value)  # type: ignore[arg-type]
    assert (
        m.message() == "feature 'x': value nan is not finite (training values were finite) (2 rows)"
    )
    # 'n' had NaN in training: NaN is fine, inf is not
    batch = _ok_batch(3)
    batch["n"] = np.array([np.nan, 1.0, 2.0])
    assert _checker().check(batch) == []
    batch["n"] = np.array([np.nan, -np.inf, 2.0])
    ms = _checker().check(batch)
    assert [m.kind for m in ms] == [CheckKind.NAN_OR_INF]
    assert ms[0].value == -np.inf and ms[0].count == 1


def test_unseen_category() -> None:
    batch = _ok_batch(3)
    batch["city"] = np.array([["oslo"], ["rome"], ["rome"]], dtype=object)
    batch["code"] = np.array([[1, 7], [1, 2], [8, 9]])
    ms = _checker().check(batch)
    city = next(m for m in ms if m.feature == "city")
    assert (city.kind, city.value, city.count) == (CheckKind.UNSEEN_CATEGORY, "rome", 2)
    assert (
        city.message()
        == "feature 'city': value 'rome' not seen in training (2 training values) (2 rows)"
    )
    code = next(m for m in ms if m.feature == "code")
    assert (code.value, code.count) == (7, 2)


def test_unseen_category_skipped_when_vocabulary_was_capped() -> None:
    capped = compute_statistics({"city": TRAIN["city"]}, max_values=1)
    ms = FeatureChecker(capped).check({"city": np.array([["rome"]])})
    assert ms == []


def test_missing_unexpected_dtype_and_shape() -> None:
    batch = _ok_batch(2)
    del batch["n"]
    batch["bogus"] = np.zeros(2)
    batch["city"] = np.array([[1.0], [2.0]])
    batch["x"] = np.full((2, 3), 2.0)
    ms = _checker().check(batch)
    by_kind = {m.kind: m for m in ms}
    assert set(by_kind) == {
        CheckKind.MISSING_FEATURE,
        CheckKind.UNEXPECTED_FEATURE,
        CheckKind.DTYPE_MISMATCH,
        CheckKind.SHAPE_MISMATCH,
    }
    assert (
        by_kind[CheckKind.MISSING_FEATURE].message()
        == "feature 'n': missing (expected float [batch])"
    )
    assert by_kind[CheckKind.MISSING_FEATURE].action is Action.REJECT
    assert by_kind[CheckKind.UNEXPECTED_FEATURE].action is Action.LOG
    assert by_kind[CheckKind.DTYPE_MISMATCH].message() == (
        "feature 'city': dtype float64 does not match training dtype string (2 rows)"
    )
    assert by_kind[CheckKind.SHAPE_MISMATCH].message() == (
        "feature 'x': shape [batch, 3] does not match training shape [batch, 1] (2 rows)"
    )
    assert rejects(ms) and worst_action(ms) is Action.REJECT


def test_batch_and_batch_1_shapes_are_interchangeable_and_ints_ok_for_floats() -> None:
    batch = _ok_batch(2)
    batch["x"] = np.array([2, 3])
    batch["n"] = np.array([[1.0], [2.0]])
    assert _checker().check(batch) == []


def test_sensitive_values_never_leave_the_checker() -> None:
    batch = _ok_batch(2)
    batch["ssn"] = np.array([123456789.0, np.inf])
    ms = _checker(sensitive_features=frozenset({"ssn"})).check(batch)
    assert {m.kind for m in ms} == {CheckKind.NAN_OR_INF, CheckKind.OUT_OF_RANGE, CheckKind.Z_SCORE}
    for m in ms:
        assert m.value is None
        assert "123456789" not in m.message() and "inf" not in m.message().split("(")[0]
    assert ms[1].message() == "feature 'ssn': value outside training range [100.0, 300.0]"


def test_actions_config_and_per_feature_overrides() -> None:
    batch = _ok_batch(1)
    batch["x"] = np.array([[400.0]], dtype=np.float32)
    batch["ssn"] = np.array([1000.0])
    cfg = _config(
        actions={CheckKind.OUT_OF_RANGE: Action.REJECT, CheckKind.Z_SCORE: Action.IGNORE},
        per_feature={"ssn": {"actions": {CheckKind.OUT_OF_RANGE: Action.IGNORE}}},
    )
    ms = FeatureChecker(STATS, cfg).check(batch)
    assert [(m.feature, m.kind, m.action) for m in ms] == [
        ("x", CheckKind.OUT_OF_RANGE, Action.REJECT)
    ]
    quiet = FeatureChecker(STATS, _config(actions=QUIET))
    assert quiet.check({"junk": np.zeros(1)}) == []
    assert quiet.features == frozenset(TRAIN)  # what a caller keeps when it drops the rest
    # plain strings are accepted and normalized to the enums
    loose = _config(actions={"out_of_range": "ignore", "z_score": "ignore"})
    assert loose.action(CheckKind.OUT_OF_RANGE, "x") is Action.IGNORE
    assert FeatureChecker(STATS, loose).check(batch) == []


def test_per_feature_margin_and_threshold() -> None:
    cfg = _config(
        actions={CheckKind.Z_SCORE: Action.IGNORE},
        per_feature={"x": {"margin": 1.0}},
    )
    batch = _ok_batch(1)
    batch["x"] = np.array([[4.9]], dtype=np.float32)  # allowed [-1, 5]
    assert FeatureChecker(STATS, cfg).check(batch) == []
    assert cfg.z_threshold_for("x") == 6.0 and cfg.margin_for("n") == 0.0


def test_config_from_config(tmp_path: Path) -> None:
    cfg = CheckConfig.from_config(
        FeatureChecksConfig.model_validate(
            {
                "actions": {"out_of_range": "reject"},
                "margin": 0.25,
                "z_threshold": 4,
                "sensitive_features": ["ssn"],
                "per_feature": {"x": {"actions": {"z_score": "ignore"}, "z_threshold": 3}},
            }
        )
    )
    assert cfg.action(CheckKind.OUT_OF_RANGE, "x") is Action.REJECT
    assert cfg.action(CheckKind.Z_SCORE, "x") is Action.IGNORE
    assert cfg.action(CheckKind.Z_SCORE, "n") is Action.LOG
    assert cfg.z_threshold_for("x") == 3.0 and cfg.margin == 0.25
    assert cfg.sensitive_features == frozenset({"ssn"})

    def parse(checks: dict[str, object]) -> None:
        model = {"name": "m", "base_path": ".", "feature_checks": checks}
        parse_config({"models": [model]}, tmp_path)

    bad_action = r"feature_checks\.actions\.out_of_range: Input should be 'ignore', 'log' or"
    with pytest.raises(ConfigError, match=bad_action):
        parse({"actions": {"out_of_range": "explode"}})
    with pytest.raises(ConfigError, match=r"feature_checks\.marg: unknown key"):
        parse({"marg": 1})


def test_string_and_bytes_flavours_for_categorical() -> None:
    for arr in (
        np.array([[b"oslo"], [b"paris"]]),
        np.array([["oslo"], ["paris"]]),
        np.array([["oslo"], [b"paris"]], dtype=object),
    ):
        batch = _ok_batch(2)
        batch["city"] = arr
        assert _checker().check(batch) == []
