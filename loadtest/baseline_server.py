"""Naive comparison baseline: a plain ``grpc.aio`` PredictionService serving one SavedModel.

Every request is handled directly in the async handler: inputs are converted with
``tf.make_ndarray``, the signature is called once (no batching, no thread pool, the event
loop is blocked while TensorFlow runs), outputs are converted with ``tf.make_tensor_proto``.
This is deliberately the simplest possible server, used as the yardstick for the gateway.

Usage::

    python -m loadtest.baseline_server --model-dir models/demo/1 --model-name demo \\
        --version 1 --port 0

prints ``listening on 127.0.0.1:PORT`` once ready and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

__all__ = ["BaselineServicer", "main", "serve", "start_server"]

DEFAULT_SIGNATURE = "serving_default"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class BaselineServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict-only servicer for one SavedModel: one signature call per request, inline."""

    def __init__(self, model_dir: str | os.PathLike[str], model_name: str, version: int) -> None:
        """Load the SavedModel at ``model_dir``; responses report ``model_name``/``version``."""
        self.model_name = model_name
        self.version = version
        self.model = tf.saved_model.load(str(model_dir))
        self.signatures: dict[str, Any] = dict(self.model.signatures)

    async def Predict(self, request: Any, context: Any) -> Any:
        """Run the requested signature (default ``serving_default``) on the request inputs."""
        spec = request.model_spec
        if spec.name and spec.name != self.model_name:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found: model {spec.name!r}"
            )
        if spec.HasField("version") and spec.version.value != self.version:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found: {self.model_name} version {spec.version.value}",
            )
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        fn: Any = self.signatures.get(signature_name)
        if fn is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Serving signature name: {signature_name!r} not found in signature def",
            )
        try:
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = fn(**inputs)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:2000])
        response = predict_pb2.PredictResponse()
        wanted = set(request.output_filter)
        for key, value in outputs.items():
            if wanted and key not in wanted:
                continue
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = signature_name
        return response


async def start_server(
    model_dir: str | os.PathLike[str],
    model_name: str,
    version: int,
    host: str = "127.0.0.1",
    port: int = 0,
) -> tuple[Any, int]:
    """Load the model, start a ``grpc.aio`` server on ``host:port`` and return
    ``(server, bound_port)``; the caller stops it with ``await server.stop(grace)``."""
    servicer = BaselineServicer(model_dir, model_name, version)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"could not bind {host}:{port}")
    await server.start()
    return server, int(bound)


async def serve(
    model_dir: str | os.PathLike[str],
    model_name: str,
    version: int,
    host: str = "127.0.0.1",
    port: int = 0,
) -> None:
    """Serve until SIGTERM/SIGINT, printing ``listening on HOST:PORT`` once ready."""
    server, bound = await start_server(model_dir, model_name, version, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {host}:{bound}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def _default_version(model_dir: str) -> int:
    name = Path(model_dir).resolve().name
    return int(name) if name.isdigit() else 1


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: parse arguments and serve until signalled; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m loadtest.baseline_server",
        description="Naive grpc.aio PredictionService over one SavedModel (baseline).",
    )
    p.add_argument("--model-dir", required=True, help="SavedModel directory (a version dir)")
    p.add_argument("--model-name", default="demo")
    p.add_argument("--version", type=int, help="version to report (default: dir name or 1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = p.parse_args(argv)
    version = args.version if args.version is not None else _default_version(args.model_dir)
    if not Path(args.model_dir).is_dir():
        p.error(f"--model-dir {args.model_dir!r} is not a directory")
    asyncio.run(serve(args.model_dir, args.model_name, version, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
