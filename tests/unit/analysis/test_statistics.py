"""Training statistics: hand-computed values and proto round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway._proto.gateway.v1 import statistics_pb2 as pb
from gateway.analysis.statistics import (
    Histogram,
    compute_statistics,
)
from gateway.bundle.statistics_codec import (
    statistics_from_proto,
    statistics_from_text,
    statistics_to_proto,
    statistics_to_text,
)
from gateway.preprocessing.values import ValueKind


def test_numeric_statistics_by_hand() -> None:
    x = np.array([[1.0], [2.0], [3.0], [4.0], [np.nan], [np.inf]], dtype=np.float32)
    st_ = compute_statistics({"x": x}, histogram_buckets=3, quantile_buckets=2)
    f = st_.features["x"]
    assert (f.kind, f.dtype, f.shape) == (ValueKind.FLOAT, "float32", (1,))
    n = f.numeric
    assert n is not None and f.categorical is None
    assert (n.count, n.missing, n.infinite) == (4, 1, 1)
    assert (n.mean, n.min, n.max) == (2.5, 1.0, 4.0)
    assert n.std == pytest.approx(np.sqrt(1.25))
    q = dict(n.quantiles)
    assert (q[0], q[50], q[100]) == (1.0, 2.5, 4.0)
    assert q[25] == 1.75
    assert n.histogram == Histogram((1.0, 2.0, 3.0, 4.0), (1, 1, 2))
    assert n.quantile_histogram == Histogram((1.0, 2.5, 4.0), (2, 2))
    assert st_.num_examples == 6


def test_constant_and_empty_numeric_features() -> None:
    st_ = compute_statistics({"c": np.full(5, 7), "e": np.full(5, np.nan)})
    c = st_.features["c"].numeric
    assert c is not None
    assert c.histogram == Histogram((7.0, 7.0), (5,))
    assert c.quantile_histogram == Histogram((7.0, 7.0), (5,))
    assert c.std == 0.0
    e = st_.features["e"].numeric
    assert e is not None and e.count == 0 and e.missing == 5 and np.isnan(e.mean)


def test_categorical_statistics_by_hand() -> None:
    words = np.array(["b", "a", "b", "c", "b", "a", None], dtype=object)
    ints = np.array([[3, 3], [1, 2], [3, 1], [9, 9], [3, 1], [2, 2], [1, 1]])
    st_ = compute_statistics({"w": words, "i": ints}, categorical={"i"}, max_values=2)
    w = st_.features["w"].categorical
    assert w is not None
    assert (w.count, w.missing, w.unique) == (6, 1, 3)
    assert (w.values, w.counts, w.other_count) == (("b", "a"), (3, 2), 1)
    assert not w.complete
    i = st_.features["i"]
    assert (i.kind, i.shape) == (ValueKind.INT, (2,))
    assert i.categorical is not None
    # counts: 1 -> 5, 3 -> 4, 2 -> 3, 9 -> 2 ; ties broken by value
    assert i.categorical.values == (1, 3)
    assert i.categorical.counts == (5, 4)
    assert i.categorical.other_count == 5
    full = compute_statistics({"w": words}).features["w"].categorical
    assert full is not None and full.complete and full.values == ("b", "a", "c")


def test_validation() -> None:
    with pytest.raises(ValueError, match="different numbers of examples"):
        compute_statistics({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="not in the training features"):
        compute_statistics({"a": np.zeros(3)}, categorical={"b"})
    with pytest.raises(ValueError, match="float features cannot be categorical"):
        compute_statistics({"a": np.zeros(3)}, categorical={"a"})


def test_proto_and_text_round_trip() -> None:
    rng = np.random.default_rng(0)
    stats = compute_statistics(
        {
            "x": rng.normal(size=(50, 1)),
            "s": rng.choice(["é", "b", ""], 50),
            "k": rng.integers(0, 4, (50, 3)),
        },
        categorical={"k"},
    )
    msg = statistics_to_proto(stats)
    assert [f.feature for f in msg.features] == ["k", "s", "x"]
    again = pb.FeatureStatistics.FromString(msg.SerializeToString())
    assert statistics_from_proto(again) == stats
    text = statistics_to_text(stats)
    assert "top_values {" in text and 'text: "é"' in text and "histogram {" in text
    assert statistics_from_text(text) == stats


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.integers(1, 40),
        elements=st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
    )
)
def test_histograms_account_for_every_finite_value(x: np.ndarray) -> None:
    n = compute_statistics({"x": x}).features["x"].numeric
    assert n is not None
    assert sum(n.histogram.counts) == x.size
    assert sum(n.quantile_histogram.counts) == x.size
    assert n.histogram.edges[0] == n.min and n.histogram.edges[-1] == n.max
    assert (
        statistics_from_proto(statistics_to_proto(compute_statistics({"x": x})))
        .features["x"]
        .numeric
        == n
    )
