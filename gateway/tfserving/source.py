"""TF Serving's flags and config files as the gateway's config source.

`load()` builds the config the gateway runs with: the YAML file (when `--config` is given),
the flags laid over it, then TF Serving's files: the `model_config_file` decides which
models are served, where and which versions (the YAML's entry of the same name adds
everything else: checks, shadows, rollouts, ...), the `batching_parameters_file` (and
`--enable_batching`) sets every model's batching, the `monitoring_config_file` the
Prometheus path. `poll()` re-reads the model config file; `apply_model_server_config()`
merges a `HandleReloadConfigRequest` the same way. The gateway (`gateway.app.Gateway`) uses
it through its `ConfigSource` protocol.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from gateway.config import GatewayConfig, parse_config, read_config_data
from gateway.core.errors import ConfigError
from gateway.tfserving.files import (
    BatchingOverrides,
    read_batching_parameters,
    read_model_server_config,
    read_prometheus_path,
)
from gateway.tfserving.flags import Overrides
from gateway.transport.model_server_config import apply_model_server_config

log = structlog.get_logger("gateway.tfserving")

NO_YAML_DEFAULTS: dict[str, Any] = {"logging": {"divergence_log": None}}
"""The config document when there is no `--config` file, before the flags."""


class TfServingSource:
    """The config of `gateway serve` / `tensorflow_model_server`: YAML, flags, TF Serving's
    files. Not thread-safe beyond what the gateway does: one `load` or `poll` at a time."""

    def __init__(self, config_path: Path | None, flags: Overrides | None = None) -> None:
        self.config_path = config_path
        self._flags = flags or Overrides()
        self._base: GatewayConfig | None = None
        self._batching: BatchingOverrides | None = None
        self._applied: Any = None  # the ModelServerConfig last applied from the file
        self._prometheus_path: str | None = None
        self.notes: list[str] = []
        """Warnings of the last `load` (ignored flags and fields), for the caller to show."""

    @property
    def poll_seconds(self) -> float:
        """`tfserving.model_config_file_poll_wait_seconds` (0 without a model config file)."""
        if self._base is None or self._base.tfserving.model_config_file is None:
            return 0.0
        return self._base.tfserving.model_config_file_poll_wait_seconds

    @property
    def prometheus_path(self) -> str | None:
        """The monitoring config's Prometheus path, or None (not enabled, no file)."""
        return self._prometheus_path

    def load(self) -> GatewayConfig:
        """Read the YAML, the flags and every TF Serving file again; `ConfigError` naming the
        file (or the flag) when something is invalid, and then nothing changes."""
        base = self._read_base()
        tfs = base.tfserving
        notes = list(self._flags.notes)
        batching = None
        if tfs.batching_parameters_file is not None:
            batching = read_batching_parameters(tfs.batching_parameters_file)
            if batching.ignored:
                notes.append(
                    f"{tfs.batching_parameters_file}: {', '.join(batching.ignored)} "
                    "accepted but without effect here"
                )
        prometheus = None
        if tfs.monitoring_config_file is not None:
            prometheus = read_prometheus_path(tfs.monitoring_config_file)
        applied = None
        config = base
        if tfs.model_config_file is not None:
            applied = read_model_server_config(tfs.model_config_file)
            notes += _ignored_fields(tfs.model_config_file, applied)
            config = self._merge(base, base, applied, f"{tfs.model_config_file}: ", batching)
        else:
            config = _with_batching(config, batching, tfs.enable_batching)
        self._base, self._batching, self._applied = base, batching, applied
        self._prometheus_path = prometheus
        self.notes = notes
        return config

    def poll(self, current: GatewayConfig) -> GatewayConfig | None:
        """`current` with the model config file's models when the file changed since it was
        last applied, else None; `ConfigError` when it is invalid."""
        base = self._base
        if base is None or base.tfserving.model_config_file is None:
            return None
        path = base.tfserving.model_config_file
        server_config = read_model_server_config(path)
        if server_config == self._applied:
            return None
        config = self._merge(base, current, server_config, f"{path}: ", self._batching)
        for note in _ignored_fields(path, server_config):
            log.warning("model_config_ignored_fields", detail=note)
        self._applied = server_config
        return config

    def apply_model_server_config(
        self, current: GatewayConfig, server_config: Any
    ) -> GatewayConfig:
        """`current` with the models of a `HandleReloadConfigRequest` (kept until the model
        config file changes)."""
        base = self._base if self._base is not None else current
        return self._merge(base, current, server_config, "config.", self._batching)

    # -- internals -----------------------------------------------------------------------

    def _read_base(self) -> GatewayConfig:
        """The YAML file with the flags laid over it, validated."""
        path = self.config_path
        # Without a YAML file no model has shadows: no divergence log (TF Serving writes
        # nothing into its working directory either).
        data = read_config_data(path) if path is not None else NO_YAML_DEFAULTS
        if data is None:
            data = {}
        if isinstance(data, dict):
            data = _lay_over(data, self._flags)
        try:
            return parse_config(data, path.parent if path is not None else Path.cwd())
        except ConfigError as exc:
            raise ConfigError(self._flags.name_flag(str(exc))) from exc

    @staticmethod
    def _merge(
        base: GatewayConfig,
        current: GatewayConfig,
        server_config: Any,
        where: str,
        batching: BatchingOverrides | None,
    ) -> GatewayConfig:
        """`apply_model_server_config` over the YAML's models (and, for names the YAML does
        not have, the settings the model has now), then the batching file."""
        overlays = {m.name: m for m in current.models} | {m.name: m for m in base.models}
        merged = apply_model_server_config(
            base.model_copy(update={"models": list(overlays.values())}), server_config, where
        )
        return _with_batching(merged, batching, base.tfserving.enable_batching)


def _lay_over(data: dict[str, Any], flags: Overrides) -> dict[str, Any]:
    """The YAML document with the flags' keys laid over it (mappings merged key by key)."""
    out = copy.deepcopy(data)
    for section, values in flags.data.items():
        target = out.get(section)
        if target is None:
            target = out[section] = {}
        if not isinstance(target, dict):
            continue  # the YAML's own error is reported by parse_config
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
    if flags.single_model is not None:
        name, base_path = flags.single_model
        models = out.get("models")
        yaml_models: list[Any] = models if isinstance(models, list) else []
        entry = next(
            (m for m in yaml_models if isinstance(m, dict) and m.get("name") == name),
            {"name": name},
        )
        out["models"] = [{**entry, "base_path": base_path}]
    return out


def _with_batching(
    config: GatewayConfig, batching: BatchingOverrides | None, enabled: bool | None
) -> GatewayConfig:
    """Every model's batching with the batching file's values and `--enable_batching`."""
    if batching is None and enabled is None:
        return config
    overrides = batching or BatchingOverrides()
    models = []
    for i, model in enumerate(config.models):
        try:
            new = overrides.apply(model.batching, enabled)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise ConfigError(
                f"models[{i}].batching.{first['loc'][0]}: {first['msg']} "
                "(with the batching parameters file)"
            ) from exc
        models.append(model.model_copy(update={"batching": new}))
    return config.model_copy(update={"models": models})


def _ignored_fields(path: Path, server_config: Any) -> list[str]:
    """Notes for ModelConfig fields that have no effect here."""
    names = [
        mc.name for mc in server_config.model_config_list.config if mc.HasField("logging_config")
    ]
    if not names:
        return []
    return [f"{path}: logging_config of {', '.join(names)} is not supported (ignored)"]
