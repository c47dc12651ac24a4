"""The report reads what the writer writes: every event, by the schema module's names.

One record of every event is written with the real `DivergenceLog` into a tmp
file and loaded by `gateway report`: each must be loaded and counted (a
``divergence`` as a request, ``shadow_error`` as an error or timeout,
``shadow_drops`` as drops), none may end up under ``other_events``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.report import load
from gateway.report.cli import main
from gateway.report.load import Filters, connect, load_logs
from gateway.sinks import divergence_schema as ds
from gateway.sinks.divergence_log import DivergenceLog
from gateway.sinks.divergence_schema import Event
from loadtest.gen_divergence_log import generate

from ..sinks.test_divergence_schema import (
    divergence_fields,
    shadow_error_fields,
    write_every_event,
)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else {}


@pytest.fixture
def every_event(tmp_path: Path) -> Path:
    path = tmp_path / "divergence.jsonl"
    log = DivergenceLog(path, replica="gw-a")
    write_every_event(log)
    assert log.close()
    return path


def test_every_event_the_writer_emits_is_loaded_and_counted(
    every_event: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = [json.loads(line) for line in every_event.read_text().splitlines()]
    by_event = {e: [r for r in written if r["event"] == e] for e in Event}
    assert all(by_event.values())
    code, doc = run_json(capsys, str(every_event), "--min-count", "1")
    assert code == 0
    inputs = doc["inputs"]
    assert inputs["invalid_lines"] == 0 and inputs["incomplete_records"] == 0
    assert inputs["records"] == len(by_event[Event.DIVERGENCE])
    assert inputs["events"] == len(by_event[Event.SHADOW_ERROR]) + len(by_event[Event.SHADOW_DROPS])
    assert inputs["other_events"] == {} and inputs["unattributed_events"] == 0
    groups = doc["groups"]
    assert sum(g["requests"] for g in groups) == len(by_event[Event.DIVERGENCE])
    assert sum(g["errors"] for g in groups) == len(by_event[Event.SHADOW_ERROR])
    timeouts = [r for r in by_event[Event.SHADOW_ERROR] if r["error"] == ds.TIMEOUT_ERROR]
    assert sum(g["timeouts"] for g in groups) == len(timeouts) == 1
    assert sum(g["drops"] for g in groups) == sum(r["count"] for r in by_event[Event.SHADOW_DROPS])


def test_events_the_writer_never_emits_are_not_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Names the report used to match by pattern (``*_timeout``, ``*_dropped``, ``*_drop``,
    any ``*_error``) are unknown events now: listed, never counted as errors or drops."""
    path = tmp_path / "divergence.jsonl"
    log = DivergenceLog(path, replica="gw-a")
    assert log.divergence(**divergence_fields())
    assert log.shadow_error(**shadow_error_fields(error="UNAVAILABLE"))
    assert log.close()
    base = {"schema": ds.SCHEMA_VERSION, "ts": "2026-11-30T12:00:00.000000Z", "replica": "gw-a"}
    lenient = {"model": "fraud", "comparison": "shadow", "primary_version": 1}
    strangers = ["shadow_timeout", "shadow_dropped", "shadow_drop", "capture_error"]
    with path.open("a") as fh:
        for name in strangers:
            record = {**base, "event": name, **lenient, "shadow_version": 2, "count": 5}
            assert validate_problems(record) == [f"event: unknown event {name!r}"]
            fh.write(json.dumps(record) + "\n")
    code, doc = run_json(capsys, str(path))
    assert code == 0
    assert doc["inputs"]["other_events"] == dict.fromkeys(sorted(strangers), 1)
    (group,) = doc["groups"]
    assert (group["errors"], group["timeouts"], group["drops"]) == (1, 0, 0)


def validate_problems(record: dict[str, Any]) -> list[str]:
    return ds.validate_record(json.loads(json.dumps(record)))


def test_the_protocol_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "divergence.jsonl"
    log = DivergenceLog(path, replica="gw-a")
    assert log.divergence(**divergence_fields(request_id="a"), protocol="tfs_grpc")
    assert log.divergence(**divergence_fields(request_id="b"), protocol="kserve_v2")
    assert log.divergence(**divergence_fields(request_id="c"))
    assert log.shadow_error(**shadow_error_fields(request_id="d"), protocol="tfs_grpc")
    assert log.shadow_error(**shadow_error_fields(request_id="e"))
    assert log.close()
    con = connect()
    stats, _ = load_logs(con, [path], Filters(protocols=("tfs_grpc",)))
    assert (stats.records, stats.events, stats.filtered_out) == (1, 1, 3)
    assert con.execute("SELECT request_id FROM div").fetchall() == [("a",)]
    stats, _ = load_logs(connect(), [path], Filters())
    assert (stats.records, stats.events, stats.filtered_out) == (3, 2, 0)
    code, doc = run_json(capsys, str(path), "--protocol", "tfs_grpc", "--protocol", "kserve_v2")
    assert code == 0
    assert doc["inputs"]["records"] == 2
    assert doc["inputs"]["filters"]["protocols"] == ["tfs_grpc", "kserve_v2"]


def _declared_everywhere() -> set[str]:
    names = {s.name for s in ds.ENVELOPE}
    for specs in ds.EVENT_FIELDS.values():
        names |= {s.name for s in specs}
    return {str(n) for n in names}


def _struct_fields(sql_type: str) -> set[str]:
    return {m.strip('"') for m in re.findall(r'([A-Za-z_0-9"]+) [A-Z]+', sql_type)}


def test_the_reader_reads_only_declared_fields() -> None:
    assert set(load.COLUMNS) <= _declared_everywhere()
    output_fields = {str(s.name) for specs in ds.OUTPUT_FIELDS.values() for s in specs}
    assert _struct_fields(load._OUTPUT_STRUCT) <= output_fields
    assert _struct_fields(load._MISMATCH_LIST) <= {str(s.name) for s in ds.MISMATCH_FIELDS}
    latency = _struct_fields(load.COLUMNS[ds.Field.LATENCY_MS])
    assert latency == {str(s.name) for s in ds.LATENCY_FIELDS}


def test_the_generated_load_test_log_follows_the_schema(tmp_path: Path) -> None:
    (path,) = generate(tmp_path / "divergence.jsonl", 3000, seed=3, replica="gw-a")
    events: set[str] = set()
    for line in path.read_text().splitlines():
        record = json.loads(line)
        events.add(record["event"])
        assert ds.validate_record(record) == [], record
        assert ds.undeclared_fields(record) == [], record
    assert events == set(Event)
