from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValueKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_KIND_UNSPECIFIED: _ClassVar[ValueKind]
    VALUE_KIND_FLOAT: _ClassVar[ValueKind]
    VALUE_KIND_INT: _ClassVar[ValueKind]
    VALUE_KIND_STRING: _ClassVar[ValueKind]
VALUE_KIND_UNSPECIFIED: ValueKind
VALUE_KIND_FLOAT: ValueKind
VALUE_KIND_INT: ValueKind
VALUE_KIND_STRING: ValueKind

class Preprocessing(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeaturePreprocessing]
    def __init__(self, features: _Optional[_Iterable[_Union[FeaturePreprocessing, _Mapping]]] = ...) -> None: ...

class FeaturePreprocessing(_message.Message):
    __slots__ = ("feature", "raw", "transforms")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    raw: RawFeatureSpec
    transforms: _containers.RepeatedCompositeFieldContainer[Transform]
    def __init__(self, feature: _Optional[str] = ..., raw: _Optional[_Union[RawFeatureSpec, _Mapping]] = ..., transforms: _Optional[_Iterable[_Union[Transform, _Mapping]]] = ...) -> None: ...

class RawFeatureSpec(_message.Message):
    __slots__ = ("kind", "shape")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    kind: ValueKind
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, kind: _Optional[_Union[ValueKind, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Transform(_message.Message):
    __slots__ = ("standardize", "min_max", "clip", "log1p", "bucketize", "vocabulary", "fill_missing", "hashing", "category_encoding")
    STANDARDIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_MAX_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    LOG1P_FIELD_NUMBER: _ClassVar[int]
    BUCKETIZE_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    FILL_MISSING_FIELD_NUMBER: _ClassVar[int]
    HASHING_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ENCODING_FIELD_NUMBER: _ClassVar[int]
    standardize: Standardize
    min_max: MinMax
    clip: Clip
    log1p: Log1p
    bucketize: Bucketize
    vocabulary: Vocabulary
    fill_missing: FillMissing
    hashing: Hashing
    category_encoding: CategoryEncoding
    def __init__(self, standardize: _Optional[_Union[Standardize, _Mapping]] = ..., min_max: _Optional[_Union[MinMax, _Mapping]] = ..., clip: _Optional[_Union[Clip, _Mapping]] = ..., log1p: _Optional[_Union[Log1p, _Mapping]] = ..., bucketize: _Optional[_Union[Bucketize, _Mapping]] = ..., vocabulary: _Optional[_Union[Vocabulary, _Mapping]] = ..., fill_missing: _Optional[_Union[FillMissing, _Mapping]] = ..., hashing: _Optional[_Union[Hashing, _Mapping]] = ..., category_encoding: _Optional[_Union[CategoryEncoding, _Mapping]] = ...) -> None: ...

class Standardize(_message.Message):
    __slots__ = ("mean", "std", "shape", "invert")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    shape: _containers.RepeatedScalarFieldContainer[int]
    invert: bool
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., shape: _Optional[_Iterable[int]] = ..., invert: _Optional[bool] = ...) -> None: ...

class MinMax(_message.Message):
    __slots__ = ("min", "max", "clip_output")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    CLIP_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    clip_output: bool
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ..., clip_output: _Optional[bool] = ...) -> None: ...

class Clip(_message.Message):
    __slots__ = ("lo", "hi")
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    lo: float
    hi: float
    def __init__(self, lo: _Optional[float] = ..., hi: _Optional[float] = ...) -> None: ...

class Log1p(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Bucketize(_message.Message):
    __slots__ = ("boundaries",)
    BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    boundaries: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, boundaries: _Optional[_Iterable[float]] = ...) -> None: ...

class StringTokens(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class IntTokens(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class Vocabulary(_message.Message):
    __slots__ = ("strings", "ints", "num_oov_buckets", "string_mask", "int_mask", "drop_mask", "oov_hash", "salt")
    class OovHash(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OOV_HASH_UNSPECIFIED: _ClassVar[Vocabulary.OovHash]
        FARMHASH: _ClassVar[Vocabulary.OovHash]
        FLOORMOD: _ClassVar[Vocabulary.OovHash]
    OOV_HASH_UNSPECIFIED: Vocabulary.OovHash
    FARMHASH: Vocabulary.OovHash
    FLOORMOD: Vocabulary.OovHash
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    INTS_FIELD_NUMBER: _ClassVar[int]
    NUM_OOV_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    STRING_MASK_FIELD_NUMBER: _ClassVar[int]
    INT_MASK_FIELD_NUMBER: _ClassVar[int]
    DROP_MASK_FIELD_NUMBER: _ClassVar[int]
    OOV_HASH_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    strings: StringTokens
    ints: IntTokens
    num_oov_buckets: int
    string_mask: str
    int_mask: int
    drop_mask: bool
    oov_hash: Vocabulary.OovHash
    salt: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, strings: _Optional[_Union[StringTokens, _Mapping]] = ..., ints: _Optional[_Union[IntTokens, _Mapping]] = ..., num_oov_buckets: _Optional[int] = ..., string_mask: _Optional[str] = ..., int_mask: _Optional[int] = ..., drop_mask: _Optional[bool] = ..., oov_hash: _Optional[_Union[Vocabulary.OovHash, str]] = ..., salt: _Optional[_Iterable[int]] = ...) -> None: ...

class FillMissing(_message.Message):
    __slots__ = ("number", "integer", "text")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class Hashing(_message.Message):
    __slots__ = ("num_bins", "string_mask", "int_mask", "salt")
    NUM_BINS_FIELD_NUMBER: _ClassVar[int]
    STRING_MASK_FIELD_NUMBER: _ClassVar[int]
    INT_MASK_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    num_bins: int
    string_mask: str
    int_mask: int
    salt: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, num_bins: _Optional[int] = ..., string_mask: _Optional[str] = ..., int_mask: _Optional[int] = ..., salt: _Optional[_Iterable[int]] = ...) -> None: ...

class CategoryEncoding(_message.Message):
    __slots__ = ("mode", "num_tokens")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[CategoryEncoding.Mode]
        ONE_HOT: _ClassVar[CategoryEncoding.Mode]
        MULTI_HOT: _ClassVar[CategoryEncoding.Mode]
        COUNT: _ClassVar[CategoryEncoding.Mode]
    MODE_UNSPECIFIED: CategoryEncoding.Mode
    ONE_HOT: CategoryEncoding.Mode
    MULTI_HOT: CategoryEncoding.Mode
    COUNT: CategoryEncoding.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    mode: CategoryEncoding.Mode
    num_tokens: int
    def __init__(self, mode: _Optional[_Union[CategoryEncoding.Mode, str]] = ..., num_tokens: _Optional[int] = ...) -> None: ...
