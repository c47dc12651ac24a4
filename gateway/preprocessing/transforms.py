"""Serializable, vectorized feature transforms (pure numpy; TF only for FarmHash).

Every transform is a frozen dataclass with ``apply(values) -> values`` that works
on the whole batch at once (first dimension = batch) and (for the named
transforms) a ``fit(train_values, **params)`` classmethod.  The wire format
(the ``gateway.v1.Transform`` message) lives in
:mod:`gateway.bundle.preprocessing_codec`.

Conventions shared with Keras preprocessing layers:

* numeric transforms compute in float32 (Keras' ``floatx``) and return float32;
* index-producing transforms (bucketize, vocabulary, hashing) return int64
  (Keras' Discretization returns int32: cast to the model signature's dtype);
* category encodings return float32.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np

from gateway.preprocessing.values import PreprocessingError, ValueKind, as_bytes, value_kind

__all__ = [
    "ENCODING_MODES",
    "Bucketize",
    "CategoryEncoding",
    "Clip",
    "FillMissing",
    "Hashing",
    "Log1p",
    "MinMax",
    "Standardize",
    "Transform",
    "TransformSpec",
    "Vocabulary",
    "check_salt",
    "fit_chain",
    "fit_named",
    "fit_spec",
    "transform_names",
]

_F32 = np.float32
EncodingMode: TypeAlias = Literal["one_hot", "multi_hot", "count"]
ENCODING_MODES: tuple[EncodingMode, ...] = ("one_hot", "multi_hot", "count")
OovHash: TypeAlias = Literal["farmhash", "floormod"]
Token: TypeAlias = str | int


def _set(obj: object, name: str, value: object) -> None:
    """Set a cached attribute on a frozen dataclass."""
    object.__setattr__(obj, name, value)


def _as_float32(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind not in "fiub":
        raise PreprocessingError(f"expected numeric values, got dtype {values.dtype}")
    return values.astype(_F32, copy=False)


def _hash_buckets(
    strings: np.ndarray, num_buckets: int, salt: tuple[int, int] | None
) -> np.ndarray:
    """FarmHash64 (or keyed SipHash when ``salt``) bucket of each byte string, as int64.

    Same ops as Keras: ``tf.strings.to_hash_bucket_fast`` / ``_strong``; one call per batch.
    """
    import tensorflow as tf

    if strings.size == 0:
        return np.zeros(strings.shape, dtype=np.int64)
    tensor = tf.constant(strings)
    if salt is not None:
        out = tf.strings.to_hash_bucket_strong(tensor, num_buckets, key=list(salt))
    else:
        out = tf.strings.to_hash_bucket_fast(tensor, num_buckets)
    return np.asarray(out.numpy(), dtype=np.int64)


def _int_strings(values: np.ndarray) -> np.ndarray:
    """Decimal string form of integers (what ``tf.strings.as_string`` produces)."""
    return values.astype(np.int64, copy=False).astype(np.bytes_)


class Transform(abc.ABC):
    """A pure, vectorized transform of a feature batch, serialized as ``gateway.v1.Transform``."""

    kind: ClassVar[str]
    """The ``Transform.kind`` oneof field name, also the registry name."""

    @abc.abstractmethod
    def apply(self, values: np.ndarray) -> np.ndarray:
        """Transform the whole batch (first dimension = batch) without per-row Python loops."""


# --------------------------------------------------------------------------- numeric


def _params(value: float | Sequence[float] | np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))


@dataclass(frozen=True)
class Standardize(Transform):
    """``(x - mean) / std`` (or ``mean + x * std`` when ``invert``); a zero std divides by 1.

    ``mean``/``std`` are scalars or arrays of ``shape`` (the dimensions after the
    batch, row-major), broadcast against the batch like Keras ``Normalization``.
    """

    kind: ClassVar[str] = "standardize"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, ...] = ()
    invert: bool = False
    _mean: np.ndarray = field(init=False, repr=False, compare=False)
    _std: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        size = math.prod(self.shape)
        if len(self.mean) != size or len(self.std) != size:
            raise ValueError(
                f"standardize: mean/std need {size} value(s) for shape {self.shape}, "
                f"got {len(self.mean)}/{len(self.std)}"
            )
        std = np.asarray(self.std, dtype=_F32).reshape(self.shape)
        _set(self, "_mean", np.asarray(self.mean, dtype=_F32).reshape(self.shape))
        _set(self, "_std", np.where(std == 0, _F32(1), std).astype(_F32))

    @classmethod
    def of(
        cls,
        mean: float | Sequence[float] | np.ndarray,
        std: float | Sequence[float] | np.ndarray,
        *,
        invert: bool = False,
    ) -> Standardize:
        """Build from a scalar or array mean/std (array shape = dimensions after the batch)."""
        shape = tuple(int(d) for d in np.shape(mean))
        return cls(_params(mean), _params(std), shape, invert)

    @classmethod
    def fit(cls, train_values: np.ndarray, *, per_element: bool = False) -> Standardize:
        """Mean/std (population, NaN ignored) over all values, or per element after the batch."""
        x = np.asarray(train_values, dtype=np.float64)
        if per_element:
            return cls.of(np.nanmean(x, axis=0), np.nanstd(x, axis=0))
        return cls.of(float(np.nanmean(x)), float(np.nanstd(x)))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Standardize (or de-standardize) in float32."""
        x = _as_float32(values)
        if x.ndim <= len(self.shape):
            raise PreprocessingError(
                f"standardize: expected [batch, *{self.shape}] values, got shape {x.shape}"
            )
        out: np.ndarray
        if self.invert:
            out = np.add(self._mean, np.multiply(x, self._std))
        else:
            out = np.divide(np.subtract(x, self._mean), self._std)
        return out


@dataclass(frozen=True)
class MinMax(Transform):
    """``(x - min) / (max - min)`` (a zero range divides by 1), optionally clipped to [0, 1]."""

    kind: ClassVar[str] = "min_max"
    min: float
    max: float
    clip_output: bool = False

    @classmethod
    def fit(cls, train_values: np.ndarray, *, clip_output: bool = False) -> MinMax:
        """Training min/max (NaN ignored)."""
        x = np.asarray(train_values, dtype=np.float64)
        return cls(float(np.nanmin(x)), float(np.nanmax(x)), clip_output)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Scale in float32."""
        x = _as_float32(values)
        span = _F32(self.max) - _F32(self.min)
        out = (x - _F32(self.min)) / (span if span != 0 else _F32(1))
        if self.clip_output:
            out = np.clip(out, _F32(0), _F32(1))
        return out


@dataclass(frozen=True)
class Clip(Transform):
    """Clip to ``[lo, hi]``; ``None`` leaves that side open."""

    kind: ClassVar[str] = "clip"
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self) -> None:
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise ValueError(f"clip: lo {self.lo} > hi {self.hi}")

    @classmethod
    def fit(
        cls, train_values: np.ndarray, *, lo: float | None = None, hi: float | None = None
    ) -> Clip:
        """Bounds given, or else the training min / max (NaN ignored)."""
        x = np.asarray(train_values, dtype=np.float64)
        return cls(
            float(np.nanmin(x)) if lo is None else float(lo),
            float(np.nanmax(x)) if hi is None else float(hi),
        )

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Clip in float32 (NaN stays NaN)."""
        x = _as_float32(values)
        out: np.ndarray = np.clip(
            x,
            _F32(-np.inf if self.lo is None else self.lo),
            _F32(np.inf if self.hi is None else self.hi),
        )
        return out


@dataclass(frozen=True)
class Log1p(Transform):
    """``log(1 + x)`` in float32 (x <= -1 gives -inf / NaN)."""

    kind: ClassVar[str] = "log1p"

    @classmethod
    def fit(cls, train_values: np.ndarray) -> Log1p:
        """Nothing to fit."""
        del train_values
        return cls()

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``np.log1p`` in float32."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = np.log1p(_as_float32(values))
        return out


@dataclass(frozen=True)
class Bucketize(Transform):
    """Bucket index = number of boundaries <= x (``np.digitize(right=False)``, like Keras).

    Values and boundaries are compared in float32 like TF's ``Bucketize`` op; NaN
    goes to the last bucket.  Output int64 in ``[0, len(boundaries)]``.
    """

    kind: ClassVar[str] = "bucketize"
    boundaries: tuple[float, ...]
    _bounds: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounds = np.asarray(self.boundaries, dtype=_F32)
        if bounds.size > 1 and np.any(np.diff(bounds) < 0):
            raise ValueError("bucketize: boundaries must be sorted")
        _set(self, "_bounds", bounds)

    @property
    def num_buckets(self) -> int:
        """Number of output buckets (len(boundaries) + 1)."""
        return len(self.boundaries) + 1

    @classmethod
    def fit(
        cls,
        train_values: np.ndarray,
        *,
        num_buckets: int = 10,
        boundaries: Sequence[float] | None = None,
    ) -> Bucketize:
        """Given boundaries, or the distinct training quantiles at k/num_buckets (NaN ignored)."""
        if boundaries is not None:
            return cls(tuple(float(b) for b in boundaries))
        if num_buckets < 1:
            raise ValueError("bucketize: num_buckets must be >= 1")
        x = np.asarray(train_values, dtype=np.float64).reshape(-1)
        x = x[np.isfinite(x)]
        if x.size == 0 or num_buckets == 1:
            return cls(())
        qs = np.quantile(x, np.linspace(0.0, 1.0, num_buckets + 1)[1:-1])
        return cls(tuple(float(b) for b in np.unique(qs)))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Bucket indices (int64), same shape as the input."""
        x = _as_float32(values)
        return np.searchsorted(self._bounds, x, side="right").astype(np.int64, copy=False)


# --------------------------------------------------------------------------- categorical


def check_salt(salt: Sequence[int] | None) -> tuple[int, int] | None:
    """Normalize a hash salt: None or empty -> None, two integers -> a pair; else ValueError."""
    if salt is None or len(salt) == 0:
        return None
    if len(salt) != 2:
        raise ValueError(f"salt must be two integers, got {salt!r}")
    return (int(salt[0]), int(salt[1]))


@dataclass(frozen=True)
class Vocabulary(Transform):
    """Vocabulary lookup to int64 indices with Keras StringLookup/IntegerLookup index layout.

    Layout: ``[mask][OOV buckets][tokens in the given order]`` where the mask slot
    exists only when ``mask_token`` is set and ``drop_mask`` is false (Keras
    ``output_mode="int"``); with ``drop_mask`` the mask token maps to -1 (dropped by
    a following :class:`CategoryEncoding`).  An OOV value maps to the single OOV
    index, or with several OOV buckets to ``farmhash(str(value)) % n`` (strings, or
    ints with ``oov_hash="farmhash"``) / ``value mod n`` (ints, ``"floormod"``).
    With ``num_oov_buckets=0`` an OOV value raises :class:`PreprocessingError`.
    Lookup is ``np.searchsorted`` on the sorted vocabulary.
    """

    kind: ClassVar[str] = "vocabulary"
    tokens: tuple[str, ...] | tuple[int, ...]
    num_oov_buckets: int = 1
    mask_token: str | int | None = None
    drop_mask: bool = False
    oov_hash: OovHash | None = None
    salt: tuple[int, int] | None = None
    _sorted: np.ndarray = field(init=False, repr=False, compare=False)
    _sorted_index: np.ndarray = field(init=False, repr=False, compare=False)
    _mask_key: bytes | int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("vocabulary: tokens must not be empty")
        if self.num_oov_buckets < 0:
            raise ValueError("vocabulary: num_oov_buckets must be >= 0")
        is_str = all(isinstance(t, str) for t in self.tokens)
        is_int = all(isinstance(t, int) and not isinstance(t, bool) for t in self.tokens)
        if not (is_str or is_int):
            raise ValueError("vocabulary: tokens must be all str or all int")
        if self.oov_hash is None:
            _set(self, "oov_hash", "farmhash" if is_str else "floormod")
        elif self.oov_hash == "floormod" and is_str:
            raise ValueError("vocabulary: oov_hash='floormod' needs an int vocabulary")
        _set(self, "salt", check_salt(self.salt))
        if self.salt is not None and self.oov_hash != "farmhash":
            raise ValueError("vocabulary: salt requires oov_hash='farmhash'")
        keys: np.ndarray
        if is_str:
            keys = np.array([str(t).encode("utf-8") for t in self.tokens], dtype=np.bytes_)
            if self.mask_token is not None and not isinstance(self.mask_token, str):
                raise ValueError("vocabulary: a string vocabulary needs a string mask_token")
            mask_key: bytes | int | None = (
                None if self.mask_token is None else str(self.mask_token).encode("utf-8")
            )
        else:
            keys = np.array(self.tokens, dtype=np.int64)
            if self.mask_token is not None and not isinstance(self.mask_token, int):
                raise ValueError("vocabulary: an int vocabulary needs an int mask_token")
            mask_key = None if self.mask_token is None else int(self.mask_token)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        if np.any(sorted_keys[1:] == sorted_keys[:-1]):
            raise ValueError("vocabulary: tokens must be unique")
        if mask_key is not None and np.any(keys == mask_key):
            raise ValueError("vocabulary: the mask token must not be in the vocabulary")
        _set(self, "_sorted", sorted_keys)
        _set(self, "_sorted_index", order.astype(np.int64) + self.token_start)
        _set(self, "_mask_key", mask_key)

    @property
    def token_kind(self) -> ValueKind:
        """STRING or INT: what the feature's raw values must be."""
        return ValueKind.STRING if isinstance(self.tokens[0], str) else ValueKind.INT

    @property
    def oov_start(self) -> int:
        """Index of the first OOV bucket (1 when a mask slot is reserved, else 0)."""
        return 1 if self.mask_token is not None and not self.drop_mask else 0

    @property
    def token_start(self) -> int:
        """Index of the first vocabulary token."""
        return self.oov_start + self.num_oov_buckets

    @property
    def size(self) -> int:
        """Number of distinct output indices (mask slot + OOV buckets + tokens)."""
        return self.token_start + len(self.tokens)

    @classmethod
    def fit(
        cls,
        train_values: np.ndarray,
        *,
        max_tokens: int | None = None,
        num_oov_buckets: int = 1,
        mask_token: str | int | None = None,
        oov_hash: OovHash | None = None,
    ) -> Vocabulary:
        """Tokens by decreasing training frequency, ties by decreasing value (like Keras adapt).

        ``max_tokens`` caps the number of vocabulary tokens (excluding mask/OOV).
        """
        x = np.asarray(train_values).reshape(-1)
        if value_kind(x) is ValueKind.STRING:
            x = x[x != None] if x.dtype.kind == "O" else x  # noqa: E711
            keys = as_bytes(x)
        elif value_kind(x) is ValueKind.INT:
            keys = x.astype(np.int64)
        else:
            raise ValueError("vocabulary: training values must be strings or ints")
        uniq, counts = np.unique(keys, return_counts=True)
        if mask_token is not None:
            mkey = mask_token.encode("utf-8") if isinstance(mask_token, str) else mask_token
            keep = uniq != mkey
            uniq, counts = uniq[keep], counts[keep]
        order = np.lexsort((uniq, counts))[::-1]
        if max_tokens is not None:
            order = order[:max_tokens]
        chosen = uniq[order]
        tokens: tuple[str, ...] | tuple[int, ...]
        if chosen.dtype.kind == "S":
            tokens = tuple(t.decode("utf-8", errors="replace") for t in chosen.tolist())
        else:
            tokens = tuple(int(t) for t in chosen.tolist())
        return cls(tokens, num_oov_buckets, mask_token, oov_hash=oov_hash)

    def _keys(self, values: np.ndarray) -> np.ndarray:
        kind = value_kind(values)
        if isinstance(self.tokens[0], str):
            if kind is not ValueKind.STRING:
                raise PreprocessingError(f"vocabulary: expected strings, got dtype {values.dtype}")
            return as_bytes(values)
        if kind is ValueKind.STRING:
            raise PreprocessingError(f"vocabulary: expected integers, got dtype {values.dtype}")
        return values.astype(np.int64, copy=False)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Look up every value; int64 indices of the same shape."""
        flat = self._keys(values).reshape(-1)
        pos = np.searchsorted(self._sorted, flat)
        np.minimum(pos, len(self._sorted) - 1, out=pos)
        found = self._sorted[pos] == flat
        out = self._sorted_index[pos]
        is_mask = None if self._mask_key is None else flat == self._mask_key
        if not found.all():
            oov = ~found if is_mask is None else ~found & ~is_mask
            n_oov = int(np.count_nonzero(oov))
            if n_oov and self.num_oov_buckets == 0:
                raise PreprocessingError(
                    f"vocabulary: {n_oov} value(s) not in the vocabulary of "
                    f"{len(self.tokens)} tokens and num_oov_buckets=0"
                )
            if n_oov and self.num_oov_buckets == 1:
                out[oov] = self.oov_start
            elif n_oov:
                bad = flat[oov]
                if self.oov_hash == "floormod":
                    buckets = np.mod(bad, self.num_oov_buckets)
                else:
                    strs = bad if bad.dtype.kind == "S" else _int_strings(bad)
                    buckets = _hash_buckets(strs, self.num_oov_buckets, self.salt)
                out[oov] = self.oov_start + buckets
        if is_mask is not None:
            out[is_mask] = -1 if self.drop_mask else 0
        return out.reshape(values.shape)


@dataclass(frozen=True)
class FillMissing(Transform):
    """Replace missing values with ``value``: NaN (floats), ``""`` / ``b""`` / ``None`` (strings).

    Integer arrays have no missing values and pass through unchanged.
    """

    kind: ClassVar[str] = "fill_missing"
    value: float | int | str

    @classmethod
    def fit(
        cls, train_values: np.ndarray, *, value: float | int | str | None = None
    ) -> FillMissing:
        """Given value, else the training mean (floats) or most frequent value (ints, strings)."""
        if value is not None:
            return cls(value)
        x = np.asarray(train_values).reshape(-1)
        kind = value_kind(x)
        if kind is ValueKind.FLOAT:
            return cls(float(np.nanmean(x)))
        if kind is ValueKind.STRING:
            if x.dtype.kind == "O":
                x = x[x != None]  # noqa: E711
            keys = as_bytes(x)
            keys = keys[keys != b""]
            uniq, counts = np.unique(keys, return_counts=True)
            return cls(uniq[int(np.argmax(counts))].decode("utf-8", errors="replace"))
        uniq, counts = np.unique(x, return_counts=True)
        return cls(int(uniq[int(np.argmax(counts))]))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Return a copy with missing entries replaced (same dtype family)."""
        k = values.dtype.kind
        if k == "f":
            if isinstance(self.value, str):
                raise PreprocessingError("fill_missing: string default for a float feature")
            return np.where(np.isnan(values), values.dtype.type(self.value), values)
        if k in "iub":
            return values
        if isinstance(self.value, str):
            default_b = self.value.encode("utf-8")
            default_s = self.value
        else:
            default_s = str(self.value)
            default_b = default_s.encode("utf-8")
        if k == "S":
            return np.where(values == b"", np.bytes_(default_b), values)
        if k == "U":
            return np.where(values == "", np.str_(default_s), values)
        if k == "O":
            missing = (values == None) | (values == b"") | (values == "")  # noqa: E711
            if not missing.any():
                return values
            out = values.copy()
            out[missing] = default_b
            return out
        raise PreprocessingError(f"fill_missing: unsupported dtype {values.dtype}")


@dataclass(frozen=True)
class Hashing(Transform):
    """Same as ``keras.layers.Hashing(output_mode="int")``: FarmHash64 bucket in [0, num_bins).

    Floats are truncated to int64 and ints hashed as their decimal string.  With
    ``mask_value`` (and num_bins > 1) the mask maps to 0 and other values to
    ``1 + hash % (num_bins - 1)``.  ``salt`` switches to the keyed strong hash.
    """

    kind: ClassVar[str] = "hashing"
    num_bins: int
    mask_value: str | int | None = None
    salt: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.num_bins <= 0:
            raise ValueError("hashing: num_bins must be > 0")
        _set(self, "salt", check_salt(self.salt))

    @classmethod
    def fit(
        cls,
        train_values: np.ndarray,
        *,
        num_bins: int,
        mask_value: str | int | None = None,
        salt: tuple[int, int] | None = None,
    ) -> Hashing:
        """Nothing is learned; parameters only."""
        del train_values
        return cls(num_bins, mask_value, salt)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Hash bucket of every value (int64), same shape."""
        flat = values.reshape(-1)
        bins = self.num_bins
        mask = None
        is_str = value_kind(flat) is ValueKind.STRING
        if is_str:
            flat = as_bytes(flat)
        if self.mask_value is not None and bins > 1:
            bins -= 1
            mv = self.mask_value
            if is_str:
                mask = flat == (mv.encode("utf-8") if isinstance(mv, str) else str(mv).encode())
            else:
                mask = flat == mv
        if is_str:
            strs = flat
        elif flat.dtype.kind == "b":  # tf.strings.as_string(bool) -> "true" / "false"
            strs = np.where(flat, np.bytes_(b"true"), np.bytes_(b"false"))
        else:
            strs = _int_strings(flat)
        out = _hash_buckets(strs, bins, self.salt)
        if mask is not None:
            out += 1
            out[mask] = 0
        return out.reshape(values.shape)


@dataclass(frozen=True)
class CategoryEncoding(Transform):
    """Indices in [0, num_tokens) to float32 vectors, like ``keras.layers.CategoryEncoding``.

    ``one_hot``: [batch] or [batch, 1] -> [batch, n]; [batch, k] -> [batch, k, n].
    ``multi_hot`` / ``count``: [batch] or [batch, k] -> [batch, n] (one row per
    example; Keras would treat a rank-1 input as a single sample).  Indices
    outside [0, num_tokens) (e.g. a dropped mask, -1) contribute nothing.
    """

    kind: ClassVar[str] = "category_encoding"
    mode: EncodingMode
    num_tokens: int

    def __post_init__(self) -> None:
        if self.mode not in ENCODING_MODES:
            raise ValueError(f"category_encoding: unknown mode {self.mode!r}")
        if self.num_tokens < 1:
            raise ValueError("category_encoding: num_tokens must be >= 1")

    @classmethod
    def fit(
        cls,
        train_values: np.ndarray,
        *,
        mode: EncodingMode = "one_hot",
        num_tokens: int | None = None,
    ) -> CategoryEncoding:
        """``num_tokens`` given, else max training index + 1."""
        if num_tokens is None:
            num_tokens = int(np.max(np.asarray(train_values))) + 1
        return cls(mode, num_tokens)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Encode the batch; float32 output."""
        if values.dtype.kind not in "iubf":
            raise PreprocessingError(f"category_encoding: expected ints, got {values.dtype}")
        v = values.astype(np.int64, copy=False)
        n = self.num_tokens
        if self.mode == "one_hot":
            if v.ndim > 1 and v.shape[-1] == 1:
                v = v[..., 0]
            flat = v.reshape(-1)
            out = np.zeros((flat.size, n), dtype=_F32)
            ok = (flat >= 0) & (flat < n)
            out[np.flatnonzero(ok), flat[ok]] = 1
            return out.reshape((*v.shape, n))
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2:
            raise PreprocessingError(
                f"category_encoding: {self.mode} needs [batch] or [batch, k] input, got {v.shape}"
            )
        rows = v.shape[0]
        ok = (v >= 0) & (v < n)
        cell = (np.arange(rows, dtype=np.int64)[:, None] * n + v)[ok]
        counts = np.bincount(cell, minlength=rows * n).reshape(rows, n)
        if self.mode == "multi_hot":
            return (counts > 0).astype(_F32)
        return counts.astype(_F32)


# --------------------------------------------------------------------------- registry

_FITTERS: dict[str, Callable[..., Transform]] = {
    "standardize": Standardize.fit,
    "min_max": MinMax.fit,
    "clip": Clip.fit,
    "log1p": Log1p.fit,
    "bucketize": Bucketize.fit,
    "vocabulary": Vocabulary.fit,
    "fill_missing": FillMissing.fit,
    "hashing": Hashing.fit,
    "category_encoding": CategoryEncoding.fit,
}

TransformSpec: TypeAlias = str | Mapping[str, Any] | Transform
"""A transform to fit: a registry name (``"standardize"``), a mapping with the name
under ``"kind"`` (or ``"name"``) plus fit parameters (``{"kind": "clip", "hi": 10}``),
or an already-built :class:`Transform` (used as is)."""


def transform_names() -> tuple[str, ...]:
    """The names accepted by :func:`fit_named`."""
    return tuple(_FITTERS)


def fit_named(name: str, train_values: np.ndarray, **params: Any) -> Transform:
    """Fit the registered transform ``name`` on training values with keyword ``params``."""
    try:
        fitter = _FITTERS[name]
    except KeyError:
        raise ValueError(
            f"unknown transform {name!r}; expected one of {', '.join(_FITTERS)}"
        ) from None
    try:
        return fitter(np.asarray(train_values), **params)
    except TypeError as e:
        raise ValueError(f"transform {name!r}: bad parameters {sorted(params)}: {e}") from None


def fit_spec(spec: TransformSpec, train_values: np.ndarray) -> Transform:
    """Fit one :data:`TransformSpec` on training values."""
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, str):
        return fit_named(spec, train_values)
    params = dict(spec)
    name = params.pop("kind", None) or params.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"transform spec {spec!r} needs a 'kind' (or 'name') string")
    return fit_named(name, train_values, **params)


def fit_chain(
    specs: TransformSpec | Sequence[TransformSpec], train_values: np.ndarray
) -> tuple[Transform, ...]:
    """Fit a chain: each spec is fitted on the training values transformed by the previous steps."""
    if isinstance(specs, str | Mapping | Transform):
        specs = [specs]
    out: list[Transform] = []
    x = np.asarray(train_values)
    for spec in specs:
        t = fit_spec(spec, x)
        out.append(t)
        x = t.apply(x)
    return tuple(out)
