"""Render the report document as one self-contained HTML page.

Contract: the page references no external URL (no CDN, fonts, images or
scripts): CSS is inline, charts are inline SVG generated here, and one small
inline script makes tables sortable and then sets
``<span id="js-status">ok</span>`` with ``data-groups``, ``data-tables``,
``data-charts`` (``svg.chart`` elements) and ``data-charts-drawn`` (those laid
out with a non-zero size and at least one mark) attributes (tests use it to
prove the script ran without errors and the plots are visible). Every string
taken from the logs is HTML-escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from typing import Any, Final

from gateway.report.terminal import ci, fmt, pct

_CSS: Final = """
:root { --fg:#1d2430; --muted:#6b7485; --line:#d9dee7; --bg:#f6f7fa; --card:#fff;
        --accent:#3763d9; --bad:#c8372d; --warn:#d98a1c; --ok:#2e8b57; --shadow:#8a5cd6; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; padding: 24px 32px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid var(--line);
     padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: var(--muted); text-transform: uppercase;
     letter-spacing: .04em; }
.meta { color: var(--muted); margin-bottom: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 14px 18px; margin: 12px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 12px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: right; }
th { background: #eef1f6; cursor: pointer; user-select: none; white-space: nowrap; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
td.l, th.l { text-align: left; }
.bad { color: var(--bad); font-weight: 600; } .ok { color: var(--ok); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
.pill { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #eef1f6;
        margin-right: 6px; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
svg.chart { display: block; max-width: 100%; height: auto; }
.empty { color: var(--muted); font-style: italic; }
footer { color: var(--muted); margin-top: 32px; font-size: 12px; }
"""

_JS: Final = """
(function () {
  "use strict";
  function cellValue(td) {
    var raw = td.getAttribute("data-v");
    var text = raw !== null ? raw : td.textContent.trim();
    var num = parseFloat(text.replace("%", ""));
    return isNaN(num) ? text.toLowerCase() : num;
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var asc = !th.classList.contains("sorted-asc");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) {
      c.classList.remove("sorted-asc", "sorted-desc");
    });
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
      if (x === y) { return 0; }
      var less = (typeof x === typeof y) ? x < y : String(x) < String(y);
      return (less ? -1 : 1) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener("click", function () { sortTable(table, i, th); });
    });
  });
  var charts = document.querySelectorAll("svg.chart");
  var drawn = 0;
  Array.prototype.forEach.call(charts, function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width > 0 && box.height > 0 && svg.querySelector("rect, polyline, circle")) {
      drawn += 1;
    }
  });
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var status = document.getElementById("js-status");
  status.textContent = "ok";
  status.setAttribute("data-groups", String(data.groups));
  status.setAttribute("data-tables", String(tables.length));
  status.setAttribute("data-charts", String(charts.length));
  status.setAttribute("data-charts-drawn", String(drawn));
})();
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    left: int = 1,
    sort_values: Sequence[Sequence[Any]] | None = None,
) -> str:
    """A sortable table; the first `left` columns are left-aligned text."""
    if not rows:
        return '<p class="empty">none</p>'
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="l"' if i < left else ""
            data_v = ""
            if sort_values is not None and sort_values[r][i] is not None:
                data_v = f' data-v="{_e(sort_values[r][i])}"'
            html_cell = cell if isinstance(cell, _Raw) else _e(cell)
            cells.append(f"<td{cls}{data_v}>{html_cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


class _Raw(str):
    """Already-escaped HTML."""

    __slots__ = ()


def histogram_svg(hist: dict[str, Any] | None, title: str, width: int = 520) -> str:
    """Bars of a half-decade histogram ({"zero": n, "bins": [{lo, hi, count}]})."""
    if not hist or (not hist["bins"] and not hist["zero"]):
        return f'<p class="empty">no {_e(title)} values</p>'
    bars: list[tuple[str, int, str]] = []
    if hist["zero"]:
        bars.append(("0", hist["zero"], "exactly 0"))
    bins = sorted(hist["bins"], key=lambda b: b["lo"])
    if bins:
        # Fill gaps so the x axis stays a log scale.
        lo_b = round(2 * math.log10(bins[0]["lo"]))
        hi_b = round(2 * math.log10(bins[-1]["lo"]))
        by_b = {round(2 * math.log10(b["lo"])): b["count"] for b in bins}
        stride = max(1, math.ceil((hi_b - lo_b + 1) / 2 / 8))  # at most ~8 decade labels
        for b in range(lo_b, hi_b + 1):
            lo, hi = 10 ** (b / 2), 10 ** ((b + 1) / 2)
            label = f"1e{b // 2}" if b % 2 == 0 and (b // 2) % stride == 0 else ""
            bars.append((label, by_b.get(b, 0), f"[{lo:.3g}, {hi:.3g})"))
    height, pad_l, pad_b, pad_t = 180, 44, 28, 18
    plot_w = width - pad_l - 10
    plot_h = height - pad_b - pad_t
    top = max(c for _, c, _ in bars) or 1
    bw = plot_w / len(bars)
    parts = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="{pad_l}" y="12">{_e(title)} (count per half-decade bin, log x)</text>',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 10}" y2="{pad_t + plot_h}" '
        'stroke="#9aa3b2"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{top}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">0</text>',
    ]
    for i, (label, count, tip) in enumerate(bars):
        h = plot_h * count / top
        x = pad_l + i * bw
        color = "#9aa3b2" if tip == "exactly 0" else "#3763d9"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{pad_t + plot_h - h:.1f}" width="{max(bw - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{_e(tip)}: {count}</title></rect>'
        )
        if label:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{height - 10}" text-anchor="middle">'
                f"{_e(label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(points: Sequence[dict[str, Any]], width: int = 1100) -> str:
    """Divergence rate per minute (line) over request volume (grey bars)."""
    if not points:
        return '<p class="empty">no timestamps</p>'
    height, pad_l, pad_b, pad_t, pad_r = 200, 52, 30, 20, 52
    plot_w = width - pad_l - pad_r
    plot_h = height - pad_b - pad_t
    n = len(points)
    top_rate = max(p["rate"] for p in points) or 1.0
    top_req = max(p["requests"] for p in points) or 1
    step = plot_w / max(n, 1)
    parts = [
        f'<svg class="chart" role="img" aria-label="divergence rate over time" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="{pad_l}" y="12">divergence rate per minute (line, left axis) and requests '
        "(bars, right axis)</text>",
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" '
        'stroke="#9aa3b2"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{100 * top_rate:.3g}%</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">0%</text>',
        f'<text x="{pad_l + plot_w + 4}" y="{pad_t + 8}">{top_req}</text>',
    ]
    for i, p in enumerate(points):
        h = plot_h * p["requests"] / top_req
        parts.append(
            f'<rect x="{pad_l + i * step:.2f}" y="{pad_t + plot_h - h:.2f}" '
            f'width="{max(step - 0.5, 0.5):.2f}" height="{h:.2f}" fill="#dfe4ee">'
            f"<title>{_e(p['minute'])}: {p['requests']} requests, {p['diverged']} diverged"
            "</title></rect>"
        )
    coords = " ".join(
        f"{pad_l + (i + 0.5) * step:.2f},{pad_t + plot_h - plot_h * p['rate'] / top_rate:.2f}"
        for i, p in enumerate(points)
    )
    if n == 1:
        x, y = coords.split(",")
        parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="#c8372d"/>')
    else:
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="#c8372d" stroke-width="1.5"/>'
        )
    for i in sorted({0, n // 2, n - 1}):
        label = points[i]["minute"].replace("T", " ").removesuffix(":00Z")
        anchor = "start" if i == 0 else ("end" if i == n - 1 else "middle")
        parts.append(
            f'<text x="{pad_l + (i + 0.5) * step:.1f}" y="{height - 10}" '
            f'text-anchor="{anchor}">{_e(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def mismatch_svg(counts: Sequence[dict[str, Any]], width: int = 520, limit: int = 15) -> str:
    """Horizontal bars: requests with each (feature, kind) mismatch, primary vs shadow side."""
    items = list(counts)[:limit]
    if not items:
        return '<p class="empty">no feature mismatches logged</p>'
    row_h, pad_l, pad_t = 20, 190, 22
    height = pad_t + row_h * len(items) + 10
    top = max(max(c["primary"], c["shadow"]) for c in items) or 1
    plot_w = width - pad_l - 60
    parts = [
        f'<svg class="chart" role="img" aria-label="feature mismatches" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        '<text x="4" y="12">requests with a feature check mismatch: '
        '<tspan fill="#3763d9">primary</tspan> / <tspan fill="#8a5cd6">shadow</tspan></text>',
    ]
    for i, c in enumerate(items):
        y = pad_t + i * row_h
        label = f"{c['feature']} {c['kind']}"
        if len(label) > 30:
            label = label[:29] + "\u2026"
        parts.append(f'<text x="{pad_l - 6}" y="{y + 13}" text-anchor="end">{_e(label)}</text>')
        for j, (side, color) in enumerate((("primary", "#3763d9"), ("shadow", "#8a5cd6"))):
            w = plot_w * c[side] / top
            parts.append(
                f'<rect x="{pad_l}" y="{y + 2 + j * 8}" width="{w:.1f}" height="7" '
                f'fill="{color}"><title>{_e(c["feature"])} {_e(c["kind"])} ({side}): '
                f"{c[side]}</title></rect>"
            )
        parts.append(
            f'<text x="{pad_l + plot_w * max(c["primary"], c["shadow"]) / top + 4:.1f}" '
            f'y="{y + 13}">{c["primary"]}/{c["shadow"]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _lift(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _group_section(group: dict[str, Any]) -> str:
    label = group["label"]
    rate = group["divergence_rate"]
    cls = "bad" if rate is not None and rate > 0.01 else "ok"
    out = [f'<section class="group"><h2>{_e(label)}</h2>']
    out.append(
        '<div class="meta">'
        f'<span class="pill">requests {group["requests"]}</span>'
        f'<span class="pill">diverged <b class="{cls}">{_e(pct(rate))}</b> '
        f"95% CI {_e(ci(group['divergence_ci95']))}</span>"
        f'<span class="pill">label flips {_e(pct(group["label_flip_rate"]))}</span>'
        f'<span class="pill">errors {group["errors"]} (timeouts {group["timeouts"]})</span>'
        f'<span class="pill">drops {group["drops"]}</span>'
        f"<span>{_e(group['first_ts'] or '')} .. {_e(group['last_ts'] or '')}</span></div>"
    )
    rows = []
    for output in group["outputs"]:
        for metric, stats in output["metrics"].items():
            rows.append(
                [
                    output["output"],
                    output["kind"],
                    metric,
                    f"{output['diverged']}/{output['count']}",
                    fmt(stats["p50"]),
                    fmt(stats["p90"]),
                    fmt(stats["p99"]),
                    fmt(stats["max"]),
                ]
            )
    out.append('<div class="card"><h3>Per-output metrics</h3>')
    out.append(
        _table(["output", "kind", "metric", "diverged", "p50", "p90", "p99", "max"], rows, left=3)
    )
    out.append("</div>")
    hists = group["histograms"]
    out.append('<div class="grid"><div class="card"><h3>Divergence histogram</h3>')
    out.append(histogram_svg(hists.get("max_abs"), "max_abs"))
    out.append(histogram_svg(hists.get("js_max"), "js_max"))
    out.append('</div><div class="card"><h3>Feature skew / mismatch counts</h3>')
    out.append(mismatch_svg(group["feature_mismatch_counts"]))
    out.append("</div></div>")
    out.append('<div class="card"><h3>Divergence rate over time</h3>')
    out.append(timeline_svg(group["timeline"]))
    out.append("</div>")
    slices = [(s, f"check: {s['kind']}") for s in group["feature_checks"]]
    slices += [(s, f"value: {s['bucket']}") for s in group["feature_values"]]
    # One list, as on the terminal: highest lift first (stable, so ties keep summary order).
    slices.sort(key=lambda item: -(item[0]["lift"] if item[0]["lift"] is not None else -1.0))
    slice_rows = [
        [s["feature"], label, s["requests"], s["diverged"], pct(s["rate"]), _lift(s["lift"])]
        for s, label in slices
    ]
    sort_rows = [[None, None, None, None, s["rate"], s["lift"]] for s, _ in slices]
    out.append('<div class="card"><h3>Top diverging features (sorted by lift)</h3>')
    if group["diverged"]:
        out.append(
            _table(
                ["feature", "slice", "requests", "diverged", "rate", "lift"],
                slice_rows,
                left=2,
                sort_values=sort_rows,
            )
        )
    else:
        out.append('<p class="empty">no diverged requests</p>')
    out.append("</div>")
    if group["comparison"] != "noise":
        worst = [
            [
                w["request_id"],
                w["ts"] or "-",
                w["replica"] or "-",
                fmt(w["max_abs"]),
                fmt(w["js_max"]),
                ", ".join(w["diverged_outputs"]) or "-",
            ]
            for w in group["worst_requests"]
        ]
        out.append('<div class="card"><h3>Worst requests</h3>')
        out.append(
            _table(
                ["request_id", "ts", "replica", "max_abs", "js_max", "diverged outputs"],
                worst,
                left=3,
            )
        )
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    """The complete HTML document for `report` (a `summarize` result, maybe with gates)."""
    inputs = report["inputs"]
    span = report.get("time_range") or {}
    summary_rows = []
    sort_rows = []
    for g in report["groups"]:
        rate = g["divergence_rate"]
        cls = "bad" if rate is not None and rate > 0.01 else "ok"
        summary_rows.append(
            [
                g["model"],
                g["comparison"],
                f"v{g['primary_version']} \u2192 v{g['shadow_version']}",
                g["requests"],
                g["diverged"],
                _Raw(f'<span class="{cls}">{_e(pct(rate))}</span>'),
                ci(g["divergence_ci95"]),
                pct(g["label_flip_rate"]),
                g["errors"],
                g["timeouts"],
                g["drops"],
            ]
        )
        sort_rows.append([None] * 5 + [rate, None, g["label_flip_rate"]] + [None] * 3)
    noise = []
    for floor in report["noise_floor"]:
        if floor["deterministic"]:
            noise.append(
                f'<li><span class="ok">deterministic</span> {_e(floor["model"])} '
                f"v{_e(floor['primary_version'])}: {floor['requests']} replayed requests, "
                "max_abs = 0</li>"
            )
        else:
            parts = ", ".join(
                f"{_e(o)}.{_e(m)} \u2264 {_e(fmt(s['max']))}"
                for o, ms in floor["floor"].items()
                for m, s in ms.items()
                if m in ("max_abs", "js_max", "max_rel")
            )
            noise.append(
                f'<li><span class="warn">not deterministic</span> {_e(floor["model"])} '
                f"v{_e(floor['primary_version'])}: {floor['diverged']}/{floor['requests']} "
                f"replays diverged; floor {parts}</li>"
            )
    gates_html = ""
    gates = report.get("gates")
    if gates and gates["results"]:
        items = "".join(
            f'<li><span class="{"bad" if r["failed"] else "ok"}">'
            f"{'FAIL' if r['failed'] else 'ok'}</span> {_e(r['group'])}: "
            f"{_e(r['expr'])} (value {_e(fmt(r['value']))})</li>"
            for r in gates["results"]
        )
        gates_html = f'<div class="card"><h3>Gates (--fail-if)</h3><ul>{items}</ul></div>'
    others = ", ".join(f"{_e(k)}={v}" for k, v in inputs["other_events"].items())
    warnings = "".join(f"<li>{_e(w)}</li>" for w in inputs.get("warnings", []))
    data = json.dumps({"groups": len(report["groups"])}).replace("</", "<\\/")
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Shadow divergence report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Shadow divergence report</h1>",
        f'<div class="meta">generated {_e(report["generated_at"])} &middot; '
        f"{len(inputs['files'])} file(s), {inputs['lines']} lines, {inputs['records']} records, "
        f"{inputs['events']} other events, {inputs['invalid_lines']} invalid lines skipped, "
        f"{inputs['duplicates']} duplicates &middot; "
        f"{_e(span.get('first') or '')} .. {_e(span.get('last') or '')} &middot; "
        'script <span id="js-status">not run</span></div>',
    ]
    if others:
        body.append(f'<div class="meta">other events: {others}</div>')
    if warnings:
        body.append(f'<div class="card warn"><ul>{warnings}</ul></div>')
    body.append('<div class="card"><h3>Summary</h3>')
    body.append(
        _table(
            [
                "model",
                "comparison",
                "versions",
                "requests",
                "diverged",
                "rate",
                "95% CI",
                "label flips",
                "errors",
                "timeouts",
                "drops",
            ],
            summary_rows,
            left=3,
            sort_values=sort_rows,
        )
    )
    body.append("</div>")
    if noise:
        body.append(f'<div class="card"><h3>Noise floor</h3><ul>{"".join(noise)}</ul></div>')
    body.append(gates_html)
    body.extend(_group_section(g) for g in report["groups"])
    body.append(
        f"<footer>gateway report &middot; schema {_e(report['schema'])}</footer>"
        f'<script type="application/json" id="report-data">{data}</script>'
        f"<script>{_JS}</script></body></html>"
    )
    return "\n".join(body)
