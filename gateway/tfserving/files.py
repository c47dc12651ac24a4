"""TF Serving's text-format config files, read with its own protos (`protos`).

Errors are `ConfigError`s naming the file, and for a parse error the line, the column and
the field, e.g. ``models.config:3:5: Message type "tensorflow.serving.ModelConfig" has no
field named "base_pth".``
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from pydantic import ValidationError

from gateway.config import BatchingConfig
from gateway.core.errors import ConfigError
from gateway.tfserving import protos

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
"""TF Serving's `PrometheusExporter::kPrometheusPath`, used when the config names none."""

_LOCATION = re.compile(r"^\d+(:\d+)? : ")

BATCHING_FIELDS: Mapping[str, str] = {
    "max_batch_size": "max_batch_size",
    "batch_timeout_micros": "batch_timeout_micros",
    "num_batch_threads": "num_batch_threads",
}
"""BatchingParameters field -> the `models[].batching` key it sets (`max_enqueued_batches`
sets `max_enqueued_requests`, times the max batch size)."""

BATCHING_NO_EFFECT = (
    "thread_pool_name",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
)
"""BatchingParameters fields accepted but without effect here (see the README)."""


def read_text_proto(path: Path, message_class: Any) -> Any:
    """Parse a text-format protobuf file into a new `message_class` message."""
    name = message_class.DESCRIPTOR.full_name
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found (expected a text-format {name})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    message = message_class()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        if line is None:
            raise ConfigError(f"{path}: {exc}") from exc
        where = f"{path}:{line}:{column}" if column else f"{path}:{line}"
        raise ConfigError(f"{where}: {_LOCATION.sub('', str(exc))}") from exc
    return message


def read_model_server_config(path: Path) -> Any:
    """A `tensorflow.serving.ModelServerConfig` file (`--model_config_file`)."""
    return read_text_proto(path, protos.model_server_config())


@dataclass(frozen=True)
class BatchingOverrides:
    """What a `BatchingParameters` file sets on every model's `batching` block."""

    values: Mapping[str, int] = field(default_factory=dict)
    """`models[].batching` keys and their values."""
    max_enqueued_batches: int | None = None
    ignored: tuple[str, ...] = ()
    """Fields the file sets that have no effect here."""

    def apply(self, batching: BatchingConfig, enabled: bool | None = None) -> BatchingConfig:
        """`batching` with the file's values (and `enabled`, when not None)."""
        data = {**batching.model_dump(), **self.values}
        if self.max_enqueued_batches is not None:
            data["max_enqueued_requests"] = self.max_enqueued_batches * data["max_batch_size"]
        if enabled is not None:
            data["enabled"] = enabled
        return BatchingConfig.model_validate(data)


def read_batching_parameters(path: Path) -> BatchingOverrides:
    """A `tensorflow.serving.BatchingParameters` file (`--batching_parameters_file`)."""
    params = read_text_proto(path, protos.batching_parameters())
    values: dict[str, int] = {}
    for name, key in BATCHING_FIELDS.items():
        if params.HasField(name):
            values[key] = int(getattr(params, name).value)
    enqueued: int | None = None
    if params.HasField("max_enqueued_batches"):
        enqueued = int(params.max_enqueued_batches.value)
        if enqueued < 1:
            raise ConfigError(f"{path}: max_enqueued_batches: expected at least 1, got {enqueued}")
    try:
        BatchingConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ConfigError(f"{path}: {first['loc'][0]}: {first['msg']}") from exc
    ignored = tuple(f.name for f, _ in params.ListFields() if f.name in BATCHING_NO_EFFECT)
    return BatchingOverrides(values, enqueued, ignored)


def read_prometheus_path(path: Path) -> str | None:
    """The Prometheus path of a `tensorflow.serving.MonitoringConfig` file
    (`--monitoring_config_file`), or None when Prometheus is not enabled."""
    config = read_text_proto(path, protos.monitoring_config())
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ConfigError(
            f"{path}: prometheus_config.path: expected a path starting with '/', "
            f"got {metrics_path!r}"
        )
    return str(metrics_path)
