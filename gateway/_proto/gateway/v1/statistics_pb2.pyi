from gateway._proto.gateway.v1 import preprocessing_pb2 as _preprocessing_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureStatistics(_message.Message):
    __slots__ = ("num_examples", "features")
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    num_examples: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureStats]
    def __init__(self, num_examples: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureStats, _Mapping]]] = ...) -> None: ...

class FeatureStats(_message.Message):
    __slots__ = ("feature", "kind", "dtype", "shape", "numeric", "categorical")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    feature: str
    kind: _preprocessing_pb2.ValueKind
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    numeric: NumericStats
    categorical: CategoricalStats
    def __init__(self, feature: _Optional[str] = ..., kind: _Optional[_Union[_preprocessing_pb2.ValueKind, str]] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., numeric: _Optional[_Union[NumericStats, _Mapping]] = ..., categorical: _Optional[_Union[CategoricalStats, _Mapping]] = ...) -> None: ...

class NumericStats(_message.Message):
    __slots__ = ("count", "missing", "infinite", "mean", "std", "min", "max", "quantiles", "histogram", "quantile_histogram")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    INFINITE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    count: int
    missing: int
    infinite: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: _containers.RepeatedCompositeFieldContainer[Quantile]
    histogram: Histogram
    quantile_histogram: Histogram
    def __init__(self, count: _Optional[int] = ..., missing: _Optional[int] = ..., infinite: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[Quantile, _Mapping]]] = ..., histogram: _Optional[_Union[Histogram, _Mapping]] = ..., quantile_histogram: _Optional[_Union[Histogram, _Mapping]] = ...) -> None: ...

class Quantile(_message.Message):
    __slots__ = ("percentile", "value")
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    percentile: float
    value: float
    def __init__(self, percentile: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("edges", "counts")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, edges: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class CategoricalStats(_message.Message):
    __slots__ = ("count", "missing", "unique", "top_values", "other_count")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    TOP_VALUES_FIELD_NUMBER: _ClassVar[int]
    OTHER_COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    missing: int
    unique: int
    top_values: _containers.RepeatedCompositeFieldContainer[ValueCount]
    other_count: int
    def __init__(self, count: _Optional[int] = ..., missing: _Optional[int] = ..., unique: _Optional[int] = ..., top_values: _Optional[_Iterable[_Union[ValueCount, _Mapping]]] = ..., other_count: _Optional[int] = ...) -> None: ...

class ValueCount(_message.Message):
    __slots__ = ("text", "integer", "count")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    integer: int
    count: int
    def __init__(self, text: _Optional[str] = ..., integer: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...
