"""TF Serving's `tensorflow_model_server` flags, as `gateway serve` (and the
`tensorflow_model_server` entry point) accept them.

Every flag TF Serving has is one of three kinds:
- `MAPPED`: set a config key (`overrides` turns them into a YAML-shaped mapping that is
  laid over the `--config` file: flags override the YAML);
- `NO_EFFECT`: accepted with a warning naming them (nothing here corresponds yet);
- `REFUSED`: turning them on would silently lose a guarantee the caller asked for (TLS
  credentials), so they are an error with the way to get it here.
Any other flag is an argparse error. Syntax: `--flag=value` (TF Serving's) or
`--flag value`; booleans also as `--flag` alone, values `true|false|1|0`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError

DEFAULT_MODEL_NAME = "default"
"""TF Serving's `--model_name` default."""

SCAN_ONCE_SECONDS = 1e9
"""`--file_system_poll_wait_seconds=0` (TF Serving: scan once): scan at start, then only
when a reload or a rollout asks for it."""


def parse_bool(value: str) -> bool:
    """TF Serving's boolean flag values."""
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true, false, 1 or 0, got {value!r}")


@dataclass(frozen=True)
class Flag:
    """One TF Serving flag: its value type and what it does here."""

    name: str
    kind: Callable[[str], Any]
    help: str

    @property
    def is_bool(self) -> bool:
        """A boolean flag (`--flag` alone means true)."""
        return self.kind is parse_bool


MAPPED: tuple[Flag, ...] = (
    Flag("port", int, "gRPC port (server.port; 0 picks a free port)"),
    Flag("rest_api_port", int, "REST API port (server.rest_api_port; 0: none)"),
    Flag("grpc_socket_path", str, "also listen on this Unix socket (server.grpc_socket_path)"),
    Flag(
        "grpc_channel_arguments",
        str,
        "gRPC server arguments k=v,k=v (server.grpc_channel_arguments)",
    ),
    Flag("model_name", str, f"the one model's name (default {DEFAULT_MODEL_NAME!r})"),
    Flag("model_base_path", str, "the one model's base path (models[0].base_path)"),
    Flag("model_config_file", str, "ModelServerConfig text file (tfserving.model_config_file)"),
    Flag(
        "model_config_file_poll_wait_seconds",
        int,
        "re-read --model_config_file this often (0: once)",
    ),
    Flag(
        "file_system_poll_wait_seconds",
        int,
        "scan base paths this often (lifecycle.poll_interval_seconds; 0: at start)",
    ),
    Flag("enable_batching", parse_bool, "every model's batching.enabled"),
    Flag("batching_parameters_file", str, "BatchingParameters text file, for every model"),
    Flag("monitoring_config_file", str, "MonitoringConfig text file (Prometheus path)"),
    Flag("enable_model_warmup", parse_bool, "lifecycle.warmup"),
    Flag("max_num_load_retries", int, "lifecycle.max_load_retries"),
    Flag(
        "load_retry_interval_micros",
        int,
        "fixed retry interval (lifecycle.retry_initial_seconds = retry_max_seconds)",
    ),
    Flag("num_load_threads", int, "lifecycle.load_threads (0: 1)"),
    Flag("tensorflow_session_parallelism", int, "both TF thread pools' sizes"),
    Flag("tensorflow_intra_op_parallelism", int, "server.tf_intra_op_threads"),
    Flag("tensorflow_inter_op_parallelism", int, "server.tf_inter_op_threads"),
    Flag("enable_signature_method_name_check", parse_bool, "server.signature_method_name_check"),
    Flag(
        "enable_serialization_as_tensor_content",
        parse_bool,
        "server.response_encoding: tensor_content",
    ),
    Flag("version", parse_bool, "print the version and exit"),
)

NO_EFFECT: tuple[Flag, ...] = (
    Flag("rest_api_num_threads", int, "the REST API runs on the event loop"),
    Flag("rest_api_timeout_in_ms", int, "REST requests have no deadline here"),
    Flag("rest_api_enable_cors_support", parse_bool, "no CORS headers"),
    Flag(
        "allow_version_labels_for_unavailable_models",
        parse_bool,
        "labels may always name versions that are not available yet",
    ),
    Flag("enable_per_model_batching_parameters", parse_bool, "not supported yet"),
    Flag("num_unload_threads", int, "unloads run on the event loop"),
    Flag("flush_filesystem_caches", parse_bool, "not supported"),
    Flag("tensorflow_session_config_file", str, "not supported yet"),
    Flag("platform_config_file", str, "not supported: the TensorFlow platform only"),
    Flag("per_process_gpu_memory_fraction", float, "not supported yet"),
    Flag("saved_model_tags", str, "the 'serve' MetaGraph is always loaded"),
    Flag("grpc_max_threads", int, "the gRPC server is asynchronous"),
    Flag("num_request_iterations_for_warmup", int, "each warmup record is replayed once"),
    Flag("remove_unused_fields_from_bundle_metagraph", parse_bool, "not supported"),
    Flag("prefer_tflite_model", parse_bool, "no TF Lite models"),
    Flag("num_tflite_pools", int, "no TF Lite models"),
    Flag("num_tflite_interpreters_per_pool", int, "no TF Lite models"),
    Flag("xla_cpu_compilation_enabled", parse_bool, "not supported"),
    Flag("xla_gpu_compilation_enabled", parse_bool, "not supported"),
    Flag("enable_profiler", parse_bool, "not supported"),
    Flag("thread_pool_factory_config_file", str, "not supported"),
    Flag("mixed_precision", str, "not supported"),
    Flag("skip_initialize_tpu", parse_bool, "no TPU support"),
    Flag("enable_grpc_healthcheck_service", parse_bool, "the health service is always served"),
)

REFUSED: tuple[Flag, ...] = (
    Flag("ssl_config_file", str, "TLS: use server.tls in a --config file"),
    Flag("use_alts_credentials", parse_bool, "ALTS is not supported: use server.tls"),
)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add every TF Serving flag to `parser` (dest = the flag name, default None)."""
    groups = (
        (MAPPED, "TF Serving flags"),
        (NO_EFFECT, "TF Serving flags accepted with a warning (no effect here)"),
        (REFUSED, "TF Serving flags refused when set (see the README)"),
    )
    for flags, title in groups:
        group = parser.add_argument_group(title)
        for flag in flags:
            if flag.is_bool:
                group.add_argument(
                    f"--{flag.name}",
                    type=parse_bool,
                    nargs="?",
                    const=True,
                    metavar="BOOL",
                    help=flag.help,
                )
            else:
                group.add_argument(
                    f"--{flag.name}",
                    type=flag.kind,
                    metavar=flag.kind.__name__.upper(),
                    help=flag.help,
                )


def _given(args: argparse.Namespace, flag: Flag) -> Any:
    return getattr(args, flag.name, None)


def warnings(args: argparse.Namespace) -> list[str]:
    """One line per given flag that has no effect here."""
    return [
        f"--{f.name} is accepted but has no effect here ({f.help})"
        for f in NO_EFFECT
        if _given(args, f) is not None
        and not (f.name == "saved_model_tags" and _given(args, f) == "serve")
    ]


def check_refused(args: argparse.Namespace) -> None:
    """`ConfigError` for a refused flag that is set."""
    for flag in REFUSED:
        value = _given(args, flag)
        if value:  # an empty file name or `false` asks for nothing
            raise ConfigError(f"--{flag.name}: not supported ({flag.help})")


def parse_channel_arguments(text: str) -> dict[str, int | str]:
    """TF Serving's `--grpc_channel_arguments` form, `k=v,k=v`: a value that is an
    integer is passed as one, anything else as a string (as TF Serving does)."""
    out: dict[str, int | str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grpc_channel_arguments: {item!r}: expected KEY=VALUE")
        value = value.strip()
        try:
            out[key.strip()] = int(value)
        except ValueError:
            out[key.strip()] = value
    return out


@dataclass
class Overrides:
    """What the flags set: a YAML-shaped mapping laid over the config file, the one model
    of `--model_name`/`--model_base_path`, and which flag set which key (for errors)."""

    data: dict[str, Any] = field(default_factory=dict)
    single_model: tuple[str, Path] | None = None
    flag_of: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Warnings about flags that were ignored (e.g. --model_name with a model config file)."""

    def set(self, key: str, value: Any, flag: str) -> None:
        """Set `section.key` (dotted) to `value`, recording that `flag` set it."""
        section, _, name = key.partition(".")
        self.data.setdefault(section, {})[name] = value
        self.flag_of[key] = flag

    def name_flag(self, message: str) -> str:
        """`message` (a config error) prefixed with the flag that set its key, if any."""
        for key, flag in self.flag_of.items():
            if any(message.startswith(key + c) for c in (":", ".", "[")):
                return f"{flag}: {message}"
        return message


def _absolute(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else Path.cwd() / path


def overrides(args: argparse.Namespace) -> Overrides:
    """The config keys the given flags set (relative paths against the current directory,
    as TF Serving reads them). `ConfigError` for refused flags and invalid values."""
    check_refused(args)
    out = Overrides()
    a: Mapping[str, Any] = vars(args)

    def given(name: str) -> Any:
        return a.get(name)

    if given("port") is not None:
        out.set("server.port", given("port"), "--port")
    if given("rest_api_port") is not None:
        out.set("server.rest_api_port", given("rest_api_port") or None, "--rest_api_port")
    if given("grpc_socket_path") is not None:
        path = given("grpc_socket_path")
        out.set("server.grpc_socket_path", _absolute(path) if path else None, "--grpc_socket_path")
    if given("grpc_channel_arguments") is not None:
        out.set(
            "server.grpc_channel_arguments",
            parse_channel_arguments(given("grpc_channel_arguments")),
            "--grpc_channel_arguments",
        )
    for name, key in (
        ("model_config_file", "tfserving.model_config_file"),
        ("batching_parameters_file", "tfserving.batching_parameters_file"),
        ("monitoring_config_file", "tfserving.monitoring_config_file"),
    ):
        if given(name) is not None:
            out.set(key, _absolute(given(name)) if given(name) else None, f"--{name}")
    seconds = given("model_config_file_poll_wait_seconds")
    if seconds is not None:
        if seconds < 0:
            raise ConfigError(
                "--model_config_file_poll_wait_seconds: expected >= 0 (TF Serving reserves "
                f"negative values for its tests), got {seconds}"
            )
        out.set(
            "tfserving.model_config_file_poll_wait_seconds",
            seconds,
            "--model_config_file_poll_wait_seconds",
        )
    seconds = given("file_system_poll_wait_seconds")
    if seconds is not None:
        if seconds < 0:
            raise ConfigError(
                "--file_system_poll_wait_seconds: expected >= 0 (TF Serving reserves "
                f"negative values for its tests), got {seconds}"
            )
        out.set(
            "lifecycle.poll_interval_seconds",
            seconds or SCAN_ONCE_SECONDS,
            "--file_system_poll_wait_seconds",
        )
    if given("enable_batching") is not None:
        out.set("tfserving.enable_batching", given("enable_batching"), "--enable_batching")
    if given("enable_model_warmup") is not None:
        out.set("lifecycle.warmup", given("enable_model_warmup"), "--enable_model_warmup")
    if given("max_num_load_retries") is not None:
        out.set(
            "lifecycle.max_load_retries", given("max_num_load_retries"), "--max_num_load_retries"
        )
    micros = given("load_retry_interval_micros")
    if micros is not None:
        seconds = max(micros, 1000) / 1e6  # negative: TF Serving does not wait
        out.set("lifecycle.retry_initial_seconds", seconds, "--load_retry_interval_micros")
        out.set("lifecycle.retry_max_seconds", seconds, "--load_retry_interval_micros")
    if given("num_load_threads") is not None:
        out.set("lifecycle.load_threads", max(given("num_load_threads"), 1), "--num_load_threads")
    both = given("tensorflow_session_parallelism")
    for name, key in (
        ("tensorflow_intra_op_parallelism", "server.tf_intra_op_threads"),
        ("tensorflow_inter_op_parallelism", "server.tf_inter_op_threads"),
    ):
        if given(name) is not None:
            out.set(key, given(name), f"--{name}")
        elif both is not None:
            out.set(key, both, "--tensorflow_session_parallelism")
    if given("enable_signature_method_name_check") is not None:
        out.set(
            "server.signature_method_name_check",
            given("enable_signature_method_name_check"),
            "--enable_signature_method_name_check",
        )
    if given("enable_serialization_as_tensor_content") is not None:
        encoding = "tensor_content" if given("enable_serialization_as_tensor_content") else "typed"
        out.set("server.response_encoding", encoding, "--enable_serialization_as_tensor_content")

    name, base_path = given("model_name"), given("model_base_path")
    if given("model_config_file"):
        if name is not None or base_path is not None:
            out.notes.append(
                "--model_name and --model_base_path are ignored with --model_config_file "
                "(as in TF Serving)"
            )
    elif base_path:
        out.single_model = (name or DEFAULT_MODEL_NAME, _absolute(base_path))
        out.flag_of["models[0].base_path"] = "--model_base_path"
        out.flag_of["models[0].name"] = "--model_name"
    elif name is not None:
        raise ConfigError(
            "--model_name: needs --model_base_path (TF Serving's Docker image passes "
            "--model_base_path=/models/${MODEL_NAME})"
        )
    return out
