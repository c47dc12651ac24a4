"""Training feature statistics (``gateway.v1.FeatureStatistics``).

Computed by the exporter from the raw training features and shipped with the
model version.  Numeric features get count / NaN / inf counts, mean, std, min,
max, quantiles, an equal-width histogram (for Jensen-Shannon divergence) and a
quantile histogram (for PSI); categorical features (strings, or ints declared
categorical) get value frequencies capped at ``max_values`` distinct values.
Statistics are over all elements of a feature (all rows, all positions of a
[batch, k] feature).  The wire format lives in :mod:`gateway.bundle.statistics_codec`.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.preprocessing.values import ValueKind, as_bytes, value_kind

__all__ = [
    "DEFAULT_PERCENTILES",
    "CategoricalStats",
    "FeatureStatistics",
    "FeatureStats",
    "Histogram",
    "NumericStats",
    "compute_statistics",
]

DEFAULT_PERCENTILES: tuple[float, ...] = (0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 100)


@dataclass(frozen=True)
class Histogram:
    """Bucket i counts values in ``[edges[i], edges[i+1])``, the last bucket closed.

    :meth:`bucket_indices` clamps values outside ``[edges[0], edges[-1]]`` into the
    edge buckets.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.edges) != len(self.counts) + 1 or not self.counts:
            raise ValueError("histogram needs len(edges) == len(counts) + 1 >= 2")

    @property
    def num_buckets(self) -> int:
        """Number of buckets."""
        return len(self.counts)

    def bucket_indices(self, values: np.ndarray) -> np.ndarray:
        """Bucket index of each (finite) value, clamped to the edge buckets; int64."""
        inner = np.asarray(self.edges[1:-1], dtype=np.float64)
        return np.searchsorted(inner, values, side="right").astype(np.int64, copy=False)

    @classmethod
    def of(cls, values: np.ndarray, edges: np.ndarray) -> Histogram:
        """Histogram of finite ``values`` over the given ``edges``."""
        hist = cls(tuple(float(e) for e in edges), (0,) * (len(edges) - 1))
        counts = np.bincount(hist.bucket_indices(values), minlength=hist.num_buckets)
        return cls(hist.edges, tuple(int(c) for c in counts))


@dataclass(frozen=True)
class NumericStats:
    """Summary of a numeric feature's finite values, plus NaN and inf counts."""

    count: int
    missing: int
    infinite: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: tuple[tuple[float, float], ...]
    """(percentile in [0, 100], value) pairs."""
    histogram: Histogram
    quantile_histogram: Histogram


@dataclass(frozen=True)
class CategoricalStats:
    """Value frequencies: the ``values`` with their ``counts`` (most frequent first) and the rest.

    ``complete`` is true when every training value is listed (the vocabulary was
    not capped), which is what makes "unseen category" meaningful.
    """

    count: int
    missing: int
    unique: int
    values: tuple[str, ...] | tuple[int, ...]
    counts: tuple[int, ...]
    other_count: int

    @property
    def complete(self) -> bool:
        """Whether every distinct training value is listed."""
        return self.other_count == 0 and len(self.values) == self.unique


@dataclass(frozen=True)
class FeatureStats:
    """One raw feature's kind, dtype, shape after the batch, and numeric or categorical stats."""

    feature: str
    kind: ValueKind
    dtype: str
    shape: tuple[int, ...]
    numeric: NumericStats | None = None
    categorical: CategoricalStats | None = None

    def __post_init__(self) -> None:
        if (self.numeric is None) == (self.categorical is None):
            raise ValueError(f"feature {self.feature!r}: exactly one of numeric/categorical")


@dataclass(frozen=True)
class FeatureStatistics:
    """Statistics of every raw training feature, keyed by feature name."""

    num_examples: int
    features: Mapping[str, FeatureStats]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "features", types.MappingProxyType(dict(sorted(self.features.items())))
        )

    def __eq__(self, other: object) -> bool:
        """Equal when the example count and every feature's stats are equal."""
        if not isinstance(other, FeatureStatistics):
            return NotImplemented
        return self.num_examples == other.num_examples and dict(self.features) == dict(
            other.features
        )

    __hash__ = None  # type: ignore[assignment]


def _numeric_stats(
    values: np.ndarray,
    *,
    histogram_buckets: int,
    quantile_buckets: int,
    percentiles: Sequence[float],
) -> NumericStats:
    x = values.reshape(-1).astype(np.float64)
    nan = np.isnan(x)
    inf = np.isinf(x)
    finite = x[~nan & ~inf]
    if finite.size == 0:
        empty = Histogram((0.0, 0.0), (0,))
        nanv = float("nan")
        return NumericStats(
            0, int(nan.sum()), int(inf.sum()), nanv, nanv, nanv, nanv, (), empty, empty
        )
    lo, hi = float(finite.min()), float(finite.max())
    qs = np.percentile(finite, list(percentiles))
    width_edges = np.linspace(lo, hi, histogram_buckets + 1) if hi > lo else np.array([lo, hi])
    q_edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, quantile_buckets + 1)))
    if q_edges.size < 2:
        q_edges = np.array([lo, hi])
    return NumericStats(
        count=int(finite.size),
        missing=int(nan.sum()),
        infinite=int(inf.sum()),
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=lo,
        max=hi,
        quantiles=tuple((float(p), float(q)) for p, q in zip(percentiles, qs, strict=True)),
        histogram=Histogram.of(finite, width_edges),
        quantile_histogram=Histogram.of(finite, q_edges),
    )


def _categorical_stats(values: np.ndarray, *, max_values: int) -> CategoricalStats:
    x = values.reshape(-1)
    missing = 0
    keys: np.ndarray
    if value_kind(x) is ValueKind.STRING:
        if x.dtype.kind == "O":
            present = x != None  # noqa: E711
            missing = int(x.size - np.count_nonzero(present))
            x = x[present]
        keys = as_bytes(x)
    else:
        keys = x.astype(np.int64)
    uniq, counts = np.unique(keys, return_counts=True)
    order = np.lexsort((uniq, -counts))[:max_values]
    top = uniq[order]
    top_counts = counts[order]
    vals: tuple[str, ...] | tuple[int, ...]
    if top.dtype.kind == "S":
        vals = tuple(v.decode("utf-8", errors="replace") for v in top.tolist())
    else:
        vals = tuple(int(v) for v in top.tolist())
    return CategoricalStats(
        count=int(keys.size),
        missing=missing,
        unique=int(uniq.size),
        values=vals,
        counts=tuple(int(c) for c in top_counts),
        other_count=int(keys.size - int(top_counts.sum())),
    )


def compute_statistics(
    train_features: Mapping[str, np.ndarray],
    *,
    categorical: Collection[str] = (),
    max_values: int = 10_000,
    histogram_buckets: int = 20,
    quantile_buckets: int = 10,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> FeatureStatistics:
    """Statistics of raw training features ([examples, ...] arrays with equal first dimensions).

    String features, and int features named in ``categorical``, get value
    frequencies (top ``max_values`` distinct values); other features numeric stats
    with ``histogram_buckets`` equal-width and ``quantile_buckets`` quantile buckets.
    """
    unknown = set(categorical) - set(train_features)
    if unknown:
        raise ValueError(f"categorical feature(s) {sorted(unknown)} not in the training features")
    rows = {int(np.shape(v)[0]) for v in train_features.values()}
    if len(rows) > 1:
        raise ValueError(f"training features have different numbers of examples: {sorted(rows)}")
    feats: dict[str, FeatureStats] = {}
    for name, values in train_features.items():
        arr = np.asarray(values)
        kind = value_kind(arr)
        shape = tuple(int(d) for d in arr.shape[1:])
        dtype = "string" if kind is ValueKind.STRING else arr.dtype.name
        if kind is ValueKind.STRING or name in categorical:
            if kind is ValueKind.FLOAT:
                raise ValueError(f"feature {name!r}: float features cannot be categorical")
            feats[name] = FeatureStats(
                name, kind, dtype, shape, categorical=_categorical_stats(arr, max_values=max_values)
            )
        else:
            feats[name] = FeatureStats(
                name,
                kind,
                dtype,
                shape,
                numeric=_numeric_stats(
                    arr,
                    histogram_buckets=histogram_buckets,
                    quantile_buckets=quantile_buckets,
                    percentiles=percentiles,
                ),
            )
    return FeatureStatistics(rows.pop() if rows else 0, feats)
