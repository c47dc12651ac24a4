"""Divergence metrics against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.analysis.divergence import (
    Comparison,
    NoiseFloor,
    OutputRule,
    compare,
    compare_batch,
    compare_output,
    infer_kind,
    js_divergence,
)
from gateway.config import OutputRuleConfig, parse_config
from gateway.core.errors import ConfigError


def rule(**kw: Any) -> OutputRule:
    """The rule of a `divergence.<output>` block with these keys (the config's defaults for
    the others)."""
    return OutputRule.from_config(OutputRuleConfig.model_validate(kw))


def _js_by_hand(p: list[float], q: list[float]) -> float:
    """JS = H(M) - (H(P) + H(Q)) / 2, base 2."""

    def h(d: list[float]) -> float:
        return -sum(x * math.log2(x) for x in d if x > 0)

    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    return h(m) - (h(p) + h(q)) / 2


# --- Jensen-Shannon --------------------------------------------------------------------


def test_js_of_known_distributions() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75], [0.0, 0.0]])
    q = np.array([[0.0, 1.0], [1.0, 0.0], [0.25, 0.75], [0.0, 0.0]])
    js = js_divergence(p, q)
    # disjoint supports -> 1 bit; H([.75,.25]) - 1/2 = 0.311278; identical -> 0; empty -> 0
    assert js == pytest.approx([1.0, 0.8112781244591328 - 0.5, 0.0, 0.0], abs=1e-12)


def test_js_renormalises_and_is_symmetric() -> None:
    p = np.array([[2.0, 2.0]])  # unnormalised -> [0.5, 0.5]
    q = np.array([[1.0, 0.0]])
    assert js_divergence(p, q)[0] == pytest.approx(0.31127812445913283)
    assert js_divergence(q, p)[0] == pytest.approx(js_divergence(p, q)[0])


# --- probabilities ---------------------------------------------------------------------


def test_probabilities_metrics_by_hand() -> None:
    primary = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    shadow = np.array([[0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    m = compare_output(primary, shadow, rule(kind="probabilities", top_k=1))
    assert m.kind == "probabilities"
    assert m.label_flip is True
    assert m.top1_agreement == 0.5
    assert m.topk_overlap == 0.5  # top-1 sets: {0} vs {1}, {2} vs {2}
    assert m.max_abs == pytest.approx(0.5)
    js_row = _js_by_hand([0.7, 0.2, 0.1], [0.2, 0.7, 0.1])
    assert js_row == pytest.approx(0.2122152, abs=1e-6)
    assert m.js_max == pytest.approx(js_row)
    assert m.js_mean == pytest.approx(js_row / 2)
    assert m.diverged is True


def test_topk_overlap() -> None:
    primary = np.array([[0.4, 0.3, 0.2, 0.1]])
    shadow = np.array([[0.1, 0.3, 0.2, 0.4]])
    m2 = compare_output(primary, shadow, rule(kind="probabilities", top_k=2))
    assert m2.topk_overlap == 0.5  # {0,1} vs {3,1}
    m3 = compare_output(primary, shadow, rule(kind="probabilities", top_k=3))
    assert m3.topk_overlap == pytest.approx(2 / 3)  # {0,1,2} vs {3,1,2}
    m9 = compare_output(primary, shadow, rule(kind="probabilities", top_k=9))
    assert m9.topk_overlap == 1.0  # k capped at the number of classes


def test_probability_thresholds() -> None:
    primary = np.array([[0.60, 0.40]])
    small = np.array([[0.56, 0.44]])
    m = compare_output(primary, small)  # auto -> probabilities, max_abs 0.04 <= 0.05
    assert m.kind == "probabilities"
    assert m.max_abs == pytest.approx(0.04)
    assert m.diverged is False
    assert compare_output(primary, small, rule(max_abs=0.03)).diverged is True
    js = _js_by_hand([0.6, 0.4], [0.56, 0.44])
    assert compare_output(primary, small, rule(max_js=js * 0.9)).diverged is True
    assert compare_output(primary, small, rule(max_js=js * 1.1)).diverged is False
    flipped = np.array([[0.49, 0.51]])
    assert compare_output(primary, flipped, rule(max_abs=0.2)).diverged is True
    no_flip_rule = rule(max_abs=0.2, label_flip=False)
    m = compare_output(primary, flipped, no_flip_rule)
    assert m.label_flip is True
    assert m.diverged is False


def test_probabilities_with_extra_dims_flatten_leading_dims() -> None:
    primary = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # (batch=1, seq=2, classes=2)
    shadow = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    m = compare_output(primary, shadow)
    assert m.kind == "probabilities"
    assert m.top1_agreement == 0.5
    assert m.js_max == pytest.approx(1.0)
    assert m.js_mean == pytest.approx(0.5)


def test_logits_get_softmax() -> None:
    logits = np.array([[2.0, 1.0, 0.0]])
    m = compare_output(logits, logits + 5.0, rule(kind="logits"))  # softmax shift-invariant
    assert m.kind == "logits"
    assert m.max_abs == pytest.approx(0.0, abs=1e-12)
    assert m.diverged is False
    a = np.array([[0.0, math.log(3.0)]])  # softmax -> [0.25, 0.75]
    b = np.array([[math.log(3.0), 0.0]])  # -> [0.75, 0.25]
    m = compare_output(a, b, rule(kind="logits"))
    assert m.max_abs == pytest.approx(0.5)
    assert m.label_flip is True
    assert m.js_max == pytest.approx(_js_by_hand([0.25, 0.75], [0.75, 0.25]))


# --- regression ------------------------------------------------------------------------


def test_regression_abs_rel_and_within() -> None:
    a = np.array([[2.0], [-4.0]])
    b = np.array([[2.002], [-4.0]])
    m = compare_output(a, b, rule(kind="regression", atol=1e-3, rtol=0.0))
    assert m.max_abs == pytest.approx(0.002)
    assert m.max_rel == pytest.approx(0.001)  # 0.002 / |2.0|
    assert m.within is False
    assert m.diverged is True
    # rtol scales with |b| like np.allclose: 0.002 <= 1e-6 + 1e-3 * 2.002
    m = compare_output(a, b, rule(kind="regression", atol=1e-6, rtol=1e-3))
    assert m.within is True
    assert m.diverged is False
    assert m.within == bool(np.allclose(a, b, rtol=1e-3, atol=1e-6))


def test_regression_relative_diff_against_zero_uses_tiny() -> None:
    m = compare_output(np.array([0.0, 1.0]), np.array([1e-6, 1.0]))
    assert m.kind == "regression"
    assert m.max_rel == pytest.approx(1e-6 / 1e-12)
    assert m.diverged is False  # 1e-6 <= atol 1e-6 + rtol * 1e-6


def test_regression_default_tolerances() -> None:
    a = np.array([1.0, 100.0])
    assert compare_output(a, a + 1e-7).diverged is False
    assert compare_output(a, a + 1e-3).diverged is True


def test_nan_and_inf_handling() -> None:
    a = np.array([1.0, np.nan, np.inf])
    same = compare_output(a, a.copy())
    assert same.max_abs == 0.0
    assert same.diverged is False
    lone_nan = compare_output(a, np.array([1.0, 2.0, np.inf]))
    assert lone_nan.max_abs == math.inf
    assert lone_nan.diverged is True
    assert lone_nan.to_json()["max_abs"] is None  # JSON has no Infinity
    json.dumps(lone_nan.to_json(), allow_nan=False)


# --- classes and schema ----------------------------------------------------------------


def test_classes_agreement() -> None:
    m = compare_output(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4]))
    assert m.kind == "classes"
    assert m.agreement == 0.75
    assert m.diverged is True
    same = compare_output(np.array([b"a", b"b"]), np.array([b"a", b"b"]))
    assert same.kind == "classes"
    assert same.agreement == 1.0
    assert same.diverged is False
    rows = compare_output(np.array([["a", "b"], ["c", "d"]]), np.array([["a", "b"], ["c", "x"]]))
    assert rows.agreement == 0.5  # a row agrees only if all its entries do


def test_schema_divergences() -> None:
    c = compare(
        {"a": np.zeros((1, 3)), "b": np.zeros(2), "c": np.zeros(2)},
        {"a": np.zeros((1, 4)), "b": np.array(["x", "y"]), "d": np.zeros(2)},
    )
    assert c.outputs["a"].kind == "schema"
    assert c.outputs["a"].message == "shape (1, 3) != (1, 4)"
    assert c.outputs["b"].kind == "schema"
    assert c.outputs["b"].message is not None
    assert c.outputs["b"].message.startswith("dtype float64 != <U1")
    assert c.outputs["c"].message == "missing in shadow"
    assert c.outputs["d"].message == "missing in primary"
    assert all(m.diverged for m in c.outputs.values())
    assert c.diverged is True


def test_configured_kind_that_cannot_apply_is_schema() -> None:
    m = compare_output(np.array([0.5, 0.5]), np.array([0.5, 0.5]), rule(kind="logits"))
    assert m.kind == "schema"
    s = compare_output(np.array(["a"]), np.array(["a"]), rule(kind="regression"))
    assert s.kind == "schema"


def test_float32_vs_float64_is_comparable() -> None:
    m = compare_output(np.array([1.0], dtype=np.float32), np.array([1.0], dtype=np.float64))
    assert m.kind == "regression"
    assert m.diverged is False


def test_infer_kind() -> None:
    assert infer_kind(np.array([[0.2, 0.8], [0.5, 0.5]])) == "probabilities"
    assert infer_kind(np.array([[0.2, 0.8], [0.5, 0.6]])) == "regression"  # row sum 1.1
    assert infer_kind(np.array([[2.0, -1.0]])) == "regression"
    assert infer_kind(np.array([0.2, 0.8])) == "regression"  # 1-D: batch of scalars
    assert infer_kind(np.array([[1.0]])) == "regression"  # last dim 1
    assert infer_kind(np.array([1, 2])) == "classes"
    assert infer_kind(np.array(["x"])) == "classes"


def test_empty_batch() -> None:
    assert compare_output(np.zeros((0, 3)), np.zeros((0, 3))).diverged is False
    p = rule(kind="probabilities")
    assert compare_output(np.zeros((0, 3)), np.zeros((0, 3)), p).diverged is False
    assert compare_output(np.zeros((0,), dtype=int), np.zeros((0,), dtype=int)).diverged is False


# --- Comparison / JSON -----------------------------------------------------------------


def test_comparison_to_json_matches_log_schema() -> None:
    c = compare(
        {"scores": np.array([[0.9, 0.1]]), "value": np.array([1.0]), "label": np.array([3])},
        {"scores": np.array([[0.4, 0.6]]), "value": np.array([1.0]), "label": np.array([3])},
        {"value": rule(kind="regression", atol=1e-3, rtol=1e-2)},
    )
    out = c.to_json()
    assert list(out) == ["scores", "value", "label"]
    assert list(out["scores"]) == [
        "kind",
        "diverged",
        "label_flip",
        "top1_agreement",
        "topk_overlap",
        "max_abs",
        "js_mean",
        "js_max",
    ]
    assert out["scores"]["kind"] == "probabilities"
    assert out["scores"]["label_flip"] is True
    assert out["scores"]["top1_agreement"] == 0.0
    assert out["scores"]["max_abs"] == pytest.approx(0.5)
    assert out["value"] == {
        "kind": "regression",
        "diverged": False,
        "max_abs": 0.0,
        "max_rel": 0.0,
        "within": True,
    }
    assert out["label"] == {"kind": "classes", "diverged": False, "agreement": 1.0}
    assert c.diverged is True
    json.dumps(out, allow_nan=False)


# --- OutputRule ------------------------------------------------------------------------


def test_output_rule_from_config() -> None:
    r = rule(kind="probabilities", label_flip=True, max_abs=0.05)
    assert r == OutputRule(
        kind="probabilities",
        atol=1e-6,
        rtol=1e-5,
        max_abs=0.05,
        max_js=None,
        label_flip=True,
        top_k=3,
    )
    r = rule(kind="regression", atol=1e-3, rtol=1e-2)
    assert (r.kind, r.atol, r.rtol) == ("regression", 1e-3, 1e-2)
    assert rule(max_js=None, top_k=5).top_k == 5


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"kind": "probs"}, "kind"),
        ({"atol": "x"}, "atol"),
        ({"rtol": -1}, "rtol"),
        ({"max_abs": True}, "max_abs"),
        ({"max_js": "big"}, "max_js"),
        ({"label_flip": "yes"}, "label_flip"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"tolerance": 1}, "tolerance"),
    ],
)
def test_output_rule_errors_name_the_key(data: dict[str, Any], key: str, tmp_path: Path) -> None:
    model = {"name": "m", "base_path": ".", "divergence": {"y": data}}
    with pytest.raises(ConfigError, match=rf"^models\[0\]\.divergence\.y\.{key}: "):
        parse_config({"models": [model]}, tmp_path)


def test_output_rule_is_frozen() -> None:
    with pytest.raises(AttributeError):
        rule().atol = 1.0  # type: ignore[misc]


# --- noise floor -----------------------------------------------------------------------


def _pair(rng: np.random.Generator, noise: float) -> tuple[dict[str, np.ndarray], ...]:
    probs = rng.dirichlet(np.ones(4), size=3)
    value = rng.normal(size=(3, 1))
    primary = {"scores": probs, "value": value}
    replay = {"scores": probs + noise * rng.normal(size=probs.shape), "value": value + noise}
    return primary, replay


def test_noise_floor_identical_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    floor = NoiseFloor()
    assert floor.deterministic is False  # nothing seen yet
    assert compare({"v": np.ones(1)}, {"v": np.ones(1)}).within_noise(floor) is None
    for _ in range(20):
        primary, _ = _pair(rng, 0.0)
        floor.add(compare(primary, primary))
    assert floor.count == 20
    assert floor.deterministic is True
    assert floor.max("scores", "max_abs") == 0.0
    assert floor.percentile("value", "max_rel", 99) == 0.0
    assert floor.max("nope", "max_abs") is None
    primary, shadow = _pair(rng, 1e-9)
    assert compare(primary, primary).within_noise(floor) is True
    assert compare(primary, shadow).within_noise(floor) is False  # any diff exceeds a 0 floor
    assert floor.summary()["deterministic"] is True


def test_noise_floor_noisy_is_not_deterministic() -> None:
    floor = NoiseFloor(capacity=50)
    diffs = []
    for i in range(100):
        primary = {"value": np.array([1.0, 2.0])}
        replay = {"value": np.array([1.0, 2.0 + (i + 1) * 1e-9])}
        diffs.append((i + 1) * 1e-9)
        floor.add(compare(primary, replay))
    assert floor.deterministic is False
    assert floor.max("value", "max_abs") == pytest.approx(max(diffs))  # exact, not sampled
    p50 = floor.percentile("value", "max_abs", 50)
    assert p50 is not None
    assert 0 < p50 < max(diffs)
    inside = compare({"value": np.array([2.0])}, {"value": np.array([2.0 + 5e-8])})
    outside = compare({"value": np.array([2.0])}, {"value": np.array([2.0 + 1e-6])})
    assert inside.within_noise(floor) is True
    assert outside.within_noise(floor) is False
    schema = compare({"value": np.zeros(1)}, {"value": np.zeros(2)})
    assert schema.within_noise(floor) is False
    summary = floor.summary()
    assert summary["count"] == 100
    assert summary["outputs"]["value"]["kind"] == "regression"
    assert summary["outputs"]["value"]["metrics"]["max_abs"]["max"] == pytest.approx(1e-7)


def test_noise_floor_unseen_metric_counts_as_zero_floor() -> None:
    floor = NoiseFloor()
    floor.add(compare({"v": np.ones(2)}, {"v": np.ones(2)}))
    other = Comparison(outputs={}, diverged=False)
    assert floor.judge(other) is True
    probs = compare({"p": np.array([[0.5, 0.5]])}, {"p": np.array([[0.6, 0.4]])})
    assert floor.judge(probs) is False


# --- properties ------------------------------------------------------------------------


_rows = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(2, 5)),
    elements=st.floats(0.0, 1.0, allow_nan=False),
)


@settings(max_examples=40, deadline=None)
@given(_rows)
def test_self_comparison_never_diverges(a: np.ndarray) -> None:
    c = compare({"x": a}, {"x": a.copy()})
    assert c.diverged is False
    assert NoiseFloor().judge(c) is None


@settings(max_examples=40, deadline=None)
@given(_rows, st.data())
def test_js_is_bounded_and_symmetric(a: np.ndarray, data: st.DataObject) -> None:
    b = data.draw(hnp.arrays(np.float64, a.shape, elements=st.floats(0.0, 1.0)))
    js = js_divergence(a, b)
    assert np.all((js >= 0) & (js <= 1))
    np.testing.assert_allclose(js, js_divergence(b, a), atol=1e-12)


# ---------------------------------------------------------------- compare_batch


def _assert_same_comparison(got, want):
    assert got.diverged == want.diverged
    assert got.outputs.keys() == want.outputs.keys()
    for alias, w in want.outputs.items():
        g = got.outputs[alias]
        assert (g.kind, g.diverged, g.label_flip, g.within, g.message) == (
            w.kind,
            w.diverged,
            w.label_flip,
            w.within,
            w.message,
        ), alias
        for name in ("max_abs", "max_rel", "js_max"):  # maxima are exact
            assert getattr(g, name) == getattr(w, name), (alias, name)
        for name in ("top1_agreement", "topk_overlap", "js_mean", "agreement"):
            gv, wv = getattr(g, name), getattr(w, name)
            assert (gv is None) == (wv is None), (alias, name)
            if wv is not None:
                assert gv == pytest.approx(wv, rel=1e-12, abs=1e-15), (alias, name)


def _split(arrays, rows):
    out, start = [], 0
    for r in rows:
        out.append({k: v[start : start + r] for k, v in arrays.items()})
        start += r
    return out


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    noise=st.sampled_from([0.0, 1e-9, 0.02, 0.5]),
    nan=st.booleans(),
)
def test_compare_batch_equals_compare_per_request(rows, seed, noise, nan):
    rng = np.random.default_rng(seed)
    n = sum(rows)

    def probs(shape):
        x = rng.random(shape)
        return x / x.sum(axis=-1, keepdims=True)

    primary = {
        "value": rng.normal(size=(n, 3)),
        "scores": probs((n, 4)),
        "seq": probs((n, 2, 3)),
        "logit": rng.normal(size=(n, 5)),
        "cls": rng.integers(0, 3, size=(n,)),
        "name": np.array([f"c{i}" for i in rng.integers(0, 2, size=n)], dtype=object),
        "mixed": np.where(rng.random((n, 1)) < 0.5, probs((n, 3)), rng.normal(size=(n, 3))),
    }
    shadow = {
        "value": primary["value"] + noise * rng.normal(size=(n, 3)),
        "scores": np.abs(primary["scores"] + noise * rng.normal(size=(n, 4))),
        "seq": probs((n, 2, 3)) if noise > 0.1 else primary["seq"],
        "logit": primary["logit"] + noise * rng.normal(size=(n, 5)),
        "cls": np.where(rng.random(n) < noise, (primary["cls"] + 1) % 3, primary["cls"]),
        "name": primary["name"].copy(),
        "mixed": primary["mixed"] + noise,
    }
    if nan:
        primary["value"][0, 0] = np.nan
        shadow["value"][-1, -1] = np.nan
    rules = {
        "value": rule(kind="regression", atol=1e-3, rtol=1e-2),
        "logit": rule(kind="logits", max_js=0.01),
        "seq": rule(kind="probabilities", top_k=2),
    }
    got = compare_batch(primary, shadow, rows, rules)
    want = [
        compare(p, s, rules)
        for p, s in zip(_split(primary, rows), _split(shadow, rows), strict=True)
    ]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        _assert_same_comparison(g, w)


def test_compare_batch_schema_cases_and_empty_requests():
    a = {"x": np.ones((3, 2)), "only_primary": np.ones((3, 1))}
    b = {"x": np.ones((3, 3)), "only_shadow": np.ones((3, 1))}
    got = compare_batch(a, b, [1, 2])
    want = [compare(p, s) for p, s in zip(_split(a, [1, 2]), _split(b, [1, 2]), strict=True)]
    for g, w in zip(got, want, strict=True):
        _assert_same_comparison(g, w)
        assert (
            g.outputs["x"].message == "shape (1, 2) != (1, 3)" or "(2, 2)" in g.outputs["x"].message
        )
    # a dtype mismatch, and a request with no rows (handled one by one)
    got = compare_batch({"y": np.ones((2, 1))}, {"y": np.array([["a"], ["b"]])}, [1, 1])
    assert all(c.outputs["y"].kind == "schema" and c.diverged for c in got)
    got = compare_batch({"y": np.ones((2, 1))}, {"y": np.ones((2, 1))}, [0, 2])
    assert [c.diverged for c in got] == [False, False]
    assert compare_batch({}, {}, []) == []
