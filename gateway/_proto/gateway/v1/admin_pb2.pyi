from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
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
    __slots__ = ("version", "state", "error", "failures", "warmup_records", "labels", "runtime")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RECORDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    error: str
    failures: int
    warmup_records: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    runtime: str
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., failures: _Optional[int] = ..., warmup_records: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., runtime: _Optional[str] = ...) -> None: ...

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

class GetRolloutRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class UpdateRolloutRequest(_message.Message):
    __slots__ = ("model", "action", "weight", "reason")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[UpdateRolloutRequest.Action]
        START: _ClassVar[UpdateRolloutRequest.Action]
        PAUSE: _ClassVar[UpdateRolloutRequest.Action]
        RESUME: _ClassVar[UpdateRolloutRequest.Action]
        SET_WEIGHT: _ClassVar[UpdateRolloutRequest.Action]
        PROMOTE: _ClassVar[UpdateRolloutRequest.Action]
        ROLLBACK: _ClassVar[UpdateRolloutRequest.Action]
        RELEASE: _ClassVar[UpdateRolloutRequest.Action]
    ACTION_UNSPECIFIED: UpdateRolloutRequest.Action
    START: UpdateRolloutRequest.Action
    PAUSE: UpdateRolloutRequest.Action
    RESUME: UpdateRolloutRequest.Action
    SET_WEIGHT: UpdateRolloutRequest.Action
    PROMOTE: UpdateRolloutRequest.Action
    ROLLBACK: UpdateRolloutRequest.Action
    RELEASE: UpdateRolloutRequest.Action
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    action: UpdateRolloutRequest.Action
    weight: float
    reason: str
    def __init__(self, model: _Optional[str] = ..., action: _Optional[_Union[UpdateRolloutRequest.Action, str]] = ..., weight: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ArmSummary(_message.Message):
    __slots__ = ("requests", "errors", "client_errors", "error_rate", "p50_ms", "p99_ms", "compared", "diverged", "divergence_rate", "max_feature_skew")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    DIVERGENCE_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_FEATURE_SKEW_FIELD_NUMBER: _ClassVar[int]
    requests: int
    errors: int
    client_errors: int
    error_rate: float
    p50_ms: float
    p99_ms: float
    compared: int
    diverged: int
    divergence_rate: float
    max_feature_skew: float
    def __init__(self, requests: _Optional[int] = ..., errors: _Optional[int] = ..., client_errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., compared: _Optional[int] = ..., diverged: _Optional[int] = ..., divergence_rate: _Optional[float] = ..., max_feature_skew: _Optional[float] = ...) -> None: ...

class GateStatus(_message.Message):
    __slots__ = ("name", "value", "threshold", "passed", "judged", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    threshold: float
    passed: bool
    judged: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., passed: _Optional[bool] = ..., judged: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class RolloutDecision(_message.Message):
    __slots__ = ("at", "action", "actor", "reason", "from_weight", "to_weight")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FROM_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TO_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    at: float
    action: str
    actor: str
    reason: str
    from_weight: float
    to_weight: float
    def __init__(self, at: _Optional[float] = ..., action: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., from_weight: _Optional[float] = ..., to_weight: _Optional[float] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("model", "rollout_id", "status", "primary_version", "candidate_version", "weight", "steps", "step_index", "step_started_at", "min_requests_per_step", "min_step_seconds", "failed_gate", "previous_primary", "primary", "canary", "gates", "history", "waiting_for", "missing", "routing_key", "replica", "error", "replicas", "store", "store_up")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    MIN_STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILED_GATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PRIMARY_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STORE_UP_FIELD_NUMBER: _ClassVar[int]
    model: str
    rollout_id: str
    status: str
    primary_version: int
    candidate_version: int
    weight: float
    steps: _containers.RepeatedScalarFieldContainer[float]
    step_index: int
    step_started_at: float
    min_requests_per_step: int
    min_step_seconds: float
    failed_gate: str
    previous_primary: int
    primary: ArmSummary
    canary: ArmSummary
    gates: _containers.RepeatedCompositeFieldContainer[GateStatus]
    history: _containers.RepeatedCompositeFieldContainer[RolloutDecision]
    waiting_for: str
    missing: str
    routing_key: str
    replica: str
    error: str
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaEvidence]
    store: str
    store_up: bool
    def __init__(self, model: _Optional[str] = ..., rollout_id: _Optional[str] = ..., status: _Optional[str] = ..., primary_version: _Optional[int] = ..., candidate_version: _Optional[int] = ..., weight: _Optional[float] = ..., steps: _Optional[_Iterable[float]] = ..., step_index: _Optional[int] = ..., step_started_at: _Optional[float] = ..., min_requests_per_step: _Optional[int] = ..., min_step_seconds: _Optional[float] = ..., failed_gate: _Optional[str] = ..., previous_primary: _Optional[int] = ..., primary: _Optional[_Union[ArmSummary, _Mapping]] = ..., canary: _Optional[_Union[ArmSummary, _Mapping]] = ..., gates: _Optional[_Iterable[_Union[GateStatus, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[RolloutDecision, _Mapping]]] = ..., waiting_for: _Optional[str] = ..., missing: _Optional[str] = ..., routing_key: _Optional[str] = ..., replica: _Optional[str] = ..., error: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[ReplicaEvidence, _Mapping]]] = ..., store: _Optional[str] = ..., store_up: _Optional[bool] = ...) -> None: ...

class ReplicaEvidence(_message.Message):
    __slots__ = ("replica", "primary", "canary")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    replica: str
    primary: ArmSummary
    canary: ArmSummary
    def __init__(self, replica: _Optional[str] = ..., primary: _Optional[_Union[ArmSummary, _Mapping]] = ..., canary: _Optional[_Union[ArmSummary, _Mapping]] = ...) -> None: ...
