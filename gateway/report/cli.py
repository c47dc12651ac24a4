"""``gateway report LOG...``: summarise divergence logs for review and CI gating.

Exit codes: 0 report written and no gate failed; 1 at least one
``--fail-if`` gate failed (each failure is printed to stderr as
``gate failed: GROUP: EXPR (value V)``); 2 bad arguments (bad gate
expression or timestamp), no input file found, nothing readable in them, or
no record left after the filters.

Outputs: rich tables on stdout by default; ``--json`` prints the report
document instead (structure documented in `gateway.report.summary` and the
README of this package: ``schema, generated_at, inputs, options, time_range,
groups[], noise_floor[], gates``); ``--html FILE`` additionally writes a
self-contained HTML page.

Also runnable as ``python -m gateway.report.cli LOG...``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.report.gates import Gate, evaluate, parse_gate
from gateway.report.load import Filters, connect, expand_inputs, load_logs
from gateway.report.summary import SummaryOptions, summarize

_DESCRIPTION = (__doc__ or "").split("\n\n")[0].replace("``", "")
EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="divergence log files, directories or globs (rotated .1 and .gz files are fine)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--html", metavar="FILE", type=Path, help="write a self-contained page")
    parser.add_argument(
        "--fail-if",
        metavar="EXPR",
        action="append",
        default=[],
        dest="fail_if",
        help="exit 1 if EXPR holds for a (model, shadow) group, e.g. divergence_rate>0.01, "
        "label_flip_rate>=0.005, p99.max_abs>0.1, errors>0 (repeatable)",
    )
    parser.add_argument(
        "--model", action="append", default=[], metavar="M", help="only this model (repeatable)"
    )
    parser.add_argument("--since", metavar="TS", help="only records at or after TS (ISO 8601)")
    parser.add_argument("--until", metavar="TS", help="only records before TS (ISO 8601)")
    parser.add_argument(
        "--protocol",
        action="append",
        default=[],
        metavar="P",
        help="only records of this client protocol, e.g. tfs_grpc (repeatable; records "
        "without a protocol field are left out)",
    )
    parser.add_argument(
        "--min-count",
        type=_positive_int,
        default=SummaryOptions.min_count,
        help="smallest feature slice shown (default %(default)s requests)",
    )
    parser.add_argument(
        "--buckets",
        type=_positive_int,
        default=SummaryOptions.value_buckets,
        help="quantile buckets per numeric feature (default %(default)s)",
    )
    parser.add_argument(
        "--top",
        type=_positive_int,
        default=SummaryOptions.top_slices,
        help="feature slices shown per list (default %(default)s)",
    )
    parser.add_argument(
        "--worst",
        type=_positive_int,
        default=SummaryOptions.worst,
        help="worst requests shown per group (default %(default)s)",
    )


def add_report_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``report`` subcommand; its handler is ``args.func = run_report``."""
    parser = subparsers.add_parser(
        "report",
        help="summarise shadow/canary divergence logs",
        description=_DESCRIPTION,
    )
    _configure(parser)
    parser.set_defaults(func=run_report)


def _parse_time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected an ISO 8601 timestamp") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON has no NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _err(message: str) -> None:
    print(f"gateway report: {message}", file=sys.stderr)


def build_report(
    args: argparse.Namespace, gates: Sequence[Gate] = ()
) -> tuple[dict[str, Any] | None, int]:
    """Load and summarise per `args`; return (report, EXIT_OK) or (None, EXIT_USAGE)."""
    try:
        filters = Filters(
            models=tuple(args.model or ()),
            since=_parse_time(args.since, "--since"),
            until=_parse_time(args.until, "--until"),
            protocols=tuple(getattr(args, "protocol", None) or ()),
        )
    except ValueError as exc:
        _err(str(exc))
        return None, EXIT_USAGE
    paths, warnings = expand_inputs(args.logs)
    for warning in warnings:
        _err(warning)
    if not paths:
        _err("no input files")
        return None, EXIT_USAGE
    con = connect()
    try:
        stats, load_warnings = load_logs(con, paths, filters)
        for warning in load_warnings:
            _err(warning)
        if not stats.files:
            _err("no readable input")
            return None, EXIT_USAGE
        if stats.lines - stats.invalid_lines == 0:
            _err(f"no valid records in {len(stats.files)} file(s)")
            return None, EXIT_USAGE
        if stats.records == 0 and stats.events == 0:
            _err("no records match the filters")
            return None, EXIT_USAGE
        options = SummaryOptions(
            min_count=args.min_count,
            top_slices=args.top,
            value_buckets=args.buckets,
            worst=args.worst,
        )
        report = _finite(
            summarize(con, stats, options, filters=filters, warnings=warnings + load_warnings)
        )
    finally:
        con.close()
    results = evaluate(gates, report["groups"])
    report["gates"] = {
        "expressions": [g.expr for g in gates],
        "failed": any(r["failed"] for r in results),
        "results": results,
    }
    return report, EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    """Run ``gateway report`` for parsed `args`; return the exit code (0, 1 or 2)."""
    try:
        gates = [parse_gate(text) for text in args.fail_if or ()]
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    report, code = build_report(args, gates)
    if report is None:
        return code
    if args.html is not None:
        from gateway.report.html import render_html

        try:
            args.html.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            _err(f"--html {args.html}: {exc.strerror or exc}")
            return EXIT_USAGE
    if args.json:
        json.dump(report, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        from gateway.report.terminal import render

        console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)
        render(report, console)
        if args.html is not None:
            console.print(f"HTML report written to {args.html}")
    failed = [r for r in report["gates"]["results"] if r["failed"]]
    for result in failed:
        value = "null" if result["value"] is None else f"{result['value']:.6g}"
        print(f"gate failed: {result['group']}: {result['expr']} (value {value})", file=sys.stderr)
    return EXIT_GATE_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m gateway.report.cli``)."""
    parser = argparse.ArgumentParser(prog="gateway report", description=_DESCRIPTION)
    _configure(parser)
    return run_report(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
