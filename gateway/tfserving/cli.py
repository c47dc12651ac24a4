"""The serve command line: `gateway serve` and the `tensorflow_model_server` entry point.

Both take the same arguments: `--config` (a YAML file, optional), `--workers`, and TF
Serving's flags (`gateway.tfserving.flags`), which override the YAML. So a script written
for TF Serving (`tensorflow_model_server --port=8500 --model_name=m
--model_base_path=/models/m`) starts the gateway unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.tfserving import flags

PROG = "tensorflow_model_server"

USAGE = "%(prog)s [--config FILE] [--workers N] [TF Serving flags, e.g. --port=8500 ...]"

NO_MODELS = (
    "no models to serve: give --model_base_path (and --model_name), --model_config_file or "
    "--config (TF Serving: Both server_options.model_base_path and "
    "server_options.model_config_file are empty!)"
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of the serve command line."""
    parser.add_argument(
        "--config",
        help="YAML config file (optional with TF Serving's flags, which override it)",
    )
    parser.add_argument(
        "--workers", type=int, help="serving processes sharing the port (overrides server.workers)"
    )
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    flags.add_flags(parser)


def serve_argv(args: argparse.Namespace) -> list[str]:
    """The arguments that start the same serve again (for `--workers` children)."""
    out = ["--config", str(args.config)] if args.config else []
    for flag in (*flags.MAPPED, *flags.NO_EFFECT, *flags.REFUSED):
        value = getattr(args, flag.name, None)
        if value is None or flag.name in ("port", "version"):
            continue
        text = ("true" if value else "false") if flag.is_bool else str(value)
        out.append(f"--{flag.name}={text}")
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import gateway

    try:
        tf_version = version("tensorflow")
    except PackageNotFoundError:
        tf_version = "not installed"
    return (
        f"TensorFlow ModelServer: tf-gateway {gateway.__version__} (a drop-in gateway)\n"
        f"TensorFlow Library: {tf_version}"
    )


def serve(args: argparse.Namespace, prog: str = PROG) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit code (2: invalid config)."""
    if args.version:
        print(_version())
        return 0
    worker = args.worker_index
    try:
        overrides = flags.overrides(args)
        if args.config is None and overrides.single_model is None and not args.model_config_file:
            raise ConfigError(NO_MODELS)
        from gateway.tfserving.source import TfServingSource

        source = TfServingSource(Path(args.config) if args.config else None, overrides)
        config = source.load()
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if worker is None:
        for line in [*flags.warnings(args), *source.notes]:
            print(f"{prog}: warning: {line}", file=sys.stderr)
    server = config.server
    workers = args.workers if args.workers is not None else server.workers
    if worker is None and workers > 1:
        from gateway.workers import run_workers

        return run_workers(serve_argv(args), server.host, server.port, workers)
    updates: dict[str, object] = {}
    if worker is not None and server.metrics_port:
        updates["metrics_port"] = server.metrics_port + worker
    if updates:
        config = config.model_copy(update={"server": server.model_copy(update=updates)})
    if worker is not None:
        from gateway.config import per_worker

        config = per_worker(config, worker)
    from gateway.sinks.logging import configure_logging, flush_logs

    configure_logging(config.logging.level, config.logging.format, config.logging.file)
    if worker is not None:
        import structlog

        structlog.contextvars.bind_contextvars(worker=worker)
    from gateway.app import Gateway

    async def run() -> None:
        gateway = Gateway(config, source.config_path, source=source)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await gateway.start()
        also = f" and unix:{gateway.socket_path}" if gateway.socket_path else ""
        print(f"listening on {config.server.host}:{gateway.port}{also}", flush=True)
        await stop.wait()
        await gateway.stop()

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        flush_logs()
    return 0


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The `tensorflow_model_server` argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=USAGE,
        allow_abbrev=False,
        description="The gateway, started with TF Serving's command line (README: Coming "
        "from TF Serving).",
    )
    add_serve_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `tensorflow_model_server` entry point; returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(
            f"{PROG}: error: unknown flag(s): {' '.join(unknown)} (neither a TF Serving flag "
            "nor a gateway one; see the README's 'Coming from TF Serving')",
            file=sys.stderr,
        )
        return 2
    return serve(args)
