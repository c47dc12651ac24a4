"""The numbers of the divergence report, computed in DuckDB from `load.load_logs` tables.

`summarize` returns a JSON-ready dict (the ``--json`` document, schema
``gateway.report/v1``); the terminal and HTML renderers only format it.

Definitions (each per group = (model, comparison, primary_version, shadow_version)):

* ``requests``: deduplicated ``divergence`` records; ``diverged``: those with
  ``diverged = true``; ``divergence_rate = diverged / requests`` with a 95%
  Wilson score interval ``divergence_ci95``; ``label_flip_rate``: records
  where any output has ``label_flip = true``, over requests.
* ``errors``: ``shadow_error`` events (timeouts included), ``timeouts``: the
  subset whose ``error`` is ``DEADLINE_EXCEEDED``, ``drops``: the sum of the
  ``count`` of ``shadow_drops`` summaries (names from
  `gateway.sinks.divergence_schema`; other events are counted apart, as
  ``other_events``). Events are matched to the group of the same model and comparison, and of
  the same shadow and primary version when they carry one (the gateway
  writes ``shadow_version: null`` when the shadow could not be resolved);
  among several candidates the group with most requests wins.
* Percentiles are linear-interpolated (numpy's default) over the records that
  carry the metric; ``max`` is the exact max.
* Feature slices: ``feature_checks`` slice records by a (feature, kind)
  mismatch on either side; ``feature_values`` by the logged first-row value
  (numeric features: quantile buckets whose edges are the ``j/k`` quantiles,
  a value equal to an edge going to the upper bucket, labelled by the
  observed ``[min, max]``; other features: the most frequent values, the rest
  as ``(other)``; ``<redacted>`` and null values are skipped; a one-value
  list, the first row of a ``[batch, 1]`` feature, counts as its value). Each slice has
  ``requests``, ``diverged``, ``rate`` and ``lift = rate / divergence_rate``
  (null when the group rate is 0); slices with fewer than ``min_count``
  requests are dropped; sorted by lift, then rate, then requests, descending.
* ``worst_requests``: top records by the max over outputs of ``max_abs``,
  then of ``js_max`` (``js_mean`` when absent), nulls last.
* ``histograms``: per-record max ``max_abs`` / ``js_max`` in half-decade bins
  ``[10**(b/2), 10**((b+1)/2))``, exact zeros counted apart.
* ``noise_floor``: one entry per ``noise`` group: ``deterministic`` when no
  record diverged and every ``max_abs`` is 0 (or absent), with the per-output
  max (and p99) of each metric as the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import duckdb

from gateway.report.load import Filters, LoadStats
from gateway.sinks.divergence_schema import TIMEOUT_ERROR, Event

REPORT_SCHEMA: Final = "gateway.report/v1"
Z95: Final = 1.959963984540054
OUTPUT_METRICS: Final = (
    "max_abs",
    "max_rel",
    "js_mean",
    "js_max",
    "top1_agreement",
    "topk_overlap",
    "agreement",
)
"""Per-output metrics summarised with percentiles (when present in the log)."""
QUANTILES: Final = (0.5, 0.9, 0.99)
_COMPARISON_ORDER: Final = {"shadow": 0, "canary": 1, "noise": 2}
_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class SummaryOptions:
    """Tuning of the feature slices and lists."""

    min_count: int = 20
    top_slices: int = 15
    value_buckets: int = 5
    top_values: int = 10
    worst: int = 10


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion; None when n == 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = con.execute(sql, list(params)).fetchall()
    return rows


def _group_label(group: dict[str, Any]) -> str:
    pv = "?" if group["primary_version"] is None else group["primary_version"]
    sv = "?" if group["shadow_version"] is None else group["shadow_version"]
    return f"{group['model']} {group['comparison']} v{pv}->v{sv}"


def _quantile_fields(qs: list[float] | None, maximum: float | None) -> dict[str, float | None]:
    values = list(qs) if qs else [None] * len(QUANTILES)
    out: dict[str, float | None] = {
        f"p{round(q * 100)}": v for q, v in zip(QUANTILES, values, strict=True)
    }
    out["max"] = maximum
    return out


def _prepare(con: duckdb.DuckDBPyConnection) -> None:
    # Number the groups on the few distinct keys and store the number in ``div`` itself
    # (an UPDATE of one column; copying the table would also copy its nested columns).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE grp AS
        SELECT row_number() OVER (ORDER BY model, comparison, pv NULLS FIRST, sv NULLS FIRST)
                   AS gid, *
        FROM (SELECT DISTINCT model, comparison, pv, sv FROM div)
        """
    )
    con.execute("ALTER TABLE div ADD COLUMN IF NOT EXISTS gid BIGINT")
    con.execute(
        """
        UPDATE div SET gid = grp.gid FROM grp
        WHERE div.model = grp.model AND div.comparison = grp.comparison
          AND div.pv IS NOT DISTINCT FROM grp.pv AND div.sv IS NOT DISTINCT FROM grp.sv
        """
    )
    con.execute("CREATE OR REPLACE TEMP VIEW d AS SELECT * FROM div")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE outs AS
        SELECT rid, gid, e.key AS output, e.value.kind AS kind, e.value.diverged AS diverged,
               e.value.label_flip AS label_flip, e.value.max_abs AS max_abs,
               e.value.max_rel AS max_rel, e.value.js_mean AS js_mean,
               e.value.js_max AS js_max, e.value.top1_agreement AS top1_agreement,
               e.value.topk_overlap AS topk_overlap, e.value.agreement AS agreement
        FROM (SELECT rid, gid, unnest(map_entries(outputs)) AS e FROM d)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE reqmax AS
        SELECT rid, max(max_abs) AS ma, max(coalesce(js_max, js_mean)) AS js,
               list(output ORDER BY output) FILTER (WHERE diverged) AS dout
        FROM outs GROUP BY rid
        """
    )


def _groups(con: duckdb.DuckDBPyConnection) -> dict[int, dict[str, Any]]:
    groups: dict[int, dict[str, Any]] = {}
    for row in _rows(
        con,
        f"""
        SELECT gid, any_value(model), any_value(comparison), any_value(pv), any_value(sv),
               count(*), count(*) FILTER (WHERE diverged), count(*) FILTER (WHERE label_flip),
               count(*) FILTER (WHERE diverged AND within_noise),
               strftime(min(t), '{_TS_FORMAT}'), strftime(max(t), '{_TS_FORMAT}'),
               quantile_cont(lat_p, [0.5, 0.99]), quantile_cont(lat_s, [0.5, 0.99])
        FROM d GROUP BY gid ORDER BY gid
        """,
    ):
        (gid, model, comparison, pv, sv, n, div, flips, within, first, last, lat_p, lat_s) = row
        ci = wilson_interval(div, n)
        groups[gid] = {
            "model": model,
            "comparison": comparison,
            "primary_version": pv,
            "shadow_version": sv,
            "requests": n,
            "diverged": div,
            "divergence_rate": _rate(div, n),
            "divergence_ci95": list(ci) if ci else None,
            "label_flips": flips,
            "label_flip_rate": _rate(flips, n),
            "diverged_within_noise": within,
            "errors": 0,
            "timeouts": 0,
            "drops": 0,
            "error_kinds": {},
            "first_ts": first,
            "last_ts": last,
            "latency_ms": {
                "primary": {"p50": lat_p[0], "p99": lat_p[1]} if lat_p else None,
                "shadow": {"p50": lat_s[0], "p99": lat_s[1]} if lat_s else None,
            },
            "outputs": [],
            "feature_checks": [],
            "feature_values": [],
            "feature_mismatch_counts": [],
            "worst_requests": [],
            "histograms": {},
            "timeline": [],
        }
    return groups


def _outputs(con: duckdb.DuckDBPyConnection, groups: dict[int, dict[str, Any]]) -> None:
    metric_sql = ", ".join(
        f"quantile_cont({m}, {list(QUANTILES)}), max({m}), count({m})" for m in OUTPUT_METRICS
    )
    for row in _rows(
        con,
        f"""
        SELECT gid, output, coalesce(mode(kind) FILTER (WHERE kind <> 'schema'), 'schema'),
               count(*), count(*) FILTER (WHERE diverged), count(*) FILTER (WHERE label_flip),
               count(*) FILTER (WHERE kind = 'schema'), {metric_sql}
        FROM outs GROUP BY gid, output ORDER BY gid, output
        """,
    ):
        gid, output, kind, n, div, flips, schema = row[:7]
        metrics: dict[str, Any] = {}
        for i, name in enumerate(OUTPUT_METRICS):
            qs, maximum, count = row[7 + 3 * i : 10 + 3 * i]
            if count:
                metrics[name] = _quantile_fields(qs, maximum)
        groups[gid]["outputs"].append(
            {
                "output": output,
                "kind": kind,
                "count": n,
                "diverged": div,
                "label_flips": flips,
                "schema_mismatches": schema,
                "metrics": metrics,
            }
        )


def _events(
    con: duckdb.DuckDBPyConnection, groups: dict[int, dict[str, Any]]
) -> tuple[dict[str, int], int]:
    """Attach error/timeout/drop counts to groups; return (other events, unattributed)."""
    is_error = f"(event = '{Event.SHADOW_ERROR}')"
    is_timeout = f"(event = '{Event.SHADOW_ERROR}' AND error = '{TIMEOUT_ERROR}')"
    is_drop = f"(event = '{Event.SHADOW_DROPS}')"
    other: dict[str, int] = {}
    unattributed = 0
    for event, count in _rows(
        con,
        f"SELECT event, count(*) FROM ev WHERE NOT ({is_error} OR {is_drop}) "
        "GROUP BY event ORDER BY event",
    ):
        other[event] = count
    rows = _rows(
        con,
        f"""
        SELECT model, comparison, pv, sv,
               count(*) FILTER (WHERE {is_error}), count(*) FILTER (WHERE {is_timeout}),
               coalesce(sum(n) FILTER (WHERE {is_drop}), 0)::BIGINT
        FROM ev WHERE {is_error} OR {is_drop}
        GROUP BY ALL ORDER BY ALL
        """,
    )
    kinds: dict[tuple[Any, ...], dict[str, int]] = {}
    for model, comparison, pv, sv, kind, count in _rows(
        con,
        f"""
        SELECT model, comparison, pv, sv, coalesce(error, event), count(*)
        FROM ev WHERE {is_error} GROUP BY ALL ORDER BY ALL
        """,
    ):
        kinds.setdefault((model, comparison, pv, sv), {})[kind] = count
    next_gid = max(groups, default=0) + 1
    for model, comparison, pv, sv, errors, timeouts, drops in rows:
        if model is None:
            unattributed += errors + drops
            continue
        candidates = [
            (gid, g)
            for gid, g in groups.items()
            if g["model"] == model
            and g["comparison"] == comparison
            and (sv is None or g["shadow_version"] == sv)
            and (pv is None or g["primary_version"] == pv)
        ]
        if candidates:
            gid = max(candidates, key=lambda item: (item[1]["requests"], -item[0]))[0]
        else:
            gid = next_gid
            next_gid += 1
            groups[gid] = _empty_group(model, comparison, pv, sv)
        group = groups[gid]
        group["errors"] += errors
        group["timeouts"] += timeouts
        group["drops"] += drops
        for kind, count in kinds.get((model, comparison, pv, sv), {}).items():
            group["error_kinds"][kind] = group["error_kinds"].get(kind, 0) + count
    return other, unattributed


def _empty_group(model: str, comparison: str, pv: int | None, sv: int | None) -> dict[str, Any]:
    return {
        "model": model,
        "comparison": comparison,
        "primary_version": pv,
        "shadow_version": sv,
        "requests": 0,
        "diverged": 0,
        "divergence_rate": None,
        "divergence_ci95": None,
        "label_flips": 0,
        "label_flip_rate": None,
        "diverged_within_noise": 0,
        "errors": 0,
        "timeouts": 0,
        "drops": 0,
        "error_kinds": {},
        "first_ts": None,
        "last_ts": None,
        "latency_ms": {"primary": None, "shadow": None},
        "outputs": [],
        "feature_checks": [],
        "feature_values": [],
        "feature_mismatch_counts": [],
        "worst_requests": [],
        "histograms": {},
        "timeline": [],
    }


def _slice_entry(group: dict[str, Any], base: dict[str, Any], n: int, div: int) -> dict[str, Any]:
    rate = div / n if n else 0.0
    overall = group["divergence_rate"]
    lift = rate / overall if overall else None
    return {**base, "requests": n, "diverged": div, "rate": rate, "lift": lift}


def _rank_slices(entries: list[dict[str, Any]], options: SummaryOptions) -> list[dict[str, Any]]:
    kept = [e for e in entries if e["requests"] >= options.min_count]
    kept.sort(
        key=lambda e: (
            -(e["lift"] if e["lift"] is not None else -1.0),
            -e["rate"],
            -e["requests"],
            str(e.get("feature")),
            str(e.get("kind", e.get("bucket"))),
        )
    )
    return kept[: options.top_slices]


def _feature_checks(
    con: duckdb.DuckDBPyConnection, groups: dict[int, dict[str, Any]], options: SummaryOptions
) -> None:
    rows = _rows(
        con,
        """
        WITH fm AS (
            SELECT rid, gid, diverged, 'primary' AS side, unnest(fm_p) AS f FROM d
            UNION ALL
            SELECT rid, gid, diverged, 'shadow' AS side, unnest(fm_s) AS f FROM d
        )
        SELECT gid, f.feature, f.kind, count(DISTINCT rid),
               count(DISTINCT rid) FILTER (WHERE diverged),
               count(DISTINCT rid) FILTER (WHERE side = 'primary'),
               count(DISTINCT rid) FILTER (WHERE side = 'shadow')
        FROM fm WHERE f.feature IS NOT NULL
        GROUP BY ALL ORDER BY ALL
        """,
    )
    per_group: dict[int, list[dict[str, Any]]] = {}
    for gid, feature, kind, n, div, n_primary, n_shadow in rows:
        group = groups[gid]
        group["feature_mismatch_counts"].append(
            {"feature": feature, "kind": kind, "primary": n_primary, "shadow": n_shadow}
        )
        entry = _slice_entry(group, {"feature": feature, "kind": kind}, n, div)
        per_group.setdefault(gid, []).append(entry)
    for gid, group in groups.items():
        group["feature_mismatch_counts"].sort(
            key=lambda e: (-(e["primary"] + e["shadow"]), e["feature"], str(e["kind"]))
        )
        group["feature_checks"] = _rank_slices(per_group.get(gid, []), options)


def _format_number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _feature_values(
    con: duckdb.DuckDBPyConnection, groups: dict[int, dict[str, Any]], options: SummaryOptions
) -> None:
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE fv AS
        SELECT rid, gid, diverged, feature, jt, v,
               CASE WHEN jt = 'VARCHAR' THEN json_extract_string(v, '$') ELSE v::VARCHAR END
                   AS s
        FROM (
            SELECT rid, gid, diverged, feature, json_type(v) AS jt, v
            FROM (
                -- a one-value list (a feature of shape [batch, 1]) counts as its value
                SELECT rid, gid, diverged, e.key AS feature,
                       CASE WHEN json_type(e.value) = 'ARRAY'
                                 AND json_array_length(e.value) = 1
                            THEN json_extract(e.value, '$[0]') ELSE e.value END AS v
                FROM (SELECT rid, gid, diverged, unnest(map_entries(features)) AS e FROM d)
            )
        )
        WHERE jt IS NOT NULL AND jt <> 'NULL'
          AND NOT (jt = 'VARCHAR' AND json_extract_string(v, '$') = '<redacted>')
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE fkind AS
        SELECT gid, feature, bool_and(jt IN ('BIGINT', 'UBIGINT', 'DOUBLE')) AS numeric
        FROM fv GROUP BY gid, feature
        """
    )
    k = max(options.value_buckets, 1)
    qs = [j / k for j in range(1, k)]
    numeric_rows = (
        _rows(
            con,
            f"""
            WITH num AS (
                SELECT fv.gid, fv.feature, fv.diverged, fv.v::DOUBLE AS x
                FROM fv JOIN fkind USING (gid, feature) WHERE fkind.numeric
            ),
            edges AS (
                SELECT gid, feature, list_sort(list_distinct(quantile_cont(x, {qs}))) AS e
                FROM num GROUP BY gid, feature
            )
            SELECT gid, feature, len(list_filter(edges.e, lambda b: b <= num.x)) AS bucket,
                   min(x), max(x), count(*), count(*) FILTER (WHERE diverged)
            FROM num JOIN edges USING (gid, feature)
            GROUP BY ALL ORDER BY ALL
            """,
        )
        if qs
        else _rows(
            con,
            """
            SELECT fv.gid, fv.feature, 0, min(fv.v::DOUBLE), max(fv.v::DOUBLE), count(*),
                   count(*) FILTER (WHERE diverged)
            FROM fv JOIN fkind USING (gid, feature) WHERE fkind.numeric
            GROUP BY ALL ORDER BY ALL
            """,
        )
    )
    categorical_rows = _rows(
        con,
        f"""
        WITH cat AS (
            SELECT fv.gid, fv.feature, fv.s, count(*) AS n,
                   count(*) FILTER (WHERE diverged) AS dv
            FROM fv JOIN fkind USING (gid, feature) WHERE NOT fkind.numeric
            GROUP BY ALL
        ),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY gid, feature ORDER BY n DESC, s) AS r
            FROM cat
        )
        SELECT gid, feature, CASE WHEN r <= {int(options.top_values)} THEN s ELSE '(other)' END,
               sum(n)::BIGINT, sum(dv)::BIGINT
        FROM ranked GROUP BY ALL ORDER BY ALL
        """,
    )
    per_group: dict[int, list[dict[str, Any]]] = {}
    for gid, feature, _bucket, lo, hi, n, div in numeric_rows:
        label = f"[{_format_number(lo)}, {_format_number(hi)}]"
        base = {"feature": feature, "type": "numeric", "bucket": label, "lo": lo, "hi": hi}
        per_group.setdefault(gid, []).append(_slice_entry(groups[gid], base, n, div))
    for gid, feature, value, n, div in categorical_rows:
        base = {"feature": feature, "type": "categorical", "bucket": value, "lo": None, "hi": None}
        per_group.setdefault(gid, []).append(_slice_entry(groups[gid], base, n, div))
    for gid, group in groups.items():
        group["feature_values"] = _rank_slices(per_group.get(gid, []), options)


def _worst(
    con: duckdb.DuckDBPyConnection, groups: dict[int, dict[str, Any]], options: SummaryOptions
) -> None:
    for gid, request_id, ts, replica, ma, js, diverged, flip, dout in _rows(
        con,
        f"""
        SELECT d.gid, d.request_id, strftime(d.t, '{_TS_FORMAT}'), d.replica, r.ma, r.js,
               d.diverged, d.label_flip, r.dout
        FROM d LEFT JOIN reqmax r USING (rid)
        QUALIFY row_number() OVER (
            PARTITION BY d.gid
            ORDER BY r.ma DESC NULLS LAST, r.js DESC NULLS LAST, d.request_id, d.rid) <= ?
        ORDER BY d.gid, r.ma DESC NULLS LAST, r.js DESC NULLS LAST, d.request_id, d.rid
        """,
        [options.worst],
    ):
        groups[gid]["worst_requests"].append(
            {
                "request_id": request_id,
                "ts": ts,
                "replica": replica,
                "max_abs": ma,
                "js_max": js,
                "diverged": diverged,
                "label_flip": flip,
                "diverged_outputs": list(dout or []),
            }
        )


def _histograms(con: duckdb.DuckDBPyConnection, groups: dict[int, dict[str, Any]]) -> None:
    for column, name in (("ma", "max_abs"), ("js", "js_max")):
        for gid, bucket, count in _rows(
            con,
            f"""
            SELECT d.gid, CASE WHEN r.{column} <= 0 THEN NULL
                               ELSE floor(2 * log10(r.{column}))::BIGINT END AS b, count(*)
            FROM d JOIN reqmax r USING (rid) WHERE r.{column} IS NOT NULL
            GROUP BY ALL ORDER BY ALL
            """,
        ):
            hist = groups[gid]["histograms"].setdefault(name, {"zero": 0, "bins": []})
            if bucket is None:
                hist["zero"] += count
            else:
                hist["bins"].append(
                    {"lo": 10 ** (bucket / 2), "hi": 10 ** ((bucket + 1) / 2), "count": count}
                )


def _timeline(con: duckdb.DuckDBPyConnection, groups: dict[int, dict[str, Any]]) -> None:
    for gid, minute, n, div in _rows(
        con,
        """
        SELECT gid, strftime(date_trunc('minute', t), '%Y-%m-%dT%H:%M:00Z') AS m, count(*),
               count(*) FILTER (WHERE diverged)
        FROM d WHERE t IS NOT NULL GROUP BY ALL ORDER BY gid, m
        """,
    ):
        groups[gid]["timeline"].append(
            {"minute": minute, "requests": n, "diverged": div, "rate": div / n}
        )


def _noise_floor(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for group in groups:
        if group["comparison"] != "noise" or not group["requests"]:
            continue
        floor: dict[str, dict[str, Any]] = {}
        max_abs = 0.0
        for output in group["outputs"]:
            floor[output["output"]] = {
                name: {"max": m["max"], "p99": m["p99"]} for name, m in output["metrics"].items()
            }
            if "max_abs" in output["metrics"] and output["metrics"]["max_abs"]["max"] is not None:
                max_abs = max(max_abs, output["metrics"]["max_abs"]["max"])
        out.append(
            {
                "model": group["model"],
                "primary_version": group["primary_version"],
                "requests": group["requests"],
                "diverged": group["diverged"],
                "deterministic": group["diverged"] == 0 and max_abs == 0.0,
                "max_abs": max_abs,
                "floor": floor,
            }
        )
    return out


def summarize(
    con: duckdb.DuckDBPyConnection,
    stats: LoadStats,
    options: SummaryOptions = SummaryOptions(),
    *,
    filters: Filters | None = None,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """Compute the whole report document from the ``div``/``ev`` tables (see module doc).

    Adds a ``gid`` (group number) column to ``div`` and temp tables/views of its own.
    """
    _prepare(con)
    groups = _groups(con)
    _outputs(con, groups)
    other_events, unattributed = _events(con, groups)
    _feature_checks(con, groups, options)
    _feature_values(con, groups, options)
    _worst(con, groups, options)
    _histograms(con, groups)
    _timeline(con, groups)
    ordered = sorted(
        groups.values(),
        key=lambda g: (
            str(g["model"]),
            _COMPARISON_ORDER.get(g["comparison"], 9),
            str(g["comparison"]),
            g["primary_version"] if g["primary_version"] is not None else -1,
            g["shadow_version"] if g["shadow_version"] is not None else -1,
        ),
    )
    for group in ordered:
        group["label"] = _group_label(group)
    span = _rows(
        con, f"SELECT strftime(min(t), '{_TS_FORMAT}'), strftime(max(t), '{_TS_FORMAT}') FROM d"
    )
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": {
            **stats.to_json(),
            "other_events": other_events,
            "unattributed_events": unattributed,
            "filters": (filters or Filters()).to_json(),
            "warnings": list(warnings),
        },
        "options": {
            "min_count": options.min_count,
            "top_slices": options.top_slices,
            "value_buckets": options.value_buckets,
            "top_values": options.top_values,
            "worst": options.worst,
        },
        "time_range": {"first": span[0][0], "last": span[0][1]} if span else None,
        "groups": ordered,
        "noise_floor": _noise_floor(ordered),
    }
