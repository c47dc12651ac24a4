"""Read divergence logs (schema ``gateway.divergence/v1``) into DuckDB tables.

Event and field names come from `gateway.sinks.divergence_schema`, the module
the writer builds its records from.

Contract
--------
* Inputs are files, directories (``DIR/*.jsonl*``) or shell-style globs;
  rotated (``divergence.jsonl.1``) and gzip'd (``.gz``) files are read
  transparently; the same file named twice is read once.
* Lines are parsed by DuckDB's ``read_ndjson`` with explicit columns and
  ``ignore_errors``: a line that is not valid JSON, not an object, has a
  declared field of the wrong type, or has no ``event`` is skipped and counted
  in `LoadStats.invalid_lines`. Unknown fields are ignored.
* After `load_logs` the connection holds two temp tables:

  ``div``: one row per ``divergence`` event (after filters and dedup) with
  columns ``rid, model, comparison, pv, sv, t (TIMESTAMPTZ, UTC), request_id,
  replica, diverged, label_flip, within_noise, lat_p, lat_s, outputs,
  fm_p, fm_s, features, filename``. ``comparison`` defaults to ``shadow``;
  ``diverged`` falls back to "any output diverged" when absent.

  ``ev``: one row per other event (``shadow_error``, ``shadow_drops``, and
  events the schema does not know, which the summary lists apart) with columns
  ``event, model, comparison, pv, sv, error, n, t``; ``n`` is the record's
  ``count`` (how many requests a ``shadow_drops`` summary stands for), 1 when
  absent.

* Records sharing ``(model, request_id, shadow_version, comparison)`` (and
  ``event``) are duplicates (e.g. the same request in two replicas' files):
  the earliest is kept, the rest counted in `LoadStats.duplicates`. Records
  without a request_id are never deduplicated.
* ``--since``/``--until`` keep records with ``since <= ts < until``; records
  whose ts cannot be parsed are dropped when either bound is given.
* ``--protocol`` keeps records whose ``protocol`` is one of those given;
  records without one (``shadow_drops`` summaries, and every record of a
  gateway that does not fill it) are then left out.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import duckdb

from gateway.sinks.divergence_schema import DEFAULT_COMPARISON, Event, Field

_OUTPUT_STRUCT: Final = (
    "STRUCT(kind VARCHAR, diverged BOOLEAN, label_flip BOOLEAN, top1_agreement DOUBLE, "
    "topk_overlap DOUBLE, max_abs DOUBLE, max_rel DOUBLE, js_mean DOUBLE, js_max DOUBLE, "
    "agreement DOUBLE, within BOOLEAN, message VARCHAR)"
)
_MISMATCH_LIST: Final = "STRUCT(feature VARCHAR, kind VARCHAR, count BIGINT)[]"

COLUMNS: Final[dict[str, str]] = {
    Field.SCHEMA: "VARCHAR",
    Field.TS: "VARCHAR",
    Field.EVENT: "VARCHAR",
    Field.REQUEST_ID: "VARCHAR",
    Field.REPLICA: "VARCHAR",
    Field.MODEL: "VARCHAR",
    Field.COMPARISON: "VARCHAR",
    Field.PRIMARY_VERSION: "BIGINT",
    Field.SHADOW_VERSION: "BIGINT",
    Field.ROWS: "BIGINT",
    Field.LATENCY_MS: 'STRUCT("primary" DOUBLE, shadow DOUBLE)',
    Field.OUTPUTS: f"MAP(VARCHAR, {_OUTPUT_STRUCT})",
    Field.DIVERGED: "BOOLEAN",
    Field.WITHIN_NOISE: "BOOLEAN",
    Field.FEATURE_MISMATCHES: f'STRUCT("primary" {_MISMATCH_LIST}, shadow {_MISMATCH_LIST})',
    Field.FEATURES: "MAP(VARCHAR, JSON)",
    Field.PROTOCOL: "VARCHAR",
    Field.ERROR: "VARCHAR",
    Field.COUNT: "BIGINT",
}
"""The fields the report reads, with their DuckDB types (everything else is ignored).

Keys are `Field` names; the SQL below refers to these columns by the same names."""


def _sql_str(value: str) -> str:
    """`value` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


_DIVERGENCE: Final = _sql_str(Event.DIVERGENCE)
"""The ``divergence`` event name as a SQL literal."""


@dataclass(frozen=True)
class Filters:
    """Record filters: models and protocols (empty = all) and a time window [since, until)."""

    models: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    protocols: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (ISO timestamps)."""
        return {
            "models": list(self.models),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "protocols": list(self.protocols),
        }


@dataclass
class LoadStats:
    """What was read: files, line counts and what was skipped."""

    files: list[str] = field(default_factory=list)
    unreadable_files: list[str] = field(default_factory=list)
    lines: int = 0
    invalid_lines: int = 0
    incomplete_records: int = 0
    duplicates: int = 0
    filtered_out: int = 0
    records: int = 0
    events: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "files": self.files,
            "unreadable_files": self.unreadable_files,
            "lines": self.lines,
            "invalid_lines": self.invalid_lines,
            "incomplete_records": self.incomplete_records,
            "duplicates": self.duplicates,
            "filtered_out": self.filtered_out,
            "records": self.records,
            "events": self.events,
        }


def expand_inputs(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand files, directories and globs into existing files; return (files, warnings).

    Order is the order of the arguments, sorted within one glob; a file
    reached twice is listed once. Each pattern matching nothing gives a warning.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    warnings: list[str] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = sorted(str(p) for p in path.glob("*.jsonl*") if p.is_file())
        elif path.is_file():
            matches = [str(path)]
        else:
            matches = sorted(
                m
                for m in glob.glob(os.path.expanduser(pattern), recursive=True)
                if Path(m).is_file()
            )
        if not matches:
            warnings.append(f"{pattern}: no such file")
        for match in matches:
            resolved = Path(match).resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(Path(match))
    return found, warnings


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection set to UTC and all cores."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {max(os.cpu_count() or 1, 1)}")
    return con


_DERIVED: Final = f"""
    TRY_CAST(ts AS TIMESTAMPTZ) AS t,
    coalesce(comparison, {_sql_str(DEFAULT_COMPARISON)}) AS comparison_,
    coalesce(diverged, list_bool_or(list_transform(map_values(outputs), lambda o: o.diverged)))
        AS diverged_
"""


def _create_raw_from(con: duckdb.DuckDBPyConnection, select: str) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE raw AS SELECT *, {_DERIVED} FROM ({select})")


def _read_sql(paths: Sequence[str]) -> str:
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    return (
        f"SELECT * FROM read_ndjson({files}, columns = {columns}, ignore_errors = true, "
        "filename = true, compression = 'auto_detect')"
    )


def _create_empty_raw(con: duckdb.DuckDBPyConnection) -> None:
    columns = ", ".join(f'NULL::{t} AS "{k}"' for k, t in COLUMNS.items())
    _create_raw_from(con, f"SELECT {columns}, NULL::VARCHAR AS filename LIMIT 0")


def _create_raw(
    con: duckdb.DuckDBPyConnection, paths: Sequence[Path], stats: LoadStats
) -> list[str]:
    """Create table ``raw`` from all readable files; return per-file warnings."""
    names = [str(p) for p in paths]
    try:
        _create_raw_from(con, _read_sql(names))
        stats.files = names
        return []
    except duckdb.Error:
        pass
    # Find the culprit(s) one file at a time and read the rest.
    warnings: list[str] = []
    good: list[str] = []
    for name in names:
        try:
            con.execute(f"SELECT count(*) FROM ({_read_sql([name])})").fetchone()
            good.append(name)
        except duckdb.Error as exc:
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            warnings.append(f"{name}: unreadable, skipped ({first_line})")
            stats.unreadable_files.append(name)
    stats.files = good
    if good:
        _create_raw_from(con, _read_sql(good))
    else:
        _create_empty_raw(con)
    return warnings


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    row = con.execute(sql, list(params)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def load_logs(
    con: duckdb.DuckDBPyConnection, paths: Sequence[Path], filters: Filters = Filters()
) -> tuple[LoadStats, list[str]]:
    """Read `paths` into the temp tables ``div`` and ``ev`` (see module doc).

    Returns the stats and human-readable warnings (unreadable files). Never
    raises for bad content; raises duckdb.Error only for internal failures.
    """
    stats = LoadStats()
    if not paths:
        _create_empty_raw(con)
        warnings: list[str] = []
    else:
        warnings = _create_raw(con, paths, stats)

    stats.lines = _scalar(con, "SELECT count(*) FROM raw")
    stats.invalid_lines = _scalar(con, "SELECT count(*) FROM raw WHERE event IS NULL")

    conditions = ["TRUE"]
    params: list[Any] = []
    if filters.models:
        conditions.append("model IN (" + ", ".join("?" for _ in filters.models) + ")")
        params.extend(filters.models)
    if filters.since is not None:
        conditions.append("t >= ?::TIMESTAMPTZ")
        params.append(filters.since.isoformat())
    if filters.until is not None:
        conditions.append("t < ?::TIMESTAMPTZ")
        params.append(filters.until.isoformat())
    if filters.protocols:
        conditions.append("protocol IN (" + ", ".join("?" for _ in filters.protocols) + ")")
        params.extend(filters.protocols)
    where = " AND ".join(conditions)

    complete = "model IS NOT NULL AND diverged_ IS NOT NULL"
    stats.incomplete_records = _scalar(
        con, f"SELECT count(*) FROM raw WHERE event = {_DIVERGENCE} AND NOT ({complete})"
    )
    candidates = _scalar(
        con,
        f"SELECT count(*) FROM raw WHERE event <> {_DIVERGENCE} OR ({complete})",
    )
    kept_by_filter = _scalar(
        con,
        f"SELECT count(*) FROM raw WHERE (event <> {_DIVERGENCE} OR ({complete})) AND {where}",
        params,
    )
    stats.filtered_out = candidates - kept_by_filter

    # Deduplicate and number the records on narrow columns first, then copy the wide
    # ones (outputs, features, ...) once: sorting them along is what would be slow.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE keep AS
        SELECT row_number() OVER (ORDER BY t, request_id, filename) AS rid, src FROM (
            SELECT rowid AS src, t, request_id, filename
            FROM raw
            WHERE event = {_DIVERGENCE} AND {complete} AND {where}
            QUALIFY request_id IS NULL OR row_number() OVER (
                PARTITION BY model, request_id, shadow_version, comparison_
                ORDER BY t NULLS LAST, filename) = 1
        )
        """,
        params,
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE div AS
        SELECT k.rid, model, comparison_ AS comparison, primary_version AS pv,
               shadow_version AS sv, t, request_id, replica, diverged_ AS diverged,
               coalesce(list_bool_or(list_transform(map_values(outputs),
                                                    lambda o: o.label_flip)), false)
                   AS label_flip,
               within_noise, latency_ms."primary" AS lat_p, latency_ms.shadow AS lat_s,
               outputs, feature_mismatches."primary" AS fm_p,
               feature_mismatches.shadow AS fm_s, features, filename
        FROM keep k JOIN raw ON raw.rowid = k.src
        """
    )
    con.execute("DROP TABLE keep")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ev AS
        SELECT event, model, comparison_ AS comparison, primary_version AS pv,
               shadow_version AS sv, error, coalesce("count", 1) AS n, t
        FROM raw
        WHERE event <> {_DIVERGENCE} AND {where}
        QUALIFY request_id IS NULL OR row_number() OVER (
            PARTITION BY event, model, request_id, shadow_version, comparison_
            ORDER BY t NULLS LAST, filename) = 1
        """,
        params,
    )
    stats.records = _scalar(con, "SELECT count(*) FROM div")
    stats.events = _scalar(con, "SELECT count(*) FROM ev")
    stats.duplicates = kept_by_filter - stats.records - stats.events
    con.execute("DROP TABLE raw")
    return stats, warnings
