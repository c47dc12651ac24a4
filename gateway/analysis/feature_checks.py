"""Per-request checks of raw features against the training statistics.

:class:`FeatureChecker` is built once per model version from its
:class:`~gateway.analysis.statistics.FeatureStatistics` and a :class:`CheckConfig`;
:meth:`FeatureChecker.check` then inspects a whole batch with a few numpy
reductions per feature (the common all-in-range case costs one ``min`` and one
``max``) and returns the :class:`Mismatch` es whose action is not ``ignore``.

Check kinds:

* ``missing_feature`` / ``unexpected_feature``: request keys vs training features;
* ``dtype_mismatch``: value kind differs (ints are accepted for float features);
* ``shape_mismatch``: shape after the batch differs ([batch] and [batch, 1] are
  interchangeable; the value checks still run);
* ``nan_or_inf``: inf, or NaN in a feature that had no NaN in training;
* ``out_of_range``: outside ``[min - margin*(max-min), max + margin*(max-min)]``;
* ``z_score``: ``|x - mean| / std > z_threshold`` (skipped when std is 0);
* ``unseen_category``: a categorical value absent from the training
  frequencies (only when they were not capped).
"""

from __future__ import annotations

import enum
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from gateway.analysis.statistics import FeatureStatistics, FeatureStats
from gateway.config import (
    DEFAULT_CHECK_ACTIONS,
    CheckAction,
    CheckName,
    FeatureCheckOverrideConfig,
    FeatureChecksConfig,
)
from gateway.preprocessing.values import ValueKind, as_bytes

__all__ = [
    "DEFAULT_ACTIONS",
    "DEFAULT_CHECK_CONFIG",
    "Action",
    "CheckConfig",
    "CheckKind",
    "FeatureCheckOverride",
    "FeatureChecker",
    "Mismatch",
    "rejects",
    "worst_action",
]


class CheckKind(enum.StrEnum):
    """The kinds of per-request feature checks."""

    MISSING_FEATURE = "missing_feature"
    UNEXPECTED_FEATURE = "unexpected_feature"
    DTYPE_MISMATCH = "dtype_mismatch"
    SHAPE_MISMATCH = "shape_mismatch"
    NAN_OR_INF = "nan_or_inf"
    OUT_OF_RANGE = "out_of_range"
    Z_SCORE = "z_score"
    UNSEEN_CATEGORY = "unseen_category"


class Action(enum.StrEnum):
    """What to do about a mismatch, in increasing severity."""

    IGNORE = "ignore"
    LOG = "log"
    REJECT = "reject"


_SEVERITY = {Action.IGNORE: 0, Action.LOG: 1, Action.REJECT: 2}

DEFAULT_ACTIONS: Mapping[CheckKind, Action] = types.MappingProxyType(
    {CheckKind(k): Action(v) for k, v in DEFAULT_CHECK_ACTIONS.items()}
)
"""The config's `DEFAULT_CHECK_ACTIONS` as enums."""


def _actions(raw: Mapping[CheckName, CheckAction]) -> dict[CheckKind, Action]:
    return {CheckKind(k): Action(v) for k, v in raw.items()}


@dataclass(frozen=True)
class FeatureCheckOverride:
    """Per-feature overrides of a :class:`CheckConfig` (``None`` and kinds not in
    ``actions`` inherit the model's)."""

    actions: Mapping[CheckKind, Action]
    margin: float | None
    z_threshold: float | None

    @classmethod
    def from_config(cls, cfg: FeatureCheckOverrideConfig) -> FeatureCheckOverride:
        """One ``feature_checks.per_feature.<feature>`` block."""
        return cls(actions=_actions(cfg.actions), margin=cfg.margin, z_threshold=cfg.z_threshold)


@dataclass(frozen=True)
class CheckConfig:
    """Per-model check configuration.

    ``actions`` gives every kind's action (the config completes it with
    :data:`DEFAULT_ACTIONS`); ``margin`` widens the training range by that fraction of
    (max - min) on each side; values of ``sensitive_features`` are never copied into
    a :class:`Mismatch`. Built with :meth:`from_config`; the config holds the defaults.
    """

    actions: Mapping[CheckKind, Action]
    margin: float
    z_threshold: float
    sensitive_features: frozenset[str]
    per_feature: Mapping[str, FeatureCheckOverride]

    @classmethod
    def from_config(cls, cfg: FeatureChecksConfig) -> CheckConfig:
        """The ``feature_checks`` block (``enabled`` is the caller's: no checker when off)."""
        return cls(
            actions=_actions(cfg.actions),
            margin=cfg.margin,
            z_threshold=cfg.z_threshold,
            sensitive_features=frozenset(cfg.sensitive_features),
            per_feature={
                name: FeatureCheckOverride.from_config(o) for name, o in cfg.per_feature.items()
            },
        )

    def action(self, kind: CheckKind, feature: str) -> Action:
        """Effective action of a check kind on a feature (per-feature, model, then default)."""
        override = self.per_feature.get(feature)
        if override is not None and kind in override.actions:
            return override.actions[kind]
        return self.actions.get(kind, DEFAULT_ACTIONS[kind])

    def margin_for(self, feature: str) -> float:
        """Effective range margin for a feature."""
        o = self.per_feature.get(feature)
        return self.margin if o is None or o.margin is None else o.margin

    def z_threshold_for(self, feature: str) -> float:
        """Effective z-score threshold for a feature."""
        o = self.per_feature.get(feature)
        return self.z_threshold if o is None or o.z_threshold is None else o.z_threshold


DEFAULT_CHECK_CONFIG: Final = CheckConfig.from_config(FeatureChecksConfig())
"""The checks of a model whose config has no ``feature_checks`` block."""


Value = float | int | str


def _num(x: float) -> str:
    """Shortest readable float: repr when short (``400.0``), else 6 significant digits."""
    text = repr(float(x))
    return text if len(text) <= 10 else f"{x:.6g}"


def _fmt(value: Value | None) -> str:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class Mismatch:
    """One failed check of one feature over a batch.

    ``value`` is a representative offending value (the most extreme one; the
    received dtype/shape for dtype/shape mismatches), or None for sensitive
    features.  ``count`` is the number of offending rows; ``reference`` a short
    description of the training expectation.
    """

    feature: str
    kind: CheckKind
    action: Action
    value: Value | None
    count: int
    reference: str

    def message(self) -> str:
        """One human-readable line.

        E.g. ``feature 'x': value 400.0 outside training range [1.0, 3.0]``.
        """
        f = repr(self.feature)
        k = self.kind
        if self.value is None:
            v = ""
        elif k in (CheckKind.DTYPE_MISMATCH, CheckKind.SHAPE_MISMATCH):
            v = f" {self.value}"
        else:
            v = f" {_fmt(self.value)}"
        if k is CheckKind.MISSING_FEATURE:
            text = f"feature {f}: missing (expected {self.reference})"
        elif k is CheckKind.UNEXPECTED_FEATURE:
            text = f"feature {f}: not a training feature of this model"
        elif k is CheckKind.DTYPE_MISMATCH:
            text = f"feature {f}: dtype{v} does not match training dtype {self.reference}"
        elif k is CheckKind.SHAPE_MISMATCH:
            text = f"feature {f}: shape{v} does not match training shape {self.reference}"
        elif k is CheckKind.NAN_OR_INF:
            text = f"feature {f}: value{v} is not finite ({self.reference})"
        elif k is CheckKind.OUT_OF_RANGE:
            text = f"feature {f}: value{v} outside training range {self.reference}"
        elif k is CheckKind.Z_SCORE:
            text = f"feature {f}: value{v} has {self.reference}"
        else:
            text = f"feature {f}: value{v} not seen in training ({self.reference})"
        if self.count > 1:
            text += f" ({self.count} rows)"
        return text


def worst_action(mismatches: Iterable[Mismatch]) -> Action:
    """The most severe action among mismatches (IGNORE when there are none)."""
    worst = Action.IGNORE
    for m in mismatches:
        if _SEVERITY[m.action] > _SEVERITY[worst]:
            worst = m.action
    return worst


def rejects(mismatches: Iterable[Mismatch]) -> bool:
    """Whether any mismatch asks to reject the request."""
    return any(m.action is Action.REJECT for m in mismatches)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(["batch", *("?" if d < 0 else str(d) for d in shape)]) + "]"


def _norm_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return () if shape == (1,) else shape


def _shape_ok(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    got, want = _norm_shape(got), _norm_shape(want)
    if len(got) != len(want):
        return False
    return all(w < 0 or g == w for g, w in zip(got, want, strict=True))


def _offending_rows(bad: np.ndarray) -> int:
    if bad.ndim <= 1:
        return int(np.count_nonzero(bad))
    return int(np.count_nonzero(bad.reshape(bad.shape[0], -1).any(axis=1)))


def _py(value: Any) -> Value:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        out: Value = value.item()
        return out
    return value  # type: ignore[no-any-return]


_KIND_CHARS = {
    ValueKind.FLOAT: "fiub",  # ints are safely accepted for float features
    ValueKind.INT: "iub",
    ValueKind.STRING: "SUO",
}


class _Plan:
    """Everything precomputed for checking one feature."""

    __slots__ = (
        "categorical",
        "dtype_action",
        "feature",
        "hi",
        "kind_chars",
        "lo",
        "mean",
        "nan_ok",
        "nonfinite_action",
        "numeric_active",
        "range_action",
        "range_ref",
        "sensitive",
        "shape",
        "shape_action",
        "shape_ref",
        "std",
        "training_dtype",
        "unseen_action",
        "unseen_ref",
        "vocab",
        "z_action",
        "z_hi",
        "z_lo",
        "z_ref",
        "z_threshold",
    )

    def __init__(self, st: FeatureStats, config: CheckConfig) -> None:
        name = st.feature
        act = config.action
        self.feature = name
        self.sensitive = name in config.sensitive_features
        self.kind_chars = _KIND_CHARS[st.kind]
        self.training_dtype = st.dtype
        self.shape = st.shape
        self.shape_ref = _shape_text(st.shape)
        self.dtype_action = act(CheckKind.DTYPE_MISMATCH, name)
        self.shape_action = act(CheckKind.SHAPE_MISMATCH, name)
        self.nonfinite_action = Action.IGNORE
        self.range_action = Action.IGNORE
        self.z_action = Action.IGNORE
        self.unseen_action = Action.IGNORE
        self.categorical = st.categorical is not None
        self.nan_ok = False
        self.lo = self.hi = self.mean = self.std = 0.0
        self.z_lo, self.z_hi = -np.inf, np.inf
        self.z_threshold = config.z_threshold_for(name)
        self.range_ref = self.z_ref = self.unseen_ref = ""
        self.vocab: np.ndarray | None = None
        num = st.numeric
        if num is not None:
            self.nonfinite_action = act(CheckKind.NAN_OR_INF, name)
            self.nan_ok = num.missing > 0
            if num.count > 0:
                margin = config.margin_for(name)
                span = num.max - num.min
                self.lo = num.min - margin * span
                self.hi = num.max + margin * span
                self.range_action = act(CheckKind.OUT_OF_RANGE, name)
                self.range_ref = f"[{_num(num.min)}, {_num(num.max)}]" + (
                    f" (margin {margin:g})" if margin else ""
                )
                self.mean, self.std = num.mean, num.std
                if num.std > 0:
                    self.z_action = act(CheckKind.Z_SCORE, name)
                    self.z_lo = num.mean - self.z_threshold * num.std
                    self.z_hi = num.mean + self.z_threshold * num.std
                    self.z_ref = (
                        f"|z| > {self.z_threshold:g} "
                        f"(training mean {num.mean:.6g}, std {num.std:.6g})"
                    )
        cat = st.categorical
        if cat is not None and cat.complete:
            self.unseen_action = act(CheckKind.UNSEEN_CATEGORY, name)
            if cat.values and isinstance(cat.values[0], str):
                vocab = np.array([str(v).encode("utf-8") for v in cat.values], dtype=np.bytes_)
            else:
                vocab = np.array(cat.values, dtype=np.int64)
            self.vocab = np.sort(vocab)
            self.unseen_ref = f"{len(cat.values)} training values"

        self.numeric_active = num is not None and any(
            a is not Action.IGNORE
            for a in (self.nonfinite_action, self.range_action, self.z_action)
        )

    def _value(self, v: Any) -> Value | None:
        return None if self.sensitive else _py(v)

    def check(self, values: np.ndarray, out: list[Mismatch]) -> None:
        """Append this feature's mismatches for one batch to ``out``."""
        name = self.feature
        if values.dtype.kind not in self.kind_chars:
            if self.dtype_action is not Action.IGNORE:
                dtype = "string" if values.dtype.kind in "SUO" else values.dtype.name
                out.append(
                    Mismatch(
                        name,
                        CheckKind.DTYPE_MISMATCH,
                        self.dtype_action,
                        dtype,
                        values.shape[0] if values.ndim else 1,
                        self.training_dtype,
                    )
                )
            return
        if values.ndim == 0:
            values = values.reshape(1)
        if self.shape_action is not Action.IGNORE and not _shape_ok(values.shape[1:], self.shape):
            out.append(
                Mismatch(
                    name,
                    CheckKind.SHAPE_MISMATCH,
                    self.shape_action,
                    _shape_text(values.shape[1:]),
                    values.shape[0],
                    self.shape_ref,
                )
            )
        if values.size == 0:
            return
        if self.categorical:
            if self.vocab is not None and self.unseen_action is not Action.IGNORE:
                self._check_unseen(values, out)
            return
        if self.numeric_active:
            self._check_numeric(values, out)

    def _check_unseen(self, values: np.ndarray, out: list[Mismatch]) -> None:
        vocab = self.vocab
        assert vocab is not None
        if vocab.dtype.kind == "S":
            if values.dtype.kind not in "SUO":
                return
            keys = as_bytes(values)
        else:
            keys = values.astype(np.int64, copy=False)
        if vocab.size == 0:
            found = np.zeros(keys.shape, dtype=bool)
        else:
            pos = np.searchsorted(vocab, keys)
            np.minimum(pos, vocab.size - 1, out=pos)
            found = vocab[pos] == keys
        if found.all():
            return
        bad = ~found
        first = keys.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
        out.append(
            Mismatch(
                self.feature,
                CheckKind.UNSEEN_CATEGORY,
                self.unseen_action,
                self._value(first),
                _offending_rows(bad),
                self.unseen_ref,
            )
        )

    def _check_numeric(self, values: np.ndarray, out: list[Mismatch]) -> None:
        lo_v = values.min()
        hi_v = values.max()
        # Fast path: no NaN (min/max would be NaN) and everything within bounds.
        if (
            lo_v >= self.lo
            and hi_v <= self.hi
            and lo_v >= self.z_lo
            and hi_v <= self.z_hi
            and lo_v > -np.inf
            and hi_v < np.inf
        ):
            return
        x = values
        name = self.feature
        if x.dtype.kind == "f" and self.nonfinite_action is not Action.IGNORE:
            nonfinite = ~np.isfinite(x)
            if nonfinite.any():
                bad = np.isinf(x) if self.nan_ok else nonfinite
                if bad.any():
                    flat = x.reshape(-1)
                    # prefer reporting inf over NaN
                    inf_idx = np.flatnonzero(np.isinf(flat))
                    idx = int(inf_idx[0]) if inf_idx.size else int(np.argmax(bad.reshape(-1)))
                    out.append(
                        Mismatch(
                            name,
                            CheckKind.NAN_OR_INF,
                            self.nonfinite_action,
                            self._value(flat[idx]),
                            _offending_rows(bad),
                            "training values were finite"
                            if not self.nan_ok
                            else "training had NaN but no inf",
                        )
                    )
        # Non-finite values are the nan_or_inf check's business, not range / z-score.
        finite = np.isfinite(x) if x.dtype.kind == "f" else True
        with np.errstate(invalid="ignore"):
            if self.range_action is not Action.IGNORE:
                bad = ((x < self.lo) | (x > self.hi)) & finite
                if bad.any():
                    dist = np.where(bad, np.maximum(self.lo - x, x - self.hi), -np.inf)
                    idx = int(np.argmax(dist.reshape(-1)))
                    out.append(
                        Mismatch(
                            name,
                            CheckKind.OUT_OF_RANGE,
                            self.range_action,
                            self._value(x.reshape(-1)[idx]),
                            _offending_rows(bad),
                            self.range_ref,
                        )
                    )
            if self.z_action is not Action.IGNORE:
                bad = ((x < self.z_lo) | (x > self.z_hi)) & finite
                if bad.any():
                    dev = np.where(bad, np.abs(x - self.mean), -np.inf)
                    idx = int(np.argmax(dev.reshape(-1)))
                    out.append(
                        Mismatch(
                            name,
                            CheckKind.Z_SCORE,
                            self.z_action,
                            self._value(x.reshape(-1)[idx]),
                            _offending_rows(bad),
                            self.z_ref,
                        )
                    )


class FeatureChecker:
    """Checks raw request features against training statistics; build once per model version."""

    def __init__(self, stats: FeatureStatistics, config: CheckConfig | None = None) -> None:
        """Precompute per-feature bounds, vocabularies and actions (``config`` defaults to
        the config's defaults, ``FeatureChecksConfig()``)."""
        self.config = config or DEFAULT_CHECK_CONFIG
        self._plans = {name: _Plan(st, self.config) for name, st in stats.features.items()}
        self._names = frozenset(self._plans)
        self._missing: dict[str, tuple[Action, str]] = {}
        for name, st in stats.features.items():
            action = self.config.action(CheckKind.MISSING_FEATURE, name)
            if action is not Action.IGNORE:
                self._missing[name] = (action, f"{st.kind} {_shape_text(st.shape)}")

    @property
    def features(self) -> frozenset[str]:
        """The training features; a request key outside this set is an unexpected feature
        (the caller drops it before preprocessing unless its check rejects the request)."""
        return self._names

    def check(self, features: Mapping[str, np.ndarray]) -> list[Mismatch]:
        """All non-ignored mismatches of one batch (features: name -> [batch, ...] array)."""
        out: list[Mismatch] = []
        plans = self._plans
        if len(features) != len(plans) or not self._names.issubset(features.keys()):
            for name in sorted(self._names - features.keys()):
                entry = self._missing.get(name)
                if entry is not None:
                    out.append(
                        Mismatch(name, CheckKind.MISSING_FEATURE, entry[0], None, 0, entry[1])
                    )
        for name, values in features.items():
            plan = plans.get(name)
            if plan is None:
                action = self.config.action(CheckKind.UNEXPECTED_FEATURE, name)
                if action is not Action.IGNORE:
                    rows = int(np.shape(values)[0]) if np.ndim(values) else 1
                    out.append(Mismatch(name, CheckKind.UNEXPECTED_FEATURE, action, None, rows, ""))
                continue
            plan.check(np.asarray(values), out)
        return out
