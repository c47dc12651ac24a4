"""Training/serving distribution skew: metrics and a sliding window of serving values.

Metrics (TFDV definitions):

* :func:`js_divergence` - Jensen-Shannon divergence of two histograms over the
  same buckets, log base 2 (so in [0, 1]);
* :func:`linf_distance` - L-infinity distance between two normalized
  distributions over the same buckets, and :func:`categorical_linf` for value
  frequency mappings (over the union of values);
* :func:`psi` - population stability index ``sum((a - e) * ln(a / e))`` with
  empty buckets replaced by a small epsilon.

:class:`SkewWindow` keeps, per feature, bucket counts of recent serving values in
a ring buffer of slices (count- and/or time-based) and reports the metrics
against the training statistics.  Bucketing of serving values:

* numeric features use the training histogram's bucket edges (equal-width for
  JS and L-inf, quantile buckets for PSI) plus an underflow bucket (below the
  training min) and an overflow bucket (above the training max), both empty in
  training.  Mass outside the training range thus counts as mass training never
  had, as in TFDV, which aligns the two histograms on the union of their
  boundaries (a serving stream sitting entirely beyond the training max has JS
  1, not the JS of a stream piled up in the last training bucket).  NaN / inf
  are left out (the ``nan_or_inf`` check covers them);
* categorical features use one bucket per listed training value plus one
  "other" bucket that holds both the training ``other_count`` (values beyond the
  frequency cap) and every serving value not listed.  When the training
  frequencies are complete (not capped) this L-inf equals TFDV's per-value
  L-inf when at most one unseen value occurs, and is larger otherwise (the
  unseen values' shares add up instead of counting only the largest).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from gateway.analysis.statistics import FeatureStatistics, FeatureStats
from gateway.config import SkewConfig, SkewThresholdsConfig
from gateway.preprocessing.values import as_bytes

__all__ = [
    "DEFAULT_SKEW_RULES",
    "FeatureSkew",
    "SkewRules",
    "SkewThresholds",
    "SkewWindow",
    "categorical_linf",
    "js_divergence",
    "linf_distance",
    "psi",
]

DEFAULT_PSI_EPSILON = 1e-4


def _normalize(counts: ArrayLike) -> np.ndarray | None:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or np.any(c < 0):
        raise ValueError("expected a 1-D array of non-negative counts")
    total = c.sum()
    return None if total <= 0 else c / total


def _pair(p: ArrayLike, q: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    pn, qn = _normalize(p), _normalize(q)
    if pn is not None and qn is not None and pn.shape != qn.shape:
        raise ValueError(f"distributions have different bucket counts {pn.shape} vs {qn.shape}")
    if pn is None or qn is None:
        return None
    return pn, qn


def js_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two count vectors over the same buckets.

    NaN when either distribution is empty.
    """
    pair = _pair(p, q)
    if pair is None:
        return math.nan
    pn, qn = pair
    m = 0.5 * (pn + qn)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(pn > 0, pn * np.log2(pn / m), 0.0).sum()
        kl_q = np.where(qn > 0, qn * np.log2(qn / m), 0.0).sum()
    return float(min(1.0, max(0.0, 0.5 * (kl_p + kl_q))))


def linf_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Max absolute difference of two normalized count vectors (NaN if one is empty)."""
    pair = _pair(p, q)
    if pair is None:
        return math.nan
    pn, qn = pair
    return float(np.max(np.abs(pn - qn)))


def categorical_linf(train: Mapping[object, float], serving: Mapping[object, float]) -> float:
    """L-infinity distance of two value -> count mappings, normalized, over the union of values."""
    keys = list(set(train) | set(serving))
    return linf_distance([train.get(k, 0.0) for k in keys], [serving.get(k, 0.0) for k in keys])


def psi(expected: ArrayLike, actual: ArrayLike, epsilon: float = DEFAULT_PSI_EPSILON) -> float:
    """Population stability index of ``actual`` vs ``expected`` counts over the same buckets.

    Proportions below ``epsilon`` (empty buckets) are raised to ``epsilon``; NaN
    when either distribution is empty.
    """
    pair = _pair(expected, actual)
    if pair is None:
        return math.nan
    e, a = (np.maximum(x, epsilon) for x in pair)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class SkewThresholds:
    """Per-metric thresholds: crossed when the value is strictly greater; None = not checked."""

    js: float | None
    linf: float | None
    psi: float | None

    @classmethod
    def from_config(cls, cfg: SkewThresholdsConfig) -> SkewThresholds:
        """One ``skew.numeric`` / ``skew.categorical`` / ``skew.per_feature.<f>`` block."""
        return cls(js=cfg.js, linf=cfg.linf, psi=cfg.psi)


@dataclass(frozen=True)
class SkewRules:
    """When a feature's window counts as drifted: thresholds per feature type, overridable
    per feature (an override replaces the type's), built from the model's
    :class:`~gateway.config.SkewConfig` with :meth:`from_config` (which holds the defaults).

    A feature is only flagged once its window holds at least ``min_values`` values.
    """

    numeric: SkewThresholds
    categorical: SkewThresholds
    per_feature: Mapping[str, SkewThresholds]
    min_values: int
    psi_epsilon: float = DEFAULT_PSI_EPSILON
    """Not configurable: the share an empty bucket counts as in PSI."""

    @classmethod
    def from_config(cls, cfg: SkewConfig) -> SkewRules:
        """The thresholds and ``min_values`` of a ``skew`` block (the window sizes are
        :class:`SkewWindow`'s, ``enabled`` and ``check_interval_seconds`` the caller's)."""
        return cls(
            numeric=SkewThresholds.from_config(cfg.numeric),
            categorical=SkewThresholds.from_config(cfg.categorical),
            per_feature={k: SkewThresholds.from_config(v) for k, v in cfg.per_feature.items()},
            min_values=cfg.min_values,
        )

    def thresholds_for(self, feature: str, *, categorical: bool) -> SkewThresholds:
        """Effective thresholds of a feature."""
        if feature in self.per_feature:
            return self.per_feature[feature]
        return self.categorical if categorical else self.numeric


_DEFAULT_SKEW: Final = SkewConfig()
DEFAULT_SKEW_RULES: Final = SkewRules.from_config(_DEFAULT_SKEW)
"""The rules of a model whose config has no ``skew`` block."""


@dataclass(frozen=True)
class FeatureSkew:
    """Current skew of one feature's serving window against training."""

    feature: str
    categorical: bool
    num_values: int
    js: float
    linf: float
    psi: float
    thresholds: SkewThresholds
    crossed: tuple[str, ...]
    """Names of the metrics ("js", "linf", "psi") above their threshold."""

    @property
    def drifted(self) -> bool:
        """Whether any metric crossed its threshold."""
        return bool(self.crossed)


class _Buckets:
    """Maps a batch of one feature's serving values to bucket indices (vectorized)."""

    def __init__(self, st: FeatureStats) -> None:
        self.categorical = st.categorical is not None
        self.sorted_keys: np.ndarray | None = None
        self.sorted_bucket: np.ndarray | None = None
        if st.categorical is not None:
            cat = st.categorical
            values = cat.values
            if values and isinstance(values[0], str):
                keys = np.array([str(v).encode("utf-8") for v in values], dtype=np.bytes_)
            else:
                keys = np.array(values, dtype=np.int64)
            order = np.argsort(keys, kind="stable")
            self.sorted_keys = keys[order]
            self.sorted_bucket = order.astype(np.int64)
            self.other = len(values)
            self.train = np.array([*cat.counts, cat.other_count], dtype=np.float64)
            self.train_psi = self.train
            self.num_main = len(values) + 1
            self.num_buckets = self.num_main
            return
        num = st.numeric
        assert num is not None
        self.edges = _search_edges(num.histogram.edges)
        self.q_edges = _search_edges(num.quantile_histogram.edges)
        self.num_main = num.histogram.num_buckets + 2
        self.num_buckets = self.num_main + num.quantile_histogram.num_buckets + 2
        self.train = np.asarray([0, *num.histogram.counts, 0], dtype=np.float64)
        self.train_psi = np.asarray([0, *num.quantile_histogram.counts, 0], dtype=np.float64)

    def indices(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """(bucket indices into the feature's count array, number of values counted)."""
        flat = np.asarray(values).reshape(-1)
        if self.categorical:
            keys_sorted = self.sorted_keys
            assert keys_sorted is not None and self.sorted_bucket is not None
            if keys_sorted.dtype.kind == "S":
                if flat.dtype.kind not in "SUO":
                    return np.zeros(0, dtype=np.int64), 0
                if flat.dtype.kind == "O":
                    flat = flat[flat != None]  # noqa: E711
                keys = as_bytes(flat)
            else:
                if flat.dtype.kind not in "iub":
                    return np.zeros(0, dtype=np.int64), 0
                keys = flat.astype(np.int64, copy=False)
            if keys_sorted.size == 0:
                return np.full(keys.shape, self.other, dtype=np.int64), keys.size
            pos = keys_sorted.searchsorted(keys)
            np.minimum(pos, keys_sorted.size - 1, out=pos)
            idx = np.where(keys_sorted[pos] == keys, self.sorted_bucket[pos], self.other)
            return idx, keys.size
        if flat.dtype.kind not in "fiub":
            return np.zeros(0, dtype=np.int64), 0
        x = flat.astype(np.float64, copy=False)
        finite = np.isfinite(x)
        if not finite.all():
            x = x[finite]
        main = self.edges.searchsorted(x, side="right")
        quantile = self.q_edges.searchsorted(x, side="right")
        quantile += self.num_main
        return np.concatenate((main, quantile)), x.size


def _search_edges(edges: Sequence[float]) -> np.ndarray:
    """Histogram edges prepared so that ``np.searchsorted(e, x, side="right")`` is the index
    of ``x`` among [underflow, training buckets..., overflow].

    Training bucket i (index i + 1) holds [edges[i], edges[i+1]), the last one closed:
    the last edge is moved up by one ulp so that a value equal to the training max
    lands in the last training bucket, not in the overflow bucket (the same for the
    single point bucket of a constant training feature).
    """
    out = np.asarray(edges, dtype=np.float64).copy()
    out[-1] = np.nextafter(out[-1], np.inf)
    return out


class _Ring:
    """Ring buffer of per-slice bucket counts (an evicted slice is zeroed, so the window's
    counts are the sum over all slices, computed when reported, not per batch)."""

    def __init__(self, num_buckets: int, num_slices: int) -> None:
        self.cap = num_slices + 1  # full slices + the one being filled
        self.counts = np.zeros((self.cap, num_buckets), dtype=np.int64)
        self.values = np.zeros(self.cap, dtype=np.int64)
        self.slice_id = np.zeros(self.cap, dtype=np.int64)
        self.total_values = 0
        self.head = 0
        self.used = 1

    def oldest(self) -> int:
        return (self.head - self.used + 1) % self.cap

    def evict_oldest(self) -> None:
        i = self.oldest()
        self.total_values -= int(self.values[i])
        self.counts[i] = 0
        self.values[i] = 0
        self.used -= 1

    def open(self, slice_id: int) -> None:
        if self.used == self.cap:
            self.evict_oldest()
        self.head = (self.head + 1) % self.cap
        self.counts[self.head] = 0
        self.values[self.head] = 0
        self.slice_id[self.head] = slice_id
        self.used += 1

    def add(self, idx: np.ndarray, num_values: int) -> None:
        row = self.counts[self.head]
        if num_values == 1:
            row[idx] += 1  # one value: its (at most two) bucket indices are distinct
        elif idx.size * 8 < row.size:
            np.add.at(row, idx, 1)
        else:
            row += np.bincount(idx, minlength=row.size)
        self.values[self.head] += num_values
        self.total_values += num_values

    def total(self) -> np.ndarray:
        """Bucket counts of the whole window."""
        out: np.ndarray = self.counts.sum(axis=0)
        return out


class SkewWindow:
    """Sliding window of serving values per feature with JS / L-inf / PSI against training.

    The window keeps the last ``max_values`` values of each feature (in
    ``num_slices`` slices of ``max_values / num_slices``, so it holds between
    ``max_values`` and ``max_values`` + one slice) and/or the values of the last
    ``max_age_seconds`` (slices of ``max_age_seconds / num_slices``, so up to one
    slice more).  Adding a batch costs O(values + buckets) numpy work per feature.
    ``clock`` (seconds, monotonic) is injectable for tests.  Thread-safe.
    :meth:`from_config` builds the window of a model's ``skew`` block; the defaults
    of ``config`` (the :class:`SkewRules`), ``max_values`` and ``max_age_seconds``
    are the config's (``SkewConfig()``).
    """

    def __init__(
        self,
        stats: FeatureStatistics,
        config: SkewRules | None = None,
        *,
        max_values: int | None = _DEFAULT_SKEW.window_values,
        max_age_seconds: float | None = _DEFAULT_SKEW.window_seconds,
        num_slices: int = 10,
        features: Collection[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Precompute bucketing and training distributions for ``features`` (default: all)."""
        if max_values is None and max_age_seconds is None:
            raise ValueError("SkewWindow needs max_values and/or max_age_seconds")
        if num_slices < 1:
            raise ValueError("num_slices must be >= 1")
        self.config = config or DEFAULT_SKEW_RULES
        self._clock = clock
        self._max_values = max_values
        self._slice_values = None if max_values is None else max(1, -(-max_values // num_slices))
        self._max_age = max_age_seconds
        self._slice_seconds = None if max_age_seconds is None else max_age_seconds / num_slices
        self._num_slices = num_slices
        names = stats.features.keys() if features is None else features
        unknown = set(names) - set(stats.features)
        if unknown:
            raise ValueError(f"no training statistics for feature(s) {sorted(unknown)}")
        self._buckets = {n: _Buckets(stats.features[n]) for n in names}
        self._rings: dict[str, _Ring] = {}
        self._lock = threading.Lock()
        now_id = self._slice_id(self._clock())
        for n, b in self._buckets.items():
            ring = _Ring(b.num_buckets, num_slices)
            ring.slice_id[ring.head] = now_id
            self._rings[n] = ring

    @classmethod
    def from_config(
        cls,
        stats: FeatureStatistics,
        cfg: SkewConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> SkewWindow:
        """The window of a model's ``skew`` block: its rules and window sizes
        (``enabled`` and ``check_interval_seconds`` are the caller's)."""
        return cls(
            stats,
            SkewRules.from_config(cfg),
            max_values=cfg.window_values,
            max_age_seconds=cfg.window_seconds,
            clock=clock,
        )

    def _slice_id(self, now: float) -> int:
        return 0 if self._slice_seconds is None else int(now // self._slice_seconds)

    def _roll(self, ring: _Ring, now_id: int) -> None:
        """Open a new time slice if needed and drop slices older than max_age."""
        if self._slice_seconds is None:
            return
        if ring.slice_id[ring.head] != now_id:
            ring.open(now_id)
        while ring.used > 1 and ring.slice_id[ring.oldest()] <= now_id - self._num_slices - 1:
            ring.evict_oldest()

    def add(self, features: Mapping[str, np.ndarray]) -> None:
        """Count one batch of raw serving features (unknown features are ignored)."""
        now_id = self._slice_id(self._clock())
        prepared = [
            (name, *self._buckets[name].indices(np.asarray(values)))
            for name, values in features.items()
            if name in self._buckets
        ]
        with self._lock:
            for name, idx, n in prepared:
                ring = self._rings[name]
                self._roll(ring, now_id)
                if self._slice_values is None or self._max_values is None:
                    ring.add(idx, n)
                    continue
                self._add_counted(ring, idx, n, now_id)

    def _add_counted(self, ring: _Ring, idx: np.ndarray, n: int, now_id: int) -> None:
        """Fill slices of ``_slice_values`` values each, then evict beyond ``max_values``."""
        assert self._slice_values is not None and self._max_values is not None
        if n <= self._slice_values - int(ring.values[ring.head]):
            ring.add(idx, n)  # the common case: the batch fits the current slice
            start = n
        else:
            start = 0
        per_value = idx.size // n if n else 0  # numeric features count 2 buckets per value
        while start < n:
            room = self._slice_values - int(ring.values[ring.head])
            if room <= 0:
                ring.open(now_id)
                continue
            take = min(room, n - start)
            if per_value == 2:
                half = idx.size // 2
                chunk = np.concatenate(
                    (idx[start : start + take], idx[half + start : half + start + take])
                )
            else:
                chunk = idx[start : start + take]
            ring.add(chunk, take)
            start += take
        while ring.used > 1:
            oldest = ring.oldest()
            if ring.total_values - int(ring.values[oldest]) < self._max_values:
                break
            ring.evict_oldest()

    def report(self) -> dict[str, FeatureSkew]:
        """Current JS / L-inf / PSI and threshold crossings of every windowed feature."""
        now_id = self._slice_id(self._clock())
        out: dict[str, FeatureSkew] = {}
        with self._lock:
            snapshot = {}
            for name, ring in self._rings.items():
                self._roll(ring, now_id)
                snapshot[name] = (ring.total(), ring.total_values)
        cfg = self.config
        for name, (total, n) in snapshot.items():
            b = self._buckets[name]
            main = total[: b.num_main]
            psi_counts = main if b.categorical else total[b.num_main :]
            js = js_divergence(b.train, main)
            linf = linf_distance(b.train, main)
            p = psi(b.train_psi, psi_counts, cfg.psi_epsilon)
            th = cfg.thresholds_for(name, categorical=b.categorical)
            crossed: list[str] = []
            if n >= cfg.min_values:
                for metric, value, limit in (
                    ("js", js, th.js),
                    ("linf", linf, th.linf),
                    ("psi", p, th.psi),
                ):
                    if limit is not None and value > limit:
                        crossed.append(metric)
            out[name] = FeatureSkew(name, b.categorical, n, js, linf, p, th, tuple(crossed))
        return out

    def drifted(self) -> list[str]:
        """Names of the features whose skew currently crosses a threshold."""
        return [name for name, s in self.report().items() if s.drifted]
