"""Typed gateway configuration, loaded from YAML with one-line errors.

Every error names the key path and what was expected, e.g.
``models[0].base_path: directory does not exist: models/x``.
Relative paths are resolved against the directory holding the config file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.core.errors import ConfigError
from gateway.core.limits import DecodeLimits


def read_secret(file: Path | None, env: str | None, file_key: str, env_key: str) -> str | None:
    """A secret named in the config: the file's content (stripped; it wins) or the
    environment variable's; None when neither is named. ConfigError naming the key when
    the file cannot be read or is empty, or the variable is unset or empty."""
    if file is not None:
        try:
            secret = file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{file_key}: cannot read {file}: {exc.strerror}") from exc
        if not secret:
            raise ConfigError(f"{file_key}: file is empty: {file}")
        return secret
    if env is not None:
        secret = os.environ.get(env, "").strip()
        if not secret:
            raise ConfigError(f"{env_key}: environment variable {env} is not set or empty")
        return secret
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_S = TypeVar("_S", bound=_Strict)


class TlsConfig(_Strict):
    """TLS for the gRPC port; with `client_ca_file`, clients must present a certificate (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def _channel_argument_value(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer or a string, got {value!r}")
    return value


ChannelArgumentValue = Annotated[int | str, BeforeValidator(_channel_argument_value)]
"""A gRPC channel argument's value: gRPC takes integers and strings."""


class ServerConfig(_Strict):
    """Where and how the gRPC server listens."""

    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8500
    metrics_port: Annotated[int | None, Field(ge=0, le=65535)] = 8502
    max_message_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    tf_intra_op_threads: Annotated[int, Field(ge=0, le=256)] = 0
    tf_inter_op_threads: Annotated[int, Field(ge=0, le=256)] = 0
    signature_method_name_check: bool = False
    """TF Serving's `--enable_signature_method_name_check`: Classify/Regress only on
    signatures with that method_name (off: any signature of the right shape)."""
    response_encoding: Literal["typed", "tensor_content"] = "typed"
    """How response tensors are written: TF Serving's typed value fields (`float_val`, ...),
    or numeric values as `tensor_content` bytes."""
    tls: TlsConfig | None = None
    admin_token_file: Path | None = None
    admin_token_env: str | None = None
    grpc_socket_path: Path | None = None
    """Also listen on this Unix domain socket (`unix:` address; a stale socket file is
    removed at start), in addition to host:port. TF Serving's `--grpc_socket_path`."""
    grpc_channel_arguments: dict[str, ChannelArgumentValue] = {}
    """gRPC server channel arguments (`grpc.max_connection_age_ms: 30000`, ...), applied
    after the gateway's own options, so they may override the message size limits."""
    rest_api_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """TF Serving's `--rest_api_port`: TF Serving's REST API (JSON over HTTP/1.1; with
    `tls`, HTTPS with the same certificate), and the Prometheus metrics at the monitoring
    config's path. Shared by `workers` like `port`."""
    max_tensor_rank: Annotated[int, Field(ge=1, le=254)] = 32
    """Dimensions one request tensor may have (TensorFlow's own limit is 254)."""
    max_tensor_elements: Annotated[int, Field(ge=1)] | None = None
    """Elements one request tensor may hold, whatever its wire form (the broadcast form
    included); default: `max_message_bytes` (one element per byte of the largest message)."""
    max_request_elements: Annotated[int, Field(ge=1)] | None = None
    """Elements all of a request's tensors may hold together; default 4x
    `max_tensor_elements`."""
    max_string_bytes: Annotated[int, Field(ge=1)] | None = None
    """Bytes of one string element; default: `max_message_bytes`."""
    max_examples: Annotated[int, Field(ge=1)] = 1024 * 1024
    """tf.Examples in one Classify/Regress/MultiInference request."""
    max_features: Annotated[int, Field(ge=1)] = 4096
    """Features one tf.Example (or the context) may name."""
    max_inflight_requests: Annotated[int, Field(ge=1)] = 2048
    """Requests one process works on at once, every protocol together; one more gets
    RESOURCE_EXHAUSTED (with `grpc-retry-pushback-ms` / `Retry-After`)."""
    max_inflight_bytes: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024
    """Bytes of decoded request inputs one process holds at once; over it,
    RESOURCE_EXHAUSTED as above."""
    max_concurrent_streams: Annotated[int, Field(ge=1)] = 256
    """Concurrent RPCs on one HTTP/2 connection (`grpc.max_concurrent_streams`)."""
    keepalive_time_seconds: Annotated[float, Field(gt=0)] = 60.0
    """The server pings a connection silent for this long (`grpc.keepalive_time_ms`)..."""
    keepalive_timeout_seconds: Annotated[float, Field(gt=0)] = 20.0
    """...and closes it when the ping is not answered in this time: half-open connections
    are reaped (`grpc.keepalive_timeout_ms`)."""
    max_connection_idle_seconds: Annotated[float, Field(gt=0)] | None = 300.0
    """A connection with no RPC for this long is closed (GOAWAY; clients reconnect
    transparently). `grpc.max_connection_idle_ms`; null: never."""
    max_connection_age_seconds: Annotated[float, Field(gt=0)] | None = None
    """A connection older than this is closed gracefully (`grpc.max_connection_age_ms`),
    spreading clients over replicas behind a load balancer; null: never."""
    handshake_timeout_seconds: Annotated[float, Field(gt=0)] = 20.0
    """A connection that does not finish its HTTP/2 (and TLS) handshake in this time is
    closed: a client that opens a socket and sends nothing holds it this long at most
    (`grpc.server_handshake_timeout_ms`)."""
    rest_keepalive_seconds: Annotated[float, Field(gt=0)] = 75.0
    """A REST connection that sends nothing for this long, new or between requests, is
    closed (HTTP/1.1 keep-alive timeout)."""

    def decode_limits(self) -> DecodeLimits:
        """The request decoding limits these settings make (defaults derived from
        `max_message_bytes`)."""
        tensor = self.max_tensor_elements or self.max_message_bytes
        return DecodeLimits(
            max_rank=self.max_tensor_rank,
            max_tensor_elements=tensor,
            max_request_elements=self.max_request_elements or 4 * tensor,
            max_string_bytes=self.max_string_bytes or self.max_message_bytes,
            max_examples=self.max_examples,
            max_features=self.max_features,
        )

    def channel_options(self) -> dict[str, int | str]:
        """The gRPC server's channel arguments: the message size limits, SO_REUSEPORT,
        the connection hygiene settings above, then `grpc_channel_arguments` (which may
        override any of them)."""

        def ms(seconds: float) -> int:
            return int(seconds * 1000)

        options: dict[str, int | str] = {
            "grpc.max_receive_message_length": self.max_message_bytes,
            "grpc.max_send_message_length": self.max_message_bytes,
            "grpc.so_reuseport": 1,
            "grpc.max_concurrent_streams": self.max_concurrent_streams,
            "grpc.keepalive_time_ms": ms(self.keepalive_time_seconds),
            "grpc.keepalive_timeout_ms": ms(self.keepalive_timeout_seconds),
            "grpc.server_handshake_timeout_ms": ms(self.handshake_timeout_seconds),
            # Clients may keep calls alive with pings, one per 10 s at most when idle.
            "grpc.http2.min_ping_interval_without_data_ms": 10_000,
            "grpc.keepalive_permit_without_calls": 1,
        }
        if self.max_connection_idle_seconds is not None:
            options["grpc.max_connection_idle_ms"] = ms(self.max_connection_idle_seconds)
        if self.max_connection_age_seconds is not None:
            options["grpc.max_connection_age_ms"] = ms(self.max_connection_age_seconds)
            options["grpc.max_connection_age_grace_ms"] = ms(self.grace_seconds)
        options.update(self.grpc_channel_arguments)
        return options

    @field_validator("grpc_channel_arguments")
    @classmethod
    def _channel_argument_names(cls, value: dict[str, int | str]) -> dict[str, int | str]:
        for key in value:
            if not key.startswith("grpc."):
                raise ValueError(
                    f"{key!r}: expected a gRPC channel argument name starting with 'grpc.' "
                    "(e.g. grpc.max_connection_age_ms)"
                )
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServerConfig:
        if self.rest_api_port is not None and self.rest_api_port == self.port:
            raise ValueError(f"rest_api_port: must differ from port ({self.port})")
        return self


class LifecycleConfig(_Strict):
    """How model repositories are polled and versions are loaded."""

    poll_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    load_threads: Annotated[int, Field(ge=1, le=16)] = 1
    retry_initial_seconds: Annotated[float, Field(gt=0)] = 1.0
    retry_max_seconds: Annotated[float, Field(gt=0)] = 60.0
    warmup: bool = True
    load_before_serving: bool = True
    """As TF Serving: open the port only after every configured model's first load
    (false: accept calls at once, models answer NOT_FOUND until loaded)."""
    startup_timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    """With `load_before_serving`, the longest the port waits for first loads."""
    max_load_retries: Annotated[int, Field(ge=0)] | None = None
    """TF Serving's `--max_num_load_retries`: a failed version is retried with backoff up to
    this many times with unchanged files, then stays FAILED until its files change. None:
    retried only when its files change (with backoff, with no limit)."""


class LoggingConfig(_Strict):
    """Structured logging output, and the divergence log."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    file: Path | None = None
    divergence_log: Path | None = Path("logs/divergence.jsonl")
    rotate_mb: Annotated[float, Field(gt=0)] = 100
    keep: Annotated[int, Field(ge=0)] = 10
    replica: str | None = None


class VersionPolicy(_Strict):
    """Which versions under base_path should be served (exactly one key, as in TF Serving)."""

    latest: Annotated[int, Field(ge=1)] | None = None
    all: dict[str, Any] | None = None
    specific: list[Annotated[int, Field(ge=0)]] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VersionPolicy:
        given = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of {latest: N}, {all: {}}, {specific: [..]}, "
                f"got {given or 'none'}"
            )
        if self.specific is not None and not self.specific:
            raise ValueError("specific: expected at least one version")
        return self

    def select(self, available: list[int]) -> set[int]:
        """Return the versions to serve out of the versions found on disk."""
        if self.all is not None:
            return set(available)
        if self.specific is not None:
            return set(self.specific) & set(available)
        return set(sorted(available)[-(self.latest or 1) :])


class BatchingConfig(_Strict):
    """Dynamic batching of concurrent requests into one TensorFlow call."""

    enabled: bool = True
    max_batch_size: Annotated[int, Field(ge=1, le=65536)] = 64
    batch_timeout_micros: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    max_enqueued_requests: Annotated[int, Field(ge=1)] = 10_000
    num_batch_threads: Annotated[int, Field(ge=1, le=32)] = 1
    inline_max_micros: Annotated[int, Field(ge=0, le=1_000_000)] = 2000


CheckName = Literal[
    "missing_feature",
    "unexpected_feature",
    "dtype_mismatch",
    "shape_mismatch",
    "nan_or_inf",
    "out_of_range",
    "z_score",
    "unseen_category",
]
CheckAction = Literal["ignore", "log", "reject"]

DEFAULT_CHECK_ACTIONS: Final[Mapping[CheckName, CheckAction]] = MappingProxyType(
    {
        "missing_feature": "reject",
        "unexpected_feature": "log",
        "dtype_mismatch": "reject",
        "shape_mismatch": "reject",
        "nan_or_inf": "log",
        "out_of_range": "log",
        "z_score": "log",
        "unseen_category": "log",
    }
)
"""The action of each check when `feature_checks.actions` does not name it."""


class FeatureCheckOverrideConfig(_Strict):
    """Per-feature overrides of the check actions and limits."""

    actions: dict[CheckName, CheckAction] = {}
    margin: Annotated[float, Field(ge=0)] | None = None
    z_threshold: Annotated[float, Field(gt=0)] | None = None


class FeatureChecksConfig(_Strict):
    """Per-request checks of raw features against the version's training statistics."""

    enabled: bool = True
    actions: dict[CheckName, CheckAction] = dict(DEFAULT_CHECK_ACTIONS)
    margin: Annotated[float, Field(ge=0)] = 0.0
    z_threshold: Annotated[float, Field(gt=0)] = 6.0
    sensitive_features: list[str] = []
    per_feature: dict[str, FeatureCheckOverrideConfig] = {}

    @field_validator("actions")
    @classmethod
    def _complete(cls, value: dict[CheckName, CheckAction]) -> dict[CheckName, CheckAction]:
        """The checks not named keep their `DEFAULT_CHECK_ACTIONS` action."""
        return {**DEFAULT_CHECK_ACTIONS, **value}


class SkewThresholdsConfig(_Strict):
    """Thresholds above which a feature's serving distribution counts as drifted."""

    js: Annotated[float, Field(ge=0)] | None = None
    linf: Annotated[float, Field(ge=0)] | None = None
    psi: Annotated[float, Field(ge=0)] | None = None


class SkewConfig(_Strict):
    """Distribution skew of serving windows against training, per feature."""

    enabled: bool = True
    window_values: Annotated[int, Field(ge=10)] | None = 10_000
    window_seconds: Annotated[float, Field(gt=0)] | None = None
    min_values: Annotated[int, Field(ge=1)] = 100
    numeric: SkewThresholdsConfig = SkewThresholdsConfig(js=0.1)
    categorical: SkewThresholdsConfig = SkewThresholdsConfig(linf=0.1)
    per_feature: dict[str, SkewThresholdsConfig] = {}
    check_interval_seconds: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _window(self) -> SkewConfig:
        if self.window_values is None and self.window_seconds is None:
            raise ValueError("expected window_values and/or window_seconds")
        return self


def _version_ref(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a version number or a label, got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"expected a version number >= 0, got {value}")
    return value


VersionRef = Annotated[int | str, BeforeValidator(_version_ref)]
"""A version number or a version label."""


DEFAULT_NOISE_TIMEOUT_MS: Final = 1000
"""Noise-lane timeout of a model with neither shadows nor `noise_timeout_ms`."""


class ShadowConfig(_Strict):
    """A version that receives a mirrored copy of the primary's traffic."""

    version: VersionRef
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    timeout_ms: Annotated[int, Field(ge=1)] = 200
    queue_size: Annotated[int, Field(ge=1)] = 10_000
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1


class OutputRuleConfig(_Strict):
    """How one output alias is compared between versions (see README: divergence)."""

    kind: Literal["auto", "regression", "probabilities", "logits", "classes"] = "auto"
    atol: Annotated[float, Field(ge=0, strict=True)] = 1e-6
    rtol: Annotated[float, Field(ge=0, strict=True)] = 1e-5
    max_abs: Annotated[float, Field(ge=0, strict=True)] = 0.05
    max_js: Annotated[float, Field(ge=0, strict=True)] | None = None
    label_flip: Annotated[bool, Field(strict=True)] = True
    top_k: Annotated[int, Field(ge=1, strict=True)] = 3


class CaptureConfig(_Strict):
    """PredictionLog capture of diverged (and sampled) requests, for replay."""

    path: Path | None = None
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    rotate_mb: Annotated[float, Field(gt=0)] = 100
    keep: Annotated[int, Field(ge=0)] = 5


class RoutingKeyConfig(_Strict):
    """Where a request's routing key comes from: a metadata header or an input feature."""

    header: Annotated[str, Field(min_length=1)] | None = None
    feature: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> RoutingKeyConfig:
        if (self.header is None) == (self.feature is None):
            raise ValueError("expected exactly one of {header: NAME}, {feature: NAME}")
        return self


_Rate = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]
"""A finite number >= 0 (not a bool, not a string)."""
_Ratio = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
"""A finite number > 0 (not a bool, not a string)."""


class GatesConfig(_Strict):
    """Rollout gate thresholds (maximums); `null` turns a gate off. The feature-skew gate is
    off by default: only versions that ship training statistics can be judged by it."""

    max_divergence_rate: _Rate | None = 0.02
    max_error_rate_ratio: _Ratio | None = 1.5
    max_p99_latency_ratio: _Ratio | None = 1.3
    max_feature_skew: _Rate | None = None


class MinSamplesConfig(_Strict):
    """How much evidence each gate needs before it is judged."""

    compared: Annotated[int, Field(ge=1, strict=True)] = 100
    error_requests: Annotated[int, Field(ge=1, strict=True)] = 50
    primary_requests: Annotated[int, Field(ge=1, strict=True)] = 100
    latency: Annotated[int, Field(ge=1, strict=True)] = 100


class RolloutConfig(_Strict):
    """A canary rollout of `candidate` against `primary` in weighted, gated steps."""

    candidate: VersionRef
    primary: VersionRef | None = None
    routing_key: RoutingKeyConfig | None = None
    steps: list[Annotated[float, Field(gt=0, le=100, strict=True)]] = [1.0, 5.0, 25.0, 50.0, 100.0]
    min_requests_per_step: Annotated[int, Field(ge=0, strict=True)] = 500
    min_step_seconds: _Rate = 60.0
    gates: GatesConfig = GatesConfig()
    on_failure: Literal["rollback", "pause"] = "rollback"
    compare_sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    compare_timeout_ms: Annotated[int, Field(ge=1)] = 1000
    compare_queue_size: Annotated[int, Field(ge=1)] = 10_000
    min_samples: MinSamplesConfig = MinSamplesConfig()
    auto_start: bool = False

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[float]) -> list[float]:
        """Percentages in (0, 100] (checked per item), increasing, ending at 100."""
        if not value:
            raise ValueError("expected a non-empty list of percentages")
        for i in range(1, len(value)):
            if value[i] <= value[i - 1]:
                raise ValueError(
                    f"steps must increase, got steps[{i}] = {value[i]:g} after {value[i - 1]:g}"
                )
        if value[-1] != 100.0:
            raise ValueError(f"the last step must be 100 (promotion), got {value[-1]:g}")
        return value


class ModelConfig(_Strict):
    """One model: its repository directory, version policy, labels and batching."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")]
    base_path: Path
    version_policy: VersionPolicy = VersionPolicy(latest=1)
    version_labels: dict[str, Annotated[int, Field(ge=0)]] = {}
    batching: BatchingConfig = BatchingConfig()
    feature_checks: FeatureChecksConfig = FeatureChecksConfig()
    skew: SkewConfig = SkewConfig()
    primary: VersionRef | None = None
    shadows: list[ShadowConfig] = []
    divergence: dict[str, OutputRuleConfig] = {}
    noise_sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    noise_queue_size: Annotated[int, Field(ge=1)] = 10_000
    noise_timeout_ms: Annotated[int, Field(ge=1)] | None = None
    """None: the longest `shadows[].timeout_ms`, else `DEFAULT_NOISE_TIMEOUT_MS` (see
    `noise_timeout`)."""
    capture: CaptureConfig = CaptureConfig()
    rollout: RolloutConfig | None = None

    @model_validator(mode="after")
    def _references(self) -> ModelConfig:
        refs = [("primary", self.primary)] + [
            (f"shadows[{i}].version", s.version) for i, s in enumerate(self.shadows)
        ]
        if self.rollout is not None:
            refs += [
                ("rollout.candidate", self.rollout.candidate),
                ("rollout.primary", self.rollout.primary),
            ]
        for where, ref in refs:
            if isinstance(ref, str) and ref not in self.version_labels:
                raise ValueError(
                    f"{where}: label {ref!r} is not in version_labels "
                    f"({', '.join(sorted(self.version_labels)) or 'none defined'})"
                )
        if self.rollout is not None:
            if self.rollout.primary is None and self.primary is None:
                raise ValueError(
                    "rollout.primary: required when the model has no `primary` "
                    "(a version number or a label)"
                )
            candidate, primary = self.rollout_versions()
            if candidate == primary:
                raise ValueError(f"rollout.candidate: same version as the primary ({primary})")
        return self

    def noise_timeout(self) -> int:
        """Timeout (ms) of the noise lane's replayed calls: `noise_timeout_ms`, else the
        longest shadow `timeout_ms`, else `DEFAULT_NOISE_TIMEOUT_MS`."""
        if self.noise_timeout_ms is not None:
            return self.noise_timeout_ms
        return max((s.timeout_ms for s in self.shadows), default=DEFAULT_NOISE_TIMEOUT_MS)

    def rollout_versions(self) -> tuple[int, int]:
        """`(candidate, primary)` of the rollout block as version numbers: labels resolved
        against `version_labels` (the config's, not runtime overrides: a promotion moves
        labels); the primary is `rollout.primary`, else the model's `primary`."""
        r = self.rollout
        assert r is not None, "the model has no rollout block"
        primary = r.primary if r.primary is not None else self.primary
        assert primary is not None  # the validator requires one of them

        def version(ref: VersionRef) -> int:
            return self.version_labels[ref] if isinstance(ref, str) else ref

        return version(r.candidate), version(primary)

    @field_validator("version_labels")
    @classmethod
    def _labels(cls, value: dict[str, int]) -> dict[str, int]:
        for label in value:
            if not label or label.isdigit():
                raise ValueError(f"label {label!r}: expected a non-numeric name")
        return value


class RedisTlsConfig(_Strict):
    """TLS to Redis (`rediss://` URLs): the CA to trust, and a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class RolloutStoreConfig(_Strict):
    """Which rollout state store replicas share: `file` (a directory, `state_dir`; one
    machine) or `redis` (a Redis server; a fleet)."""

    kind: Literal["file", "redis"] = "file"
    url: str | None = None
    """`redis://host:6379/0` or `rediss://...` (TLS); required for kind redis."""
    key_prefix: str = "gateway"
    """Every key the gateway writes starts with `<key_prefix>:`."""
    password_file: Path | None = None
    """A file holding the Redis password (wins over `password_env` and the URL's)."""
    password_env: str | None = None
    """An environment variable holding the Redis password."""
    username: str | None = None
    """Redis ACL user name (default: the URL's, else Redis' default user)."""
    tls: RedisTlsConfig | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 0.5
    """Per-command timeout: a slower store counts as unavailable (rollouts hold)."""

    @model_validator(mode="after")
    def _redis_needs_url(self) -> RolloutStoreConfig:
        if self.kind == "redis":
            if not self.url:
                raise ValueError("url: required for kind redis (redis://host:6379/0)")
            if not self.url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(f"url: expected redis://, rediss:// or unix://, got {self.url!r}")
        return self


class RolloutsConfig(_Strict):
    """Where rollout state is kept (shared by replicas) and how often rollouts are judged."""

    state_dir: Path = Path("state")
    tick_seconds: Annotated[float, Field(gt=0)] = 1.0
    store: RolloutStoreConfig = RolloutStoreConfig()
    lease_seconds: Annotated[float, Field(gt=0)] | None = None
    """How long a replica's judging lease lasts without renewal (default 3 ticks): after
    the holder dies, another replica judges within this time."""


class BreakerConfig(_Strict):
    """The circuit breaker of a mirror lane: after `failures` consecutive errors or
    timeouts the lane stops mirroring for a cool-down that starts at `cooldown_seconds`
    and doubles, up to `max_cooldown_seconds`, while its probes keep failing."""

    failures: Annotated[int, Field(ge=1)] = 20
    cooldown_seconds: Annotated[float, Field(gt=0)] = 1.0
    max_cooldown_seconds: Annotated[float, Field(gt=0)] = 60.0

    @model_validator(mode="after")
    def _order(self) -> BreakerConfig:
        if self.max_cooldown_seconds < self.cooldown_seconds:
            raise ValueError(
                f"max_cooldown_seconds ({self.max_cooldown_seconds:g}) must be at least "
                f"cooldown_seconds ({self.cooldown_seconds:g})"
            )
        return self


class MirroringConfig(_Strict):
    """How every mirror lane (shadows, noise, canary comparison) schedules its work."""

    bulk: Annotated[int, Field(ge=1, le=65536)] = 64
    """Most queued mirrored requests a lane worker takes at once."""
    linger_ms: Annotated[float, Field(ge=0, le=10_000)] = 10.0
    """How long a lane worker lets mirrored requests gather before it runs them."""
    breaker: BreakerConfig = BreakerConfig()
    executor: Literal["in_process", "process"] = "in_process"
    """Where mirrored model calls run: this process's model-call threads, or a separate
    process per gateway process at idle priority (`SCHED_IDLE`, else nice 19) that loads
    the mirrored models' versions again (more memory: a TensorFlow runtime and a copy of
    each version) and costs the primary only the CPU it leaves idle."""


class TfServingConfig(_Strict):
    """TF Serving's own config files, read with TF Serving's protos (README: Coming from
    TF Serving); the matching `tensorflow_model_server` flags set these keys."""

    model_config_file: Path | None = None
    """Text-format `tensorflow.serving.ModelServerConfig`: the models served."""
    model_config_file_poll_wait_seconds: Annotated[float, Field(ge=0)] = 0.0
    """Re-read `model_config_file` this often and apply its changes (0: read once)."""
    batching_parameters_file: Path | None = None
    """Text-format `tensorflow.serving.BatchingParameters`, applied to every model's batching."""
    monitoring_config_file: Path | None = None
    """Text-format `tensorflow.serving.MonitoringConfig` (Prometheus metrics path)."""
    enable_batching: bool | None = None
    """TF Serving's `--enable_batching`: sets every model's `batching.enabled` (None: each
    model's own)."""

    @model_validator(mode="after")
    def _batching(self) -> TfServingConfig:
        if self.batching_parameters_file is not None and self.enable_batching is False:
            raise ValueError("batching_parameters_file is set while enable_batching is false")
        return self


class GatewayConfig(_Strict):
    """The whole gateway configuration file."""

    server: ServerConfig = ServerConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    logging: LoggingConfig = LoggingConfig()
    rollouts: RolloutsConfig = RolloutsConfig()
    mirroring: MirroringConfig = MirroringConfig()
    tfserving: TfServingConfig = TfServingConfig()
    models: list[ModelConfig] = []

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for model in value:
            if model.name in seen:
                raise ValueError(f"duplicate model name {model.name!r}")
            seen.add(model.name)
        return value

    def model(self, name: str) -> ModelConfig | None:
        """Return the config of model `name`, or None."""
        return next((m for m in self.models if m.name == name), None)


def _worker_path(path: Path, index: int) -> Path:
    """`logs/divergence.jsonl` -> `logs/divergence.w1.jsonl`."""
    return path.with_name(f"{path.stem}.w{index}{path.suffix}")


def per_worker(config: GatewayConfig, index: int) -> GatewayConfig:
    """The config of worker `index` of `--workers N`: its own divergence log and capture
    files (each rotated by one process) and its own replica name; everything else, the
    rollout state directory included, is shared."""
    import os
    import socket

    logging = config.logging
    replica = f"{logging.replica or f'{socket.gethostname()}:{os.getppid()}'}/w{index}"
    updates: dict[str, Any] = {"replica": replica}
    if logging.divergence_log is not None:
        updates["divergence_log"] = _worker_path(logging.divergence_log, index)
    models = [
        m.model_copy(
            update={
                "capture": m.capture.model_copy(
                    update={"path": _worker_path(m.capture.path, index)}
                )
            }
        )
        if m.capture.path is not None
        else m
        for m in config.models
    ]
    # A Unix socket has no SO_REUSEPORT: worker 0 alone listens there. The REST port,
    # like the gRPC port, is shared (SO_REUSEPORT).
    server = config.server
    server = server.model_copy(
        update={"grpc_socket_path": server.grpc_socket_path if index == 0 else None}
    )
    return config.model_copy(
        update={
            "logging": logging.model_copy(update=updates),
            "models": models,
            "server": server,
        }
    )


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _format_validation_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = str(first["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see the README's config reference)"
    elif first["type"] == "missing":
        msg = "required key is missing"
    extra = len(exc.errors()) - 1
    suffix = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
    return f"{_format_loc(loc)}: {msg}{suffix}"


def parse_config(data: Any, base_dir: Path) -> GatewayConfig:
    """Validate a parsed YAML document; relative paths resolve against `base_dir`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"(top level): expected a mapping, got {type(data).__name__}")
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from exc
    models = []
    for i, model in enumerate(config.models):
        written = model.base_path
        path = written if written.is_absolute() else (base_dir / written)
        if not path.is_dir():
            raise ConfigError(f"models[{i}].base_path: directory does not exist: {written}")
        models.append(model.model_copy(update={"base_path": path.resolve()}))
        capture = model.capture.path
        if capture is not None and not capture.is_absolute():
            models[-1] = models[-1].model_copy(
                update={"capture": model.capture.model_copy(update={"path": base_dir / capture})}
            )
    return config.model_copy(
        update={
            "models": models,
            "logging": _resolve_paths(config.logging, base_dir, ("file", "divergence_log")),
            "rollouts": _resolve_rollouts(config.rollouts, base_dir),
            "server": _resolve_server(config.server, base_dir),
            "tfserving": _resolve_paths(
                config.tfserving,
                base_dir,
                ("model_config_file", "batching_parameters_file", "monitoring_config_file"),
            ),
        }
    )


def _resolve_paths(section: _S, base_dir: Path, keys: tuple[str, ...]) -> _S:
    """A copy of `section` with the relative paths under `keys` resolved against `base_dir`."""
    updates = {}
    for key in keys:
        value = getattr(section, key)
        if value is not None and not value.is_absolute():
            updates[key] = base_dir / value
    return section.model_copy(update=updates)


def _resolve_rollouts(rollouts: RolloutsConfig, base_dir: Path) -> RolloutsConfig:
    """`state_dir` and the store's `password_file` and `tls.*` files against `base_dir`."""
    store = _resolve_paths(rollouts.store, base_dir, ("password_file",))
    if store.tls is not None:
        tls = _resolve_paths(store.tls, base_dir, ("ca_file", "cert_file", "key_file"))
        store = store.model_copy(update={"tls": tls})
    return _resolve_paths(rollouts, base_dir, ("state_dir",)).model_copy(update={"store": store})


def _resolve_server(server: ServerConfig, base_dir: Path) -> ServerConfig:
    updates: dict[str, Any] = {}
    if server.tls is not None:
        tls = _resolve_paths(server.tls, base_dir, ("cert_file", "key_file", "client_ca_file"))
        for key in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(tls, key)
            if value is not None and not value.is_file():
                raise ConfigError(f"server.tls.{key}: file does not exist: {value}")
        updates["tls"] = tls
    resolved = _resolve_paths(server, base_dir, ("admin_token_file", "grpc_socket_path"))
    if resolved.admin_token_file is not None and not resolved.admin_token_file.is_file():
        raise ConfigError(
            f"server.admin_token_file: file does not exist: {resolved.admin_token_file}"
        )
    return resolved.model_copy(update=updates)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML config file, raising `ConfigError` with a one-line reason."""
    return parse_config(read_config_data(path), Path(path).parent)


def read_config_data(path: str | Path) -> Any:
    """The parsed YAML document of a config file (not validated yet; see `parse_config`),
    raising `ConfigError` naming the file (and line and column for invalid YAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    return data
