"""``gateway.v1.Preprocessing`` wire format <-> preprocessing domain objects.

The domain classes (:mod:`gateway.preprocessing`) are pure numpy/dataclasses;
this module holds every conversion to and from their protobuf messages.
Decoding builds the domain objects through their constructors, so a message
that describes an invalid transform raises the constructor's ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

from google.protobuf import text_format

from gateway._proto.gateway.v1 import preprocessing_pb2 as pb
from gateway.preprocessing.pipeline import FeaturePreprocessing, Preprocessing, RawFeatureSpec
from gateway.preprocessing.transforms import (
    Bucketize,
    CategoryEncoding,
    Clip,
    EncodingMode,
    FillMissing,
    Hashing,
    Log1p,
    MinMax,
    OovHash,
    Standardize,
    Transform,
    Vocabulary,
    check_salt,
)
from gateway.preprocessing.values import ValueKind

__all__ = [
    "kind_from_proto",
    "kind_to_proto",
    "preprocessing_from_proto",
    "preprocessing_from_text",
    "preprocessing_to_proto",
    "preprocessing_to_text",
    "raw_spec_from_proto",
    "raw_spec_to_proto",
    "transform_from_proto",
    "transform_kinds",
    "transform_to_proto",
]

_T = TypeVar("_T", bound=Transform)

# --------------------------------------------------------------------------- value kinds

_KIND_TO_PROTO: dict[ValueKind, pb.ValueKind] = {
    ValueKind.FLOAT: pb.VALUE_KIND_FLOAT,
    ValueKind.INT: pb.VALUE_KIND_INT,
    ValueKind.STRING: pb.VALUE_KIND_STRING,
}
_KIND_FROM_PROTO: dict[int, ValueKind] = {v: k for k, v in _KIND_TO_PROTO.items()}


def kind_to_proto(kind: ValueKind) -> pb.ValueKind:
    """Return the ``gateway.v1.ValueKind`` enum value for ``kind``."""
    return _KIND_TO_PROTO[kind]


def kind_from_proto(value: int) -> ValueKind:
    """Return the :class:`ValueKind` of a ``gateway.v1.ValueKind`` value; reject UNSPECIFIED."""
    try:
        return _KIND_FROM_PROTO[value]
    except KeyError:
        raise ValueError(f"unspecified or unknown value kind {value}") from None


# --------------------------------------------------------------------------- transforms


def _standardize_to(t: Standardize) -> pb.Standardize:
    return pb.Standardize(mean=t.mean, std=t.std, shape=t.shape, invert=t.invert)


def _standardize_from(msg: pb.Standardize) -> Standardize:
    return Standardize(tuple(msg.mean), tuple(msg.std), tuple(msg.shape), msg.invert)


def _min_max_to(t: MinMax) -> pb.MinMax:
    return pb.MinMax(min=t.min, max=t.max, clip_output=t.clip_output)


def _min_max_from(msg: pb.MinMax) -> MinMax:
    return MinMax(msg.min, msg.max, msg.clip_output)


def _clip_to(t: Clip) -> pb.Clip:
    msg = pb.Clip()
    if t.lo is not None:
        msg.lo = t.lo
    if t.hi is not None:
        msg.hi = t.hi
    return msg


def _clip_from(msg: pb.Clip) -> Clip:
    return Clip(
        msg.lo if msg.HasField("lo") else None,
        msg.hi if msg.HasField("hi") else None,
    )


def _log1p_to(t: Log1p) -> pb.Log1p:
    del t
    return pb.Log1p()


def _log1p_from(msg: pb.Log1p) -> Log1p:
    del msg
    return Log1p()


def _bucketize_to(t: Bucketize) -> pb.Bucketize:
    return pb.Bucketize(boundaries=t.boundaries)


def _bucketize_from(msg: pb.Bucketize) -> Bucketize:
    return Bucketize(tuple(msg.boundaries))


_OOV_HASH_FROM_PROTO: dict[int, OovHash] = {
    pb.Vocabulary.FARMHASH: "farmhash",
    pb.Vocabulary.FLOORMOD: "floormod",
}


def _vocabulary_to(t: Vocabulary) -> pb.Vocabulary:
    msg = pb.Vocabulary(num_oov_buckets=t.num_oov_buckets, drop_mask=t.drop_mask)
    if isinstance(t.tokens[0], str):
        msg.strings.values.extend(str(v) for v in t.tokens)
        if t.mask_token is not None:
            msg.string_mask = str(t.mask_token)
    else:
        msg.ints.values.extend(int(v) for v in t.tokens)
        if t.mask_token is not None:
            msg.int_mask = int(t.mask_token)
    msg.oov_hash = pb.Vocabulary.FARMHASH if t.oov_hash == "farmhash" else pb.Vocabulary.FLOORMOD
    if t.salt is not None:
        msg.salt.extend(t.salt)
    return msg


def _vocabulary_from(msg: pb.Vocabulary) -> Vocabulary:
    tokens: tuple[str, ...] | tuple[int, ...]
    which = msg.WhichOneof("tokens")
    if which == "strings":
        tokens = tuple(msg.strings.values)
    elif which == "ints":
        tokens = tuple(int(v) for v in msg.ints.values)
    else:
        raise ValueError("vocabulary: no tokens")
    mask_field = msg.WhichOneof("mask_token")
    mask: str | int | None = None if mask_field is None else getattr(msg, mask_field)
    return Vocabulary(
        tokens,
        msg.num_oov_buckets,
        mask,
        msg.drop_mask,
        _OOV_HASH_FROM_PROTO.get(msg.oov_hash),
        check_salt(list(msg.salt)),
    )


def _fill_missing_to(t: FillMissing) -> pb.FillMissing:
    if isinstance(t.value, str):
        return pb.FillMissing(text=t.value)
    if isinstance(t.value, int) and not isinstance(t.value, bool):
        return pb.FillMissing(integer=t.value)
    return pb.FillMissing(number=float(t.value))


def _fill_missing_from(msg: pb.FillMissing) -> FillMissing:
    which = msg.WhichOneof("value")
    if which is None:
        raise ValueError("fill_missing: no value")
    value: float | int | str = getattr(msg, which)
    return FillMissing(value)


def _hashing_to(t: Hashing) -> pb.Hashing:
    msg = pb.Hashing(num_bins=t.num_bins)
    if isinstance(t.mask_value, str):
        msg.string_mask = t.mask_value
    elif t.mask_value is not None:
        msg.int_mask = int(t.mask_value)
    if t.salt is not None:
        msg.salt.extend(t.salt)
    return msg


def _hashing_from(msg: pb.Hashing) -> Hashing:
    which = msg.WhichOneof("mask_value")
    mask: str | int | None = None if which is None else getattr(msg, which)
    return Hashing(msg.num_bins, mask, check_salt(list(msg.salt)))


_MODE_TO_PROTO: dict[EncodingMode, pb.CategoryEncoding.Mode] = {
    "one_hot": pb.CategoryEncoding.ONE_HOT,
    "multi_hot": pb.CategoryEncoding.MULTI_HOT,
    "count": pb.CategoryEncoding.COUNT,
}
_MODE_FROM_PROTO: dict[int, EncodingMode] = {v: k for k, v in _MODE_TO_PROTO.items()}


def _category_encoding_to(t: CategoryEncoding) -> pb.CategoryEncoding:
    return pb.CategoryEncoding(mode=_MODE_TO_PROTO[t.mode], num_tokens=t.num_tokens)


def _category_encoding_from(msg: pb.CategoryEncoding) -> CategoryEncoding:
    try:
        mode = _MODE_FROM_PROTO[msg.mode]
    except KeyError:
        raise ValueError("category_encoding: unspecified mode") from None
    return CategoryEncoding(mode, int(msg.num_tokens))


@dataclass(frozen=True)
class _TransformCodec:
    """How one transform class maps to its field of the ``Transform.kind`` oneof."""

    cls: type[Transform]
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Transform]


def _codec(
    cls: type[_T], encode: Callable[[_T], Any], decode: Callable[[Any], _T]
) -> _TransformCodec:
    return _TransformCodec(cls, encode, decode)


_CODECS: dict[str, _TransformCodec] = {
    c.cls.kind: c
    for c in (
        _codec(Standardize, _standardize_to, _standardize_from),
        _codec(MinMax, _min_max_to, _min_max_from),
        _codec(Clip, _clip_to, _clip_from),
        _codec(Log1p, _log1p_to, _log1p_from),
        _codec(Bucketize, _bucketize_to, _bucketize_from),
        _codec(Vocabulary, _vocabulary_to, _vocabulary_from),
        _codec(FillMissing, _fill_missing_to, _fill_missing_from),
        _codec(Hashing, _hashing_to, _hashing_from),
        _codec(CategoryEncoding, _category_encoding_to, _category_encoding_from),
    )
}
"""Transform kind (= ``Transform.kind`` oneof field name) -> its codec."""


def transform_kinds() -> tuple[str, ...]:
    """The transform kinds this codec can (de)serialize."""
    return tuple(_CODECS)


def transform_to_proto(t: Transform) -> pb.Transform:
    """Serialize as a ``gateway.v1.Transform`` with the ``kind`` oneof set."""
    try:
        codec = _CODECS[t.kind]
    except KeyError:
        raise ValueError(f"no wire format for transform kind {t.kind!r}") from None
    out = pb.Transform()
    getattr(out, t.kind).CopyFrom(codec.encode(t))
    return out


@overload
def transform_from_proto(msg: pb.Transform) -> Transform: ...
@overload
def transform_from_proto(msg: pb.Transform, expected: type[_T]) -> _T: ...
def transform_from_proto(msg: pb.Transform, expected: type[Transform] | None = None) -> Transform:
    """Deserialize any ``gateway.v1.Transform`` to the matching class.

    With ``expected``, the message's ``kind`` oneof must be that class's kind.
    """
    which = msg.WhichOneof("kind")
    if expected is not None:
        if which != expected.kind:
            raise ValueError(f"expected a {expected.kind!r} transform, got {which!r}")
    elif which is None:
        raise ValueError("transform with no kind set")
    return _CODECS[cast(str, which)].decode(getattr(msg, cast(str, which)))


# --------------------------------------------------------------------------- pipeline


def raw_spec_to_proto(spec: RawFeatureSpec) -> pb.RawFeatureSpec:
    """Serialize as ``gateway.v1.RawFeatureSpec``."""
    return pb.RawFeatureSpec(kind=kind_to_proto(spec.kind), shape=spec.shape)


def raw_spec_from_proto(msg: pb.RawFeatureSpec) -> RawFeatureSpec:
    """Deserialize ``gateway.v1.RawFeatureSpec``."""
    return RawFeatureSpec(kind_from_proto(msg.kind), tuple(int(d) for d in msg.shape))


def preprocessing_to_proto(pre: Preprocessing) -> pb.Preprocessing:
    """Serialize as ``gateway.v1.Preprocessing`` (features sorted by name)."""
    msg = pb.Preprocessing()
    for name, fp in pre.features.items():
        entry = msg.features.add(feature=name)
        entry.raw.CopyFrom(raw_spec_to_proto(fp.raw))
        entry.transforms.extend(transform_to_proto(t) for t in fp.transforms)
    return msg


def preprocessing_from_proto(msg: pb.Preprocessing) -> Preprocessing:
    """Deserialize ``gateway.v1.Preprocessing``; duplicate feature names are an error."""
    features: dict[str, FeaturePreprocessing] = {}
    for entry in msg.features:
        if entry.feature in features:
            raise ValueError(f"duplicate feature {entry.feature!r} in Preprocessing")
        features[entry.feature] = FeaturePreprocessing(
            raw_spec_from_proto(entry.raw),
            tuple(transform_from_proto(t) for t in entry.transforms),
        )
    return Preprocessing(features)


def preprocessing_to_text(pre: Preprocessing) -> str:
    """Human-readable protobuf text format."""
    return str(text_format.MessageToString(preprocessing_to_proto(pre)))


def preprocessing_from_text(text: str) -> Preprocessing:
    """Parse the protobuf text format written by :func:`preprocessing_to_text`."""
    return preprocessing_from_proto(text_format.Parse(text, pb.Preprocessing()))
