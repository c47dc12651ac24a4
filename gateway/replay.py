"""``gateway replay``: send captured Predict requests again and compare the answers.

::

    gateway replay FILE... --model M [--version V | --label L] --target HOST:PORT
                   [--rate R] [--timeout S] [--json]

FILE are ``PredictionLog`` TFRecord files (`gateway.sinks.capture`, TF Serving
warmup files) or shell globs. Each ``predict_log`` record's request is sent with
the stock ``PredictionServiceStub`` after overriding ``model_spec``: name M and
version V, label L, or neither (newest). The signature name and output filter
are kept. When the record holds a response, the new response's outputs are
compared with the logged ones by `gateway.analysis.divergence.compare` (logged =
primary, new = shadow, default `OutputRule` per output).

The summary gives records, sent, ok, errors by gRPC code, skipped records
(not ``predict_log``), compared, diverged count and rate, and per output the
largest ``max_abs``. Exit code 0 when the replay ran (whatever the divergence),
1 when there was nothing to replay, the target could not be reached, or every
request failed with UNAVAILABLE; 2 for unusable files (corrupt records).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROG = "gateway replay"


@dataclass
class ReplaySummary:
    """Counts of one replay run (JSON form: `to_json`)."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    skipped: int = 0
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    compared: int = 0
    diverged: int = 0
    truncated_files: list[str] = field(default_factory=list)
    max_abs: dict[str, float | None] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    @property
    def divergence_rate(self) -> float | None:
        """diverged / compared, None when nothing was compared."""
        return self.diverged / self.compared if self.compared else None

    def add_max_abs(self, output: str, value: float | None) -> None:
        """Keep the largest ``max_abs`` seen for `output` (None = not a float metric)."""
        if output not in self.max_abs:
            self.max_abs[output] = value
            return
        current = self.max_abs[output]
        if value is not None and (current is None or value > current):
            self.max_abs[output] = value

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (a non-finite ``max_abs``, i.e. NaN on one side, is null)."""
        return {
            "files": self.files,
            "records": self.records,
            "skipped": self.skipped,
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "compared": self.compared,
            "diverged": self.diverged,
            "divergence_rate": self.divergence_rate,
            "max_abs": {
                k: (v if v is None or math.isfinite(v) else None) for k, v in self.max_abs.items()
            },
            "truncated_files": self.truncated_files,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }

    def text(self) -> str:
        """Human-readable summary."""
        rate = self.divergence_rate
        lines = [
            f"files: {len(self.files)}  records: {self.records}  skipped: {self.skipped}",
            f"sent: {self.sent}  ok: {self.ok}  errors: {sum(self.errors.values())}"
            + (
                " (" + ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) + ")"
                if self.errors
                else ""
            ),
            f"compared: {self.compared}  diverged: {self.diverged}"
            + (f" ({rate:.2%})" if rate is not None else ""),
        ]
        for output, value in sorted(self.max_abs.items()):
            shown = "-" if value is None else f"{value:.6g}"
            lines.append(f"  {output}: max of max_abs {shown}")
        if self.truncated_files:
            lines.append("truncated tail in: " + ", ".join(self.truncated_files))
        lines.append(f"elapsed: {self.elapsed_seconds:.2f}s")
        return "\n".join(lines)


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``replay`` subcommand to an ``add_subparsers()`` object (func = `run_replay`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="send captured PredictionLog requests to a model and compare the answers",
        description=__doc__.split("::")[0].strip(),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="TFRecord files or globs")
    parser.add_argument("--model", required=True, help="model name to send to")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version")
    which.add_argument("--label", help="model version label")
    parser.add_argument("--target", required=True, help="gateway / TF Serving address host:port")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests per second (0 = as fast as possible)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request deadline (s)")
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="how long to wait for the target (s)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run_replay)
    return parser


def expand_files(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Expand `patterns`: (existing files, in argument order with each glob sorted and
    duplicates kept once; the patterns that matched no file)."""
    out: list[Path] = []
    seen: set[Path] = set()
    missing: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        found = [Path(m) for m in matches if Path(m).is_file()]
        if not found:
            missing.append(pattern)
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out, missing


def _records(files: list[Path], summary: ReplaySummary) -> Iterator[Any]:
    from gateway.sinks.capture import read_prediction_logs

    def truncated(path: Path, offset: int, nbytes: int) -> None:
        summary.truncated_files.append(f"{path} (at byte {offset}, {nbytes} bytes)")

    for path in files:
        yield from read_prediction_logs(path, on_truncated=truncated)


def run_replay(args: argparse.Namespace) -> int:
    """Run ``gateway replay`` with parsed `args`; print the summary; return the exit code."""
    import grpc

    from gateway.sinks.capture import CorruptRecordError

    files, missing = expand_files(list(args.files))
    for pattern in missing:
        print(f"{PROG}: warning: no such file: {pattern}", file=sys.stderr)
    if not files:
        print(f"{PROG}: error: no files to replay", file=sys.stderr)
        return 1
    summary = ReplaySummary(files=[str(p) for p in files])
    channel = grpc.insecure_channel(args.target)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
        except grpc.FutureTimeoutError:
            print(
                f"{PROG}: error: cannot connect to {args.target} within {args.connect_timeout}s",
                file=sys.stderr,
            )
            return 1
        try:
            _replay(channel, args, files, summary)
        except CorruptRecordError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            _print(summary, args.json)
            return 2
    finally:
        channel.close()
    _print(summary, args.json)
    if summary.records == 0:
        print(f"{PROG}: error: no records in {len(files)} file(s)", file=sys.stderr)
        return 1
    if summary.sent and summary.errors.get("UNAVAILABLE", 0) == summary.sent:
        print(f"{PROG}: error: {args.target} is unavailable", file=sys.stderr)
        return 1
    return 0


def _print(summary: ReplaySummary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_json(), sort_keys=False))
    else:
        print(summary.text())


def _replay(
    channel: Any, args: argparse.Namespace, files: list[Path], summary: ReplaySummary
) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from gateway.analysis.divergence import compare

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    interval = 1.0 / args.rate if args.rate and args.rate > 0 else 0.0
    start = time.monotonic()
    for record in _records(files, summary):
        summary.records += 1
        if record.WhichOneof("log_type") != "predict_log":
            summary.skipped += 1
            continue
        request = record.predict_log.request
        request.model_spec.name = args.model
        if args.version is not None:
            request.model_spec.version.value = args.version
        elif args.label is not None:
            request.model_spec.version_label = args.label
        else:
            request.model_spec.ClearField("version_choice")
        if interval:
            delay = start + summary.sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        summary.sent += 1
        try:
            response = stub.Predict(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            summary.errors[exc.code().name] += 1
            continue
        summary.ok += 1
        if not record.predict_log.HasField("response"):
            continue
        logged = {k: tf.make_ndarray(v) for k, v in record.predict_log.response.outputs.items()}
        new = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        comparison = compare(logged, new, {})
        summary.compared += 1
        summary.diverged += int(comparison.diverged)
        for output, metrics in comparison.outputs.items():
            summary.add_max_abs(output, metrics.max_abs)
    summary.elapsed_seconds = time.monotonic() - start


__all__ = ["ReplaySummary", "add_replay_parser", "expand_files", "run_replay"]
