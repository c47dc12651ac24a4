"""Render the report document (`summary.summarize`) as rich tables on a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def fmt(value: Any, digits: int = 4) -> str:
    """Short human form: None -> "-", floats to `digits` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.{digits}g}"
    return str(value)


def pct(value: float | None) -> str:
    """A rate as a percentage with 2 decimals, "-" for None."""
    return "-" if value is None else f"{100 * value:.2f}%"


def ci(interval: list[float] | None) -> str:
    """A Wilson interval as "[lo%, hi%]"."""
    if not interval:
        return "-"
    return f"[{100 * interval[0]:.2f}%, {100 * interval[1]:.2f}%]"


def _summary_table(report: dict[str, Any]) -> Table:
    table = Table(title="Divergence by model / comparison / versions", title_justify="left")
    for name in ("group", "requests", "diverged", "rate", "95% CI", "label flips", "errors"):
        table.add_column(name, justify="left" if name == "group" else "right")
    table.add_column("timeouts", justify="right")
    table.add_column("drops", justify="right")
    for g in report["groups"]:
        rate = g["divergence_rate"]
        style = "red" if rate and rate > 0.01 else None
        table.add_row(
            g["label"],
            str(g["requests"]),
            str(g["diverged"]),
            Text(pct(rate), style=style or ""),
            ci(g["divergence_ci95"]),
            pct(g["label_flip_rate"]),
            str(g["errors"]),
            str(g["timeouts"]),
            str(g["drops"]),
        )
    return table


def _outputs_table(group: dict[str, Any]) -> Table:
    table = Table(title=f"{group['label']}: per-output metrics", title_justify="left")
    for name in ("output", "kind", "diverged", "metric", "p50", "p90", "p99", "max"):
        table.add_column(name, justify="left" if name in ("output", "kind", "metric") else "right")
    for output in group["outputs"]:
        first = True
        for metric, stats in output["metrics"].items():
            table.add_row(
                output["output"] if first else "",
                output["kind"] if first else "",
                f"{output['diverged']}/{output['count']}" if first else "",
                metric,
                fmt(stats["p50"]),
                fmt(stats["p90"]),
                fmt(stats["p99"]),
                fmt(stats["max"]),
            )
            first = False
        if first:
            table.add_row(
                output["output"], output["kind"], f"{output['diverged']}/{output['count']}"
            )
    return table


def _slices_table(group: dict[str, Any]) -> Table | None:
    if not group["diverged"]:
        return None  # nothing to explain
    rows: list[tuple[str, str, dict[str, Any]]] = []
    rows += [(s["feature"], f"check: {s['kind']}", s) for s in group["feature_checks"]]
    rows += [(s["feature"], f"value: {s['bucket']}", s) for s in group["feature_values"]]
    if not rows:
        return None
    rows.sort(key=lambda r: -(r[2]["lift"] if r[2]["lift"] is not None else -1.0))
    table = Table(title=f"{group['label']}: top diverging features", title_justify="left")
    for name in ("feature", "slice", "requests", "diverged", "rate", "lift"):
        table.add_column(name, justify="left" if name in ("feature", "slice") else "right")
    for feature, label, s in rows:
        table.add_row(
            feature,
            label,
            str(s["requests"]),
            str(s["diverged"]),
            pct(s["rate"]),
            "-" if s["lift"] is None else f"{s['lift']:.2f}x",
        )
    return table


def _worst_table(group: dict[str, Any]) -> Table | None:
    if not group["worst_requests"]:
        return None
    table = Table(title=f"{group['label']}: worst requests", title_justify="left")
    for name in ("request_id", "ts", "replica", "max_abs", "js_max", "diverged outputs"):
        table.add_column(name, justify="right" if name in ("max_abs", "js_max") else "left")
    for w in group["worst_requests"]:
        table.add_row(
            str(w["request_id"]),
            str(w["ts"] or "-"),
            str(w["replica"] or "-"),
            fmt(w["max_abs"]),
            fmt(w["js_max"]),
            ", ".join(w["diverged_outputs"]) or "-",
        )
    return table


def render(report: dict[str, Any], console: Console) -> None:
    """Print the whole report: inputs line, summary, per-group tables, noise floor, gates."""
    inputs = report["inputs"]
    console.print(
        f"[bold]Divergence report[/bold]  files={len(inputs['files'])} "
        f"lines={inputs['lines']} records={inputs['records']} events={inputs['events']} "
        f"invalid_lines={inputs['invalid_lines']} duplicates={inputs['duplicates']} "
        f"filtered_out={inputs['filtered_out']}"
    )
    span = report.get("time_range") or {}
    if span.get("first"):
        console.print(f"time range: {span['first']} .. {span['last']}")
    if inputs["other_events"]:
        others = ", ".join(f"{k}={v}" for k, v in inputs["other_events"].items())
        console.print(f"other events: {others}")
    console.print(_summary_table(report))
    for group in report["groups"]:
        if group["outputs"]:
            console.print(_outputs_table(group))
        slices = _slices_table(group)
        if slices is not None:
            console.print(slices)
        worst = _worst_table(group)
        if worst is not None and group["comparison"] != "noise":
            console.print(worst)
    for floor in report["noise_floor"]:
        if floor["deterministic"]:
            console.print(
                f"[green]noise floor[/green] {floor['model']} v{floor['primary_version']}: "
                f"deterministic over {floor['requests']} replayed requests (max_abs = 0)"
            )
        else:
            parts = [
                f"{out}.{metric} max={fmt(stats['max'])}"
                for out, metrics in floor["floor"].items()
                for metric, stats in metrics.items()
                if metric in ("max_abs", "js_max", "max_rel")
            ]
            console.print(
                f"[yellow]noise floor[/yellow] {floor['model']} v{floor['primary_version']}: "
                f"NOT deterministic ({floor['diverged']}/{floor['requests']} diverged); "
                + "; ".join(parts)
            )
    gates = report.get("gates")
    if gates and gates["results"]:
        for result in gates["results"]:
            status = "[red]FAIL[/red]" if result["failed"] else "[green]ok[/green]"
            console.print(
                f"gate {status} {result['group']}: {result['metric']} = {fmt(result['value'])} "
                f"{result['op']} {fmt(result['threshold'])}"
            )
