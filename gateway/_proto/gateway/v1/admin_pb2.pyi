from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "error", "failures", "warmup_records", "labels")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RECORDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    error: str
    failures: int
    warmup_records: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., failures: _Optional[int] = ..., warmup_records: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "base_path", "versions", "labels", "serving")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_PATH_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_path: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    labels: _containers.ScalarMap[str, int]
    serving: bool
    def __init__(self, name: _Optional[str] = ..., base_path: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., labels: _Optional[_Mapping[str, int]] = ..., serving: _Optional[bool] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("models", "uptime_seconds", "gateway_version")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    uptime_seconds: float
    gateway_version: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., uptime_seconds: _Optional[float] = ..., gateway_version: _Optional[str] = ...) -> None: ...

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, changes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetFeatureSkewRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class FeatureSkew(_message.Message):
    __slots__ = ("version", "feature", "categorical", "num_values", "js", "linf", "psi", "crossed", "drifted", "js_threshold", "linf_threshold", "psi_threshold")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    JS_FIELD_NUMBER: _ClassVar[int]
    LINF_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    CROSSED_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    JS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LINF_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    version: int
    feature: str
    categorical: bool
    num_values: int
    js: float
    linf: float
    psi: float
    crossed: _containers.RepeatedScalarFieldContainer[str]
    drifted: bool
    js_threshold: float
    linf_threshold: float
    psi_threshold: float
    def __init__(self, version: _Optional[int] = ..., feature: _Optional[str] = ..., categorical: _Optional[bool] = ..., num_values: _Optional[int] = ..., js: _Optional[float] = ..., linf: _Optional[float] = ..., psi: _Optional[float] = ..., crossed: _Optional[_Iterable[str]] = ..., drifted: _Optional[bool] = ..., js_threshold: _Optional[float] = ..., linf_threshold: _Optional[float] = ..., psi_threshold: _Optional[float] = ...) -> None: ...

class GetFeatureSkewResponse(_message.Message):
    __slots__ = ("model", "features")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    model: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureSkew]
    def __init__(self, model: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureSkew, _Mapping]]] = ...) -> None: ...
