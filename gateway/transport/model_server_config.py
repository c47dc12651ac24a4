"""TF Serving's `ModelServerConfig` (the `HandleReloadConfigRequest` payload and the
`--model_config_file` contents) as the gateway's model list.

One pure function, `apply_model_server_config`, used by `ModelService.HandleReloadConfigRequest`
and by the TF Serving config source (`gateway.tfserving`): TF Serving's config decides which
models are served, where (`base_path`) and which versions (`model_version_policy`,
`version_labels`); everything else a model has in `base` (batching, checks, shadows,
rollout, ...) is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config import GatewayConfig, ModelConfig, VersionPolicy
from gateway.core.errors import ConfigError

TENSORFLOW_PLATFORM = "tensorflow"
"""The only `model_platform` served (TF Serving's `kTensorFlowModelPlatform`)."""
_MODEL_TYPE_OTHER = 2  # tensorflow.serving.ModelType.OTHER (deprecated field)


def version_policy(model_config: Any) -> VersionPolicy:
    """A `ModelConfig.model_version_policy` as a `VersionPolicy` (unset: latest 1, as TF
    Serving; `latest { num_versions: 0 }` too)."""
    policy = model_config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicy(all={})
    if kind == "specific":
        return VersionPolicy(specific=list(policy.specific.versions))
    return VersionPolicy(latest=policy.latest.num_versions or 1)


def apply_model_server_config(
    base: GatewayConfig, server_config: Any, where: str = "config."
) -> GatewayConfig:
    """`base` with its model list replaced by the models of `server_config` (a
    `tensorflow.serving.ModelServerConfig` with a `model_config_list`).

    Each model's other settings come from `base`'s model of the same name (defaults for a
    new name). A relative `base_path` is resolved against the current directory (TF
    Serving takes it as given, i.e. relative to its working directory). Raises
    `ConfigError` naming the field, prefixed with `where` (e.g. ``config.`` for a
    reload request, ``models.config: `` for a file)."""
    kind = server_config.WhichOneof("config")
    if kind != "model_config_list":
        raise ConfigError(
            f"{where.rstrip('.: ') or 'config'}: expected a model_config_list "
            f"(got {kind or 'nothing'}; custom_model_config is not supported)"
        )
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for i, mc in enumerate(server_config.model_config_list.config):
        at = f"{where}model_config_list.config[{i}]"
        if mc.name in seen:
            raise ConfigError(f"{at}.name: duplicate model name {mc.name!r}")
        seen.add(mc.name)
        if mc.model_platform and mc.model_platform != TENSORFLOW_PLATFORM:
            raise ConfigError(
                f"{at}.model_platform: {mc.model_platform!r} is not served here "
                f"(only {TENSORFLOW_PLATFORM!r} SavedModels)"
            )
        if mc.model_type == _MODEL_TYPE_OTHER:
            raise ConfigError(f"{at}.model_type: OTHER is not served here (only TENSORFLOW)")
        if not mc.base_path:
            raise ConfigError(f"{at}.base_path: required")
        base_path = Path(mc.base_path)
        if not base_path.is_absolute():
            base_path = Path.cwd() / base_path
        if not base_path.is_dir():
            raise ConfigError(f"{at}.base_path: directory does not exist: {mc.base_path}")
        try:
            policy = version_policy(mc)
        except ValidationError as exc:
            raise ConfigError(f"{at}.model_version_policy: {_reason(exc)}") from exc
        old = base.model(mc.name)
        data: dict[str, Any] = old.model_dump() if old else {}
        data.update(
            name=mc.name,
            base_path=base_path.resolve(),
            version_policy=policy.model_dump(),
            version_labels=dict(mc.version_labels),
        )
        try:
            models.append(ModelConfig.model_validate(data))
        except ValidationError as exc:
            raise ConfigError(f"{at}: {_reason(exc)}") from exc
    return base.model_copy(update={"models": models})


def _reason(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
