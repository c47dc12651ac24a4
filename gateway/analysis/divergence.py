"""Per-request divergence metrics between a primary and a shadow model version.

Pure numpy, no I/O: `compare` is called once per mirrored request, so every
metric is computed with vectorised numpy over the whole batch (no Python loop
over rows).

Contract
--------
* Arrays carry the batch as their first dimension. For probability-like
  outputs a "row" is one distribution: every position of the leading
  dimensions (``shape[:-1]``), so a ``(batch, seq, classes)`` output has
  ``batch * seq`` rows.
* The metric set of an output alias is chosen by its kind, taken from the
  alias' `OutputRule` or inferred from the *primary* array (the reference):

  - ``regression``: ``max_abs``, ``max_rel`` (``|a-b| / max(|a|, TINY)``, ``a``
    being the primary), ``within`` (``all(|a-b| <= atol + rtol*|b|)``, like
    ``np.allclose``); diverged = not within.
  - ``probabilities`` / ``logits`` (logits get a softmax first): ``label_flip``,
    ``top1_agreement``, ``topk_overlap``, ``max_abs`` (of the probabilities),
    ``js_mean``/``js_max`` (Jensen-Shannon divergence, base 2, in [0, 1]).
    Diverged if ``(label_flip and rule.label_flip) or max_abs > rule.max_abs
    or js_max > rule.max_js``.
  - ``classes`` (ints, bools, strings, bytes): ``agreement`` (exact row
    agreement rate); diverged if any row differs.
  - ``schema``: an alias missing on one side, or shapes / dtypes that make
    the metrics uncomputable; always diverged, with a ``message``.

* NaN handling: positions where both sides are NaN (or equal infinities)
  count as equal; a NaN on one side only is an infinite difference. Values
  that are not finite are written as ``null`` by `Comparison.to_json` (JSON
  has no NaN/Infinity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from gateway.config import OutputRuleConfig

OutputKind = Literal["regression", "probabilities", "logits", "classes", "schema"]
"""Kinds an output can be compared as (``schema`` is only ever a result)."""

ConfigKind = Literal["auto", "regression", "probabilities", "logits", "classes"]
"""Kinds accepted in an `OutputRule` (``auto`` = infer from the primary array)."""

TINY: Final = 1e-12
"""Denominator floor of the relative difference: ``|a-b| / max(|a|, TINY)``."""

PROB_SUM_TOL: Final = 1e-3
"""How far a row sum may be from 1 for a float output to be inferred as probabilities."""

_FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OutputRule:
    """How one output alias is compared, and when it counts as diverged.

    ``kind="auto"`` infers the kind from the primary array (see module doc).
    ``atol``/``rtol`` apply to regression outputs; ``max_abs`` (largest allowed
    absolute probability difference), ``max_js`` (largest allowed per-row
    Jensen-Shannon divergence, ``None`` = no limit), ``label_flip`` (whether a
    top-1 change counts as divergence) and ``top_k`` apply to probabilities
    and logits.

    Built with :meth:`from_config` (the config validates every field and holds the
    defaults; :data:`DEFAULT_RULE` is the rule of an alias the config does not name).
    """

    kind: ConfigKind
    atol: float
    rtol: float
    max_abs: float
    max_js: float | None
    label_flip: bool
    top_k: int

    @classmethod
    def from_config(cls, cfg: OutputRuleConfig) -> OutputRule:
        """One ``divergence.<output>`` block."""
        return cls(
            kind=cfg.kind,
            atol=cfg.atol,
            rtol=cfg.rtol,
            max_abs=cfg.max_abs,
            max_js=cfg.max_js,
            label_flip=cfg.label_flip,
            top_k=cfg.top_k,
        )


DEFAULT_RULE: Final = OutputRule.from_config(OutputRuleConfig())


@dataclass(frozen=True)
class OutputMetrics:
    """The metrics of one output alias; fields not used by `kind` are None.

    ``distances()`` gives the "bigger is worse" view used by the noise floor.
    """

    kind: OutputKind
    diverged: bool
    max_abs: float | None = None
    max_rel: float | None = None
    within: bool | None = None
    label_flip: bool | None = None
    top1_agreement: float | None = None
    topk_overlap: float | None = None
    js_mean: float | None = None
    js_max: float | None = None
    agreement: float | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The log-schema object of this output: kind, diverged, then the set fields.

        Non-finite floats become ``None`` (JSON null).
        """
        out: dict[str, Any] = {"kind": self.kind, "diverged": self.diverged}
        for name in _JSON_FIELDS[self.kind]:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[name] = value
        return out

    def distances(self) -> dict[str, float]:
        """Metrics oriented so that 0 means identical and larger means more divergent.

        ``top1_disagreement``, ``topk_disagreement`` and ``class_disagreement``
        are ``1 -`` the matching agreement metric. Empty for ``schema``.
        """
        out: dict[str, float] = {}
        for name in ("max_abs", "max_rel", "js_mean", "js_max"):
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        if self.top1_agreement is not None:
            out["top1_disagreement"] = 1.0 - self.top1_agreement
        if self.topk_overlap is not None:
            out["topk_disagreement"] = 1.0 - self.topk_overlap
        if self.agreement is not None:
            out["class_disagreement"] = 1.0 - self.agreement
        return out


_JSON_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "regression": ("max_abs", "max_rel", "within"),
    "probabilities": (
        "label_flip",
        "top1_agreement",
        "topk_overlap",
        "max_abs",
        "js_mean",
        "js_max",
    ),
    "logits": ("label_flip", "top1_agreement", "topk_overlap", "max_abs", "js_mean", "js_max"),
    "classes": ("agreement",),
    "schema": ("message",),
}


@dataclass(frozen=True)
class Comparison:
    """The result of comparing one request's primary and shadow outputs."""

    outputs: dict[str, OutputMetrics]
    diverged: bool

    def to_json(self) -> dict[str, dict[str, Any]]:
        """Exactly the ``outputs`` object of the divergence log schema (v1)."""
        return {alias: metrics.to_json() for alias, metrics in self.outputs.items()}

    def within_noise(self, floor: NoiseFloor) -> bool | None:
        """Whether every metric of every output is <= the floor's max for that output.

        None when the floor has no samples yet. See `NoiseFloor.judge`.
        """
        return floor.judge(self)


def _schema(message: str) -> OutputMetrics:
    return OutputMetrics(kind="schema", diverged=True, message=message)


def _dtype_family(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "fc":
        return "float"
    if dtype.kind in "iub":
        return "int"
    if dtype.kind in "USO":
        return "str"
    return dtype.kind


def _abs_diff(a: _FloatArray, b: _FloatArray) -> _FloatArray:
    """|a-b| with equal values (incl. equal infinities) and NaN-vs-NaN as 0, lone NaN as inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    bad = np.isnan(diff)
    if bad.any():
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff[bad] = np.where(same[bad], 0.0, np.inf)
    return diff


def _compare_regression(a: _FloatArray, b: _FloatArray, rule: OutputRule) -> OutputMetrics:
    if a.size == 0:
        return OutputMetrics(
            kind="regression", diverged=False, max_abs=0.0, max_rel=0.0, within=True
        )
    diff = _abs_diff(a, b)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rel = diff / np.maximum(np.abs(a), TINY)
        rel[diff == 0] = 0.0
        close = (diff <= rule.atol + rule.rtol * np.abs(b)) & np.isfinite(diff)
        within = bool(np.all(close | (diff == 0)))
    return OutputMetrics(
        kind="regression",
        diverged=not within,
        max_abs=float(diff.max()),
        max_rel=float(np.nanmax(rel)) if not np.all(np.isnan(rel)) else math.inf,
        within=within,
    )


def _softmax(x: _FloatArray) -> _FloatArray:
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - x.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        out: _FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def _normalize(p: _FloatArray) -> _FloatArray:
    p = np.maximum(p, 0.0)
    total = p.sum(axis=-1, keepdims=True)
    out: _FloatArray = p / np.where(total > 0, total, 1.0)
    return out


def js_divergence(p: _FloatArray, q: _FloatArray) -> _FloatArray:
    """Per-row Jensen-Shannon divergence (base 2, in [0, 1]) of two (n, k) distributions.

    Rows are clipped to >= 0 and renormalised first (an all-zero row stays
    zero); 0*log(0) counts as 0.
    """
    p = _normalize(p)
    q = _normalize(q)
    m = 0.5 * (p + q)
    # Where p == 0 the ratio stays 1 (log 0), so 0*log(0) terms contribute 0; p > 0 implies m > 0.
    ratio_p = np.divide(p, m, out=np.ones_like(p), where=p > 0)
    ratio_q = np.divide(q, m, out=np.ones_like(q), where=q > 0)
    kl_p = (p * np.log2(ratio_p)).sum(axis=-1)
    kl_q = (q * np.log2(ratio_q)).sum(axis=-1)
    js: _FloatArray = np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0)
    return js


def _topk_mask(p: _FloatArray, k: int) -> npt.NDArray[np.bool_]:
    n_classes = p.shape[-1]
    mask = np.zeros(p.shape, dtype=bool)
    if k >= n_classes:
        mask[:] = True
        return mask
    idx = np.argpartition(-p, k - 1, axis=-1)[:, :k]
    np.put_along_axis(mask, idx, True, axis=-1)
    return mask


def _compare_probabilities(
    a: _FloatArray, b: _FloatArray, rule: OutputRule, kind: OutputKind
) -> OutputMetrics:
    n_classes = a.shape[-1]
    p = a.reshape(-1, n_classes)
    q = b.reshape(-1, n_classes)
    if kind == "logits":
        p, q = _softmax(p), _softmax(q)
    if p.shape[0] == 0:
        return _identical_probabilities(kind)
    same_top1 = np.argmax(p, axis=-1) == np.argmax(q, axis=-1)
    k = min(rule.top_k, n_classes)
    overlap = (_topk_mask(p, k) & _topk_mask(q, k)).sum(axis=-1) / k
    max_abs = float(_abs_diff(p, q).max())
    js = js_divergence(p, q)
    label_flip = not bool(same_top1.all())
    js_max = float(js.max())
    return OutputMetrics(
        kind=kind,
        diverged=_probabilities_diverged(label_flip, max_abs, js_max, rule),
        label_flip=label_flip,
        top1_agreement=float(same_top1.mean()),
        topk_overlap=float(overlap.mean()),
        max_abs=max_abs,
        js_mean=float(js.mean()),
        js_max=js_max,
    )


def _identical_probabilities(kind: OutputKind) -> OutputMetrics:
    """The metrics of probability outputs with no rows (nothing to disagree on)."""
    return OutputMetrics(
        kind=kind,
        diverged=False,
        label_flip=False,
        top1_agreement=1.0,
        topk_overlap=1.0,
        max_abs=0.0,
        js_mean=0.0,
        js_max=0.0,
    )


def _probabilities_diverged(flip: bool, max_abs: float, js_max: float, rule: OutputRule) -> bool:
    """The verdict of probability outputs (see the module doc)."""
    return (
        (flip and rule.label_flip)
        or not max_abs <= rule.max_abs
        or (rule.max_js is not None and js_max > rule.max_js)
    )


def _compare_classes(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> OutputMetrics:
    if a.ndim and a.shape[0] == 0:
        return OutputMetrics(kind="classes", diverged=False, agreement=1.0)
    rows_a = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    rows_b = b.reshape(rows_a.shape)
    same = np.asarray(rows_a == rows_b).all(axis=1)
    agreement = float(same.mean())
    return OutputMetrics(kind="classes", diverged=not bool(same.all()), agreement=agreement)


def _looks_like_probabilities(a: np.ndarray[Any, Any]) -> bool:
    if a.ndim < 2 or a.shape[-1] < 2 or a.size == 0:
        return False
    if a.min() < 0.0 or a.max() > 1.0:  # also False when NaN is present
        return False
    sums = a.sum(axis=-1)
    return bool(np.all(np.abs(sums - 1.0) <= PROB_SUM_TOL))


def infer_kind(array: np.ndarray[Any, Any]) -> OutputKind:
    """The kind ``auto`` resolves to for this (primary) array.

    Floats with ``ndim >= 2``, last dim > 1, values in [0, 1] and rows summing
    to 1 (within `PROB_SUM_TOL`) are probabilities; other floats regression;
    ints, bools, strings and bytes classes.
    """
    family = _dtype_family(array.dtype)
    if family == "float":
        return "probabilities" if _looks_like_probabilities(array) else "regression"
    return "classes"


def compare_output(
    primary: np.ndarray[Any, Any], shadow: np.ndarray[Any, Any], rule: OutputRule = DEFAULT_RULE
) -> OutputMetrics:
    """Compare one output alias (see module doc for the metrics of each kind)."""
    a = np.asarray(primary)
    b = np.asarray(shadow)
    if a.shape != b.shape:
        return _schema(f"shape {a.shape} != {b.shape}")
    fam_a, fam_b = _dtype_family(a.dtype), _dtype_family(b.dtype)
    if fam_a != fam_b or fam_a not in ("float", "int", "str"):
        return _schema(f"dtype {a.dtype} != {b.dtype}")
    kind: OutputKind = infer_kind(a) if rule.kind == "auto" else rule.kind
    if kind == "classes":
        return _compare_classes(a, b)
    if fam_a == "str":
        return _schema(f"{kind} needs numeric outputs, got dtype {a.dtype}")
    fa = a.astype(np.float64, copy=False)
    fb = b.astype(np.float64, copy=False)
    if kind == "regression":
        return _compare_regression(fa, fb, rule)
    if a.ndim < 2 or a.shape[-1] < 1:
        return _schema(f"{kind} needs shape (batch, ..., classes), got {a.shape}")
    return _compare_probabilities(fa, fb, rule, kind)


def compare(
    primary: Mapping[str, np.ndarray[Any, Any]],
    shadow: Mapping[str, np.ndarray[Any, Any]],
    config: Mapping[str, OutputRule] | None = None,
) -> Comparison:
    """Compare every output alias of a primary and a shadow answer to one request.

    Aliases are visited in the primary's order, then shadow-only aliases.
    An alias without a rule in `config` uses `DEFAULT_RULE` (the config's defaults, kind
    ``auto``).
    An alias present on one side only is a ``schema`` divergence.
    """
    rules = config or {}
    outputs: dict[str, OutputMetrics] = {}
    for alias, array in primary.items():
        if alias not in shadow:
            outputs[alias] = _schema("missing in shadow")
        else:
            outputs[alias] = compare_output(array, shadow[alias], rules.get(alias, DEFAULT_RULE))
    for alias in shadow:
        if alias not in primary:
            outputs[alias] = _schema("missing in primary")
    return Comparison(outputs=outputs, diverged=any(m.diverged for m in outputs.values()))


def compare_batch(
    primary: Mapping[str, np.ndarray[Any, Any]],
    shadow: Mapping[str, np.ndarray[Any, Any]],
    rows: Sequence[int],
    config: Mapping[str, OutputRule] | None = None,
) -> list[Comparison]:
    """`compare` for many requests in one vectorised pass.

    `primary` and `shadow` hold the answers to several requests concatenated along
    the batch dimension, request ``i`` owning the next ``rows[i]`` rows. Returns one
    `Comparison` per request, equal to ``compare`` on that request's slices (verdicts,
    flips and maxima exactly; means up to float summation order). Per-row metrics are
    computed once over all rows and reduced per request with ``ufunc.reduceat``.
    """
    n = len(rows)
    if n == 0:
        return []
    if n == 1 or min(rows) == 0:
        return [compare(*_slices(primary, shadow, rows, i), config) for i in range(n)]
    rules = config or {}
    counts = np.asarray(rows, dtype=np.intp)
    starts = _starts(counts)
    per_alias: dict[str, list[OutputMetrics]] = {}
    for alias, array in primary.items():
        if alias not in shadow:
            per_alias[alias] = [_schema("missing in shadow")] * n
        else:
            per_alias[alias] = _compare_output_batch(
                np.asarray(array),
                np.asarray(shadow[alias]),
                starts,
                counts,
                rules.get(alias, DEFAULT_RULE),
            )
    for alias in shadow:
        if alias not in primary:
            per_alias[alias] = [_schema("missing in primary")] * n
    out = []
    for i in range(n):
        outputs = {alias: metrics[i] for alias, metrics in per_alias.items()}
        out.append(Comparison(outputs=outputs, diverged=any(m.diverged for m in outputs.values())))
    return out


def _starts(counts: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """First row of each segment, given the segments' row counts."""
    out: npt.NDArray[np.intp] = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.intp)
    return out


def _slices(
    primary: Mapping[str, np.ndarray[Any, Any]],
    shadow: Mapping[str, np.ndarray[Any, Any]],
    rows: Sequence[int],
    i: int,
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, np.ndarray[Any, Any]]]:
    start = int(sum(rows[:i]))
    end = start + rows[i]
    return (
        {k: np.asarray(v)[start:end] for k, v in primary.items()},
        {k: np.asarray(v)[start:end] for k, v in shadow.items()},
    )


def _compare_output_batch(
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    starts: npt.NDArray[np.intp],
    counts: npt.NDArray[np.intp],
    rule: OutputRule,
) -> list[OutputMetrics]:
    n = len(starts)
    total = int(counts.sum())
    if a.ndim == 0 or b.ndim == 0 or a.shape[0] != total or b.shape[0] != total:
        # not batch-major: compare each request's slice on its own
        return [
            compare_output(a[s : s + c], b[s : s + c], rule)
            for s, c in zip(starts.tolist(), counts.tolist(), strict=True)
        ]
    if a.shape != b.shape:
        return [
            _schema(f"shape {(c, *a.shape[1:])} != {(c, *b.shape[1:])}") for c in counts.tolist()
        ]
    fam_a, fam_b = _dtype_family(a.dtype), _dtype_family(b.dtype)
    if fam_a != fam_b or fam_a not in ("float", "int", "str"):
        return [_schema(f"dtype {a.dtype} != {b.dtype}")] * n
    if rule.kind != "auto":
        kinds: list[OutputKind] = [rule.kind] * n
    elif fam_a == "float":
        probs = _segment_all(_rows_look_like_probabilities(a), starts)
        kinds = ["probabilities" if p else "regression" for p in probs.tolist()]
    else:
        kinds = ["classes"] * n
    out: list[OutputMetrics | None] = [None] * n
    for kind in dict.fromkeys(kinds):
        chosen = [i for i in range(n) if kinds[i] == kind]
        if len(chosen) == n:
            sa, sb, st, ct = a, b, starts, counts
        else:
            idx = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in chosen])
            sa, sb = a[idx], b[idx]
            ct = counts[chosen]
            st = _starts(ct)
        results = _compare_kind_batch(sa, sb, st, ct, rule, kind, fam_a)
        for i, metrics in zip(chosen, results, strict=True):
            out[i] = metrics
    return [m for m in out if m is not None]


def _compare_kind_batch(
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    starts: npt.NDArray[np.intp],
    counts: npt.NDArray[np.intp],
    rule: OutputRule,
    kind: OutputKind,
    family: str,
) -> list[OutputMetrics]:
    n = len(starts)
    if kind == "classes":
        rows_a = a.reshape(a.shape[0], -1)
        same = np.asarray(rows_a == b.reshape(rows_a.shape)).all(axis=1)
        agree = np.add.reduceat(same.astype(np.float64), starts) / counts
        all_same = _segment_all(same, starts)
        return [
            OutputMetrics(kind="classes", diverged=not bool(ok), agreement=float(g))
            for ok, g in zip(all_same.tolist(), agree.tolist(), strict=True)
        ]
    if family == "str":
        return [_schema(f"{kind} needs numeric outputs, got dtype {a.dtype}")] * n
    fa = a.astype(np.float64, copy=False)
    fb = b.astype(np.float64, copy=False)
    if kind == "regression":
        return _regression_batch(fa, fb, starts, rule)
    if a.ndim < 2 or a.shape[-1] < 1:
        return [_schema(f"{kind} needs shape (batch, ..., classes), got {(c, *a.shape[1:])}")
                for c in counts.tolist()]  # fmt: skip
    return _probabilities_batch(fa, fb, starts, counts, rule, kind)


def _segment_all(flags: Any, starts: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """Per segment (starting at `starts`), whether every flag is set."""
    out: npt.NDArray[np.bool_] = np.logical_and.reduceat(np.asarray(flags, dtype=bool), starts)
    return out


def _rows_look_like_probabilities(a: np.ndarray[Any, Any]) -> npt.NDArray[np.bool_]:
    """Per batch row, `_looks_like_probabilities` of that row alone (NaN -> False)."""
    n = a.shape[0]
    if a.ndim < 2 or a.shape[-1] < 2 or a.size == 0:
        return np.zeros(n, dtype=bool)
    flat = a.reshape(n, -1)
    with np.errstate(invalid="ignore"):
        in_range = (flat.min(axis=1) >= 0.0) & (flat.max(axis=1) <= 1.0)
        sums = np.abs(a.sum(axis=-1).reshape(n, -1) - 1.0) <= PROB_SUM_TOL
    out: npt.NDArray[np.bool_] = in_range & sums.all(axis=1)
    return out


def _regression_batch(
    a: _FloatArray, b: _FloatArray, starts: npt.NDArray[np.intp], rule: OutputRule
) -> list[OutputMetrics]:
    n = len(starts)
    rows = a.shape[0]
    a2 = a.reshape(rows, -1)
    b2 = b.reshape(rows, -1)
    if a2.shape[1] == 0:
        return [
            OutputMetrics(kind="regression", diverged=False, max_abs=0.0, max_rel=0.0, within=True)
        ] * n
    diff = _abs_diff(a2, b2)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rel = diff / np.maximum(np.abs(a2), TINY)
        rel[diff == 0] = 0.0
        close = (diff <= rule.atol + rule.rtol * np.abs(b2)) & np.isfinite(diff)
        ok = (close | (diff == 0)).all(axis=1)
    nan_rel = np.isnan(rel)
    row_all_nan = nan_rel.all(axis=1)
    row_rel = np.where(nan_rel, -np.inf, rel).max(axis=1)
    max_abs = np.maximum.reduceat(diff.max(axis=1), starts)
    max_rel = np.maximum.reduceat(row_rel, starts)
    all_nan = _segment_all(row_all_nan, starts)
    within = _segment_all(ok, starts)
    return [
        OutputMetrics(
            kind="regression",
            diverged=not w,
            max_abs=float(m),
            max_rel=math.inf if nan else float(r),
            within=w,
        )
        for m, r, nan, w in zip(
            max_abs.tolist(), max_rel.tolist(), all_nan.tolist(), within.tolist(), strict=True
        )
    ]


def _probabilities_batch(
    a: _FloatArray,
    b: _FloatArray,
    starts: npt.NDArray[np.intp],
    counts: npt.NDArray[np.intp],
    rule: OutputRule,
    kind: OutputKind,
) -> list[OutputMetrics]:
    n = len(starts)
    n_classes = a.shape[-1]
    p = a.reshape(-1, n_classes)
    q = b.reshape(-1, n_classes)
    per_row = p.shape[0] // a.shape[0] if a.shape[0] else 0  # distributions per batch row
    if per_row == 0:
        return [_identical_probabilities(kind)] * n
    if kind == "logits":
        p, q = _softmax(p), _softmax(q)
    same_top1 = np.argmax(p, axis=-1) == np.argmax(q, axis=-1)
    k = min(rule.top_k, n_classes)
    overlap = (_topk_mask(p, k) & _topk_mask(q, k)).sum(axis=-1) / k
    row_abs = _abs_diff(p, q).max(axis=-1)
    js = js_divergence(p, q)
    d_starts = starts * per_row
    d_counts = counts * per_row
    all_same = _segment_all(same_top1, d_starts)
    top1 = np.add.reduceat(same_top1.astype(np.float64), d_starts) / d_counts
    topk = np.add.reduceat(overlap, d_starts) / d_counts
    max_abs = np.maximum.reduceat(row_abs, d_starts)
    js_mean = np.add.reduceat(js, d_starts) / d_counts
    js_max = np.maximum.reduceat(js, d_starts)
    out = []
    for same, t1, tk, mx, jm, jx in zip(
        all_same.tolist(),
        top1.tolist(),
        topk.tolist(),
        max_abs.tolist(),
        js_mean.tolist(),
        js_max.tolist(),
        strict=True,
    ):
        flip = not same
        out.append(
            OutputMetrics(
                kind=kind,
                diverged=_probabilities_diverged(flip, mx, jx, rule),
                label_flip=flip,
                top1_agreement=t1,
                topk_overlap=tk,
                max_abs=mx,
                js_mean=jm,
                js_max=jx,
            )
        )
    return out


@dataclass
class _Samples:
    """Exact max plus a bounded uniform reservoir of one metric's values."""

    capacity: int
    count: int = 0
    max: float = 0.0
    values: list[float] = field(default_factory=list)

    def add(self, value: float, rng: np.random.Generator) -> None:
        self.count += 1
        if value > self.max or math.isnan(value):
            self.max = math.inf if math.isnan(value) else value
        if len(self.values) < self.capacity:
            self.values.append(value)
        else:
            slot = int(rng.integers(0, self.count))
            if slot < self.capacity:
                self.values[slot] = value


class NoiseFloor:
    """Accumulates comparisons of the primary against itself (replayed requests).

    Tracks, per output alias and per `OutputMetrics.distances` metric, the
    exact maximum and a bounded reservoir (``capacity`` values) for
    percentiles. A comparison is *within* the floor when every distance of
    every output is <= the floor's max for that output and metric (so a
    deterministic primary, whose floor is all zeros, only admits exact
    matches). Not thread-safe: callers serialise `add`.
    """

    def __init__(self, capacity: int = 10_000, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        self._capacity = capacity
        self._rng = np.random.default_rng(seed)
        self._samples: dict[str, dict[str, _Samples]] = {}
        self._kinds: dict[str, OutputKind] = {}
        self.count = 0
        self.diverged = 0
        self.schema_mismatches = 0

    def add(self, comparison: Comparison) -> None:
        """Record one primary-vs-replayed-primary comparison."""
        self.count += 1
        self.diverged += int(comparison.diverged)
        for alias, metrics in comparison.outputs.items():
            if metrics.kind == "schema":
                self.schema_mismatches += 1
                continue
            self._kinds.setdefault(alias, metrics.kind)
            per_output = self._samples.setdefault(alias, {})
            for name, value in metrics.distances().items():
                samples = per_output.get(name)
                if samples is None:
                    samples = per_output[name] = _Samples(self._capacity)
                samples.add(value, self._rng)

    def extend(self, comparisons: Iterable[Comparison]) -> None:
        """`add` each comparison."""
        for comparison in comparisons:
            self.add(comparison)

    @property
    def deterministic(self) -> bool:
        """True when at least one comparison was added and all were exact matches."""
        if self.count == 0 or self.diverged or self.schema_mismatches:
            return False
        return all(s.max == 0.0 for per in self._samples.values() for s in per.values())

    def max(self, output: str, metric: str) -> float | None:
        """Largest value seen of `metric` for `output`, or None if never seen."""
        samples = self._samples.get(output, {}).get(metric)
        return None if samples is None else samples.max

    def percentile(self, output: str, metric: str, q: float) -> float | None:
        """The q-th percentile (0..100, linear interpolation) of the reservoir, or None."""
        samples = self._samples.get(output, {}).get(metric)
        if samples is None or not samples.values:
            return None
        return float(np.percentile(np.asarray(samples.values), q))

    def judge(self, comparison: Comparison) -> bool | None:
        """True if `comparison` is within the floor, False if not, None if the floor is empty.

        Schema divergences, and outputs or metrics the floor never saw with a
        non-zero value, are never within the floor.
        """
        if self.count == 0:
            return None
        for alias, metrics in comparison.outputs.items():
            if metrics.kind == "schema":
                return False
            per_output = self._samples.get(alias, {})
            for name, value in metrics.distances().items():
                samples = per_output.get(name)
                limit = 0.0 if samples is None else samples.max
                if not value <= limit:
                    return False
        return True

    def summary(self) -> dict[str, Any]:
        """JSON-ready view: count, deterministic, per output kind and {metric: max/p50/p99}."""
        outputs: dict[str, Any] = {}
        for alias, per_output in self._samples.items():
            metrics: dict[str, Any] = {}
            for name, samples in per_output.items():
                values = np.asarray(samples.values)
                metrics[name] = {
                    "max": samples.max,
                    "p50": float(np.percentile(values, 50)),
                    "p99": float(np.percentile(values, 99)),
                }
            outputs[alias] = {"kind": self._kinds.get(alias), "metrics": metrics}
        return {
            "count": self.count,
            "deterministic": self.deterministic,
            "diverged": self.diverged,
            "outputs": outputs,
        }


__all__ = [
    "DEFAULT_RULE",
    "TINY",
    "Comparison",
    "ConfigKind",
    "NoiseFloor",
    "OutputKind",
    "OutputMetrics",
    "OutputRule",
    "compare",
    "compare_output",
    "infer_kind",
    "js_divergence",
]
