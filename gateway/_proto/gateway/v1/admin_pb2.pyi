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

class GetDivergenceSummaryRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class LaneSummary(_message.Message):
    __slots__ = ("lane", "comparison", "target", "shadow_version", "offered", "compared", "diverged", "divergence_rate", "label_flips", "within_noise", "errors", "timeouts", "dropped", "queued", "mean_latency_ms", "max_abs", "noise_samples", "deterministic", "suppressed", "suspended")
    class MaxAbsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LANE_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFERED_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    DIVERGENCE_RATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FLIPS_FIELD_NUMBER: _ClassVar[int]
    WITHIN_NOISE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_FIELD_NUMBER: _ClassVar[int]
    NOISE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    lane: str
    comparison: str
    target: str
    shadow_version: int
    offered: int
    compared: int
    diverged: int
    divergence_rate: float
    label_flips: int
    within_noise: int
    errors: int
    timeouts: int
    dropped: int
    queued: int
    mean_latency_ms: float
    max_abs: _containers.ScalarMap[str, float]
    noise_samples: int
    deterministic: bool
    suppressed: int
    suspended: bool
    def __init__(self, lane: _Optional[str] = ..., comparison: _Optional[str] = ..., target: _Optional[str] = ..., shadow_version: _Optional[int] = ..., offered: _Optional[int] = ..., compared: _Optional[int] = ..., diverged: _Optional[int] = ..., divergence_rate: _Optional[float] = ..., label_flips: _Optional[int] = ..., within_noise: _Optional[int] = ..., errors: _Optional[int] = ..., timeouts: _Optional[int] = ..., dropped: _Optional[int] = ..., queued: _Optional[int] = ..., mean_latency_ms: _Optional[float] = ..., max_abs: _Optional[_Mapping[str, float]] = ..., noise_samples: _Optional[int] = ..., deterministic: _Optional[bool] = ..., suppressed: _Optional[int] = ..., suspended: _Optional[bool] = ...) -> None: ...

class GetDivergenceSummaryResponse(_message.Message):
    __slots__ = ("model", "lanes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LANES_FIELD_NUMBER: _ClassVar[int]
    model: str
    lanes: _containers.RepeatedCompositeFieldContainer[LaneSummary]
    def __init__(self, model: _Optional[str] = ..., lanes: _Optional[_Iterable[_Union[LaneSummary, _Mapping]]] = ...) -> None: ...
