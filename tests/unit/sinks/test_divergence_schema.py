"""The divergence log schema module: the writer's lines, `validate_record` and the README.

Every event the real writer can emit is written once into a tmp file and checked
against `gateway.sinks.divergence_schema`; the README's schema section is parsed
and compared with the module, so writer, schema and documentation cannot drift.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.analysis.divergence import OutputKind, OutputMetrics, OutputRule, compare
from gateway.analysis.feature_checks import Action, CheckKind, Mismatch
from gateway.config import OutputRuleConfig
from gateway.serving.checks import mismatch_record
from gateway.sinks import divergence_schema as ds
from gateway.sinks.divergence_log import (
    DivergenceLog,
    DivergenceLogger,
    JsonlSink,
    first_row_features,
    input_digest,
)
from gateway.sinks.divergence_schema import (
    ENVELOPE,
    EVENT_FIELDS,
    MISMATCH_FIELDS,
    OUTPUT_FIELDS,
    Event,
    Field,
    JsonType,
    fields_of,
    undeclared_fields,
    validate_record,
)

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
SCHEMA_MODULE = ROOT / "gateway" / "sinks" / "divergence_schema.py"


# ---------------------------------------------------------------- real writer lines


def _outputs() -> dict[str, Any]:
    """One output of every kind, as `Comparison.to_json` writes them."""
    primary: dict[str, np.ndarray[Any, Any]] = {
        "value": np.array([[0.5], [1.5]], np.float32),
        "scores": np.array([[0.9, 0.1], [0.2, 0.8]], np.float32),
        "logits": np.array([[2.0, -1.0], [0.0, 1.0]], np.float32),
        "label": np.array([1, 0], np.int64),
        "gone": np.array([1.0, 2.0], np.float32),
    }
    shadow = {k: v for k, v in primary.items() if k != "gone"}
    shadow["value"] = np.array([[0.5], [1.6]], np.float32)
    shadow["scores"] = np.array([[0.1, 0.9], [0.2, 0.8]], np.float32)
    rules = {"logits": OutputRule.from_config(OutputRuleConfig(kind="logits"))}
    out = compare(primary, shadow, rules).to_json()
    assert {m["kind"] for m in out.values()} == set(ds.OUTPUT_KINDS)
    return out


def _mismatches() -> dict[str, list[dict[str, Any]]]:
    amount = Mismatch("amount", CheckKind.OUT_OF_RANGE, Action.LOG, 400.0, 1, "[1.0, 3.0]")
    ssn = Mismatch("ssn", CheckKind.UNSEEN_CATEGORY, Action.LOG, "123", 1, "3 categories")
    return {"primary": [mismatch_record(amount)], "shadow": [mismatch_record(ssn)]}


def divergence_fields(**overrides: Any) -> dict[str, Any]:
    """The keyword arguments `Mirror._compared` passes to `DivergenceLog.divergence`."""
    inputs = {"amount": np.array([[400.0]], np.float32), "country": np.array([b"DE"])}
    fields: dict[str, Any] = {
        "request_id": "c0ffee",
        "model": "fraud",
        "comparison": "shadow",
        "primary_version": 1,
        "shadow_version": 2,
        "routing_key_hash": None,
        "rows": 1,
        "latency_ms": {"primary": 1.893, "shadow": 2.134},
        "outputs": _outputs(),
        "diverged": True,
        "within_noise": None,
        "feature_mismatches": _mismatches(),
        "features": first_row_features(inputs, {"ssn"}),
        "input_digest": input_digest(inputs),
    }
    return {**fields, **overrides}


def shadow_error_fields(**overrides: Any) -> dict[str, Any]:
    """The keyword arguments `Mirror._failed` passes to `DivergenceLog.shadow_error`."""
    fields: dict[str, Any] = {
        "request_id": "c0ffee",
        "model": "fraud",
        "comparison": "shadow",
        "primary_version": 1,
        "shadow_version": 2,
        "shadow_target": "canary",
        "error": ds.TIMEOUT_ERROR,
        "message": "no answer within 200 ms",
    }
    return {**fields, **overrides}


def write_every_event(log: DivergenceLog) -> None:
    """At least one record of every event, in each form the gateway writes it."""
    assert log.divergence(**divergence_fields())
    assert log.divergence(
        **divergence_fields(
            comparison="canary", routing_key_hash="9f86d081884c7d65", within_noise=True
        ),
        protocol="tfs_grpc",
    )
    assert log.divergence(**divergence_fields(comparison="noise", shadow_version=1), protocol=None)
    assert log.shadow_error(**shadow_error_fields())
    assert log.shadow_error(
        **shadow_error_fields(
            shadow_version=None, shadow_target=None, comparison="noise", error="UNAVAILABLE"
        ),
        protocol="tfs_grpc",
    )
    assert log.drops(
        model="fraud", shadow_version=2, count=3, comparison="shadow", shadow_target="canary"
    )
    assert log.drops(
        model="fraud", shadow_version=None, count=2, comparison="shadow", shadow_target=2
    )


@pytest.fixture
def written(tmp_path: Path) -> list[dict[str, Any]]:
    log = DivergenceLog(tmp_path / "div.jsonl", sensitive_features={"ssn"}, replica="gw-a")
    write_every_event(log)
    assert log.close()
    lines = (tmp_path / "div.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_writer_emits_every_event_and_only_those(written: list[dict[str, Any]]) -> None:
    assert {r["event"] for r in written} == set(Event)
    for event in Event:  # structlog calls the method named like the event
        assert callable(getattr(JsonlSink, event)) and callable(getattr(DivergenceLogger, event))


def test_every_writer_line_is_valid(written: list[dict[str, Any]]) -> None:
    for record in written:
        assert validate_record(record) == [], record


def test_every_field_the_writer_emits_is_declared(written: list[dict[str, Any]]) -> None:
    for record in written:
        assert undeclared_fields(record) == [], record
        assert list(record)[:4] == [s.name for s in ENVELOPE]
        assert record["schema"] == ds.SCHEMA_VERSION


def test_protocol_is_written_only_when_given(written: list[dict[str, Any]]) -> None:
    divergence = [r for r in written if r["event"] == Event.DIVERGENCE]
    errors = [r for r in written if r["event"] == Event.SHADOW_ERROR]
    assert [r.get("protocol") for r in divergence] == [None, "tfs_grpc", None]
    assert ["protocol" in r for r in divergence] == [False, True, False]
    assert ["protocol" in r for r in errors] == [False, True]
    assert errors[1]["protocol"] == "tfs_grpc"


def test_the_writer_fills_every_field_of_each_event(written: list[dict[str, Any]]) -> None:
    for event in Event:
        present = set.union(*(set(r) for r in written if r["event"] == event))
        assert present == {s.name for s in fields_of(event)}, event


# ---------------------------------------------------------------- validate_record


def _line(written: list[dict[str, Any]], event: Event) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(json.dumps(next(r for r in written if r["event"] == event)))
    return record


@pytest.mark.parametrize("event", list(Event))
def test_a_missing_required_field_is_a_problem(written: list[dict[str, Any]], event: Event) -> None:
    for spec in fields_of(event):
        record = _line(written, event)
        record.pop(spec.name, None)
        problems = validate_record(record)
        if spec.required:
            assert f"{spec.name}: required field missing" in problems, spec.name
        else:
            assert problems == [], spec.name


def test_nested_required_fields_are_checked(written: list[dict[str, Any]]) -> None:
    record = _line(written, Event.DIVERGENCE)
    del record["outputs"]["value"]["within"]
    del record["feature_mismatches"]["shadow"][0]["action"]
    del record["latency_ms"]["shadow"]
    assert validate_record(record) == [
        "latency_ms.shadow: required field missing",
        "outputs.value.within: required field missing",
        "feature_mismatches.shadow[0].action: required field missing",
    ]


def test_unknown_events_wrong_types_and_values_are_problems(
    written: list[dict[str, Any]],
) -> None:
    record = _line(written, Event.DIVERGENCE)
    assert validate_record({**record, "event": "shadow_timeout"}) == [
        "event: unknown event 'shadow_timeout'"
    ]
    assert validate_record({**record, "event": None}) == [
        "event: expected string, got null",
    ]
    assert validate_record({**record, "schema": "gateway.divergence/v2"}) == [
        "schema: 'gateway.divergence/v2' is not 'gateway.divergence/v1'"
    ]
    assert validate_record({**record, "ts": "2026-11-30 12:00:00"}) == [
        "ts: '2026-11-30 12:00:00' is not YYYY-MM-DDTHH:MM:SS.ffffffZ"
    ]
    assert validate_record({**record, "primary_version": "1", "diverged": 1}) == [
        "primary_version: expected integer, got string",
        "diverged: expected boolean, got integer",
    ]
    assert validate_record({**record, "comparison": "replay"}) == [
        "comparison: 'replay' is not one of shadow, noise, canary"
    ]
    assert validate_record({**record, "protocol": 7}) == ["protocol: expected string, got integer"]
    record["outputs"]["value"]["kind"] = "histogram"
    assert validate_record(record) == [
        "outputs.value.kind: 'histogram' is not one of "
        "('regression', 'probabilities', 'logits', 'classes', 'schema')"
    ]
    assert validate_record([1, 2]) == ["record: expected object, got array"]


def test_unknown_fields_are_not_problems_but_are_reported(written: list[dict[str, Any]]) -> None:
    record = {**_line(written, Event.SHADOW_DROPS), "future_field": 1}
    assert validate_record(record) == []
    assert undeclared_fields(record) == ["future_field"]
    div = _line(written, Event.DIVERGENCE)
    div["outputs"]["value"]["js_max"] = 0.1  # not a regression metric
    assert undeclared_fields(div) == ["outputs.value.js_max"]


# ---------------------------------------------------------------- the schema's own data


def test_the_schema_module_is_standard_library_only() -> None:
    tree = ast.parse(SCHEMA_MODULE.read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    code = (
        "import sys, gateway.sinks.divergence_schema; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('gateway', 'structlog', 'numpy', 'duckdb', 'tensorflow')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout.replace("'", '"')) == [
        "gateway",
        "gateway.sinks",
        "gateway.sinks.divergence_schema",
    ]


def test_enumerations_match_the_code_that_produces_them() -> None:
    assert set(ds.MISMATCH_KINDS) == {str(k) for k in CheckKind}
    assert set(ds.MISMATCH_ACTIONS) == {str(a) for a in Action}
    assert typing.get_args(OutputKind) == ds.OUTPUT_KINDS
    for kind in ds.OUTPUT_KINDS:
        written = OutputMetrics(kind=kind, diverged=False).to_json()  # type: ignore[arg-type]
        assert list(written) == [s.name for s in OUTPUT_FIELDS[kind]], kind
    m = Mismatch("x", CheckKind.Z_SCORE, Action.REJECT, 1.0, 1, "|z| > 6")
    assert list(mismatch_record(m)) == [s.name for s in MISMATCH_FIELDS]


def test_field_names_are_unique_per_event_and_all_enumerated() -> None:
    used = {s.name for s in ENVELOPE}
    for event in Event:
        names = [s.name for s in fields_of(event)]
        assert len(names) == len(set(names)), event
        used |= set(names)
    used |= {s.name for specs in OUTPUT_FIELDS.values() for s in specs}
    used |= {s.name for s in MISMATCH_FIELDS} | {s.name for s in ds.LATENCY_FIELDS}
    assert used == set(Field)


# ---------------------------------------------------------------- the README


_README_TYPES = {
    "string": JsonType.STRING,
    "int": JsonType.INTEGER,
    "number": JsonType.NUMBER,
    "bool": JsonType.BOOLEAN,
    "object": JsonType.OBJECT,
    "array": JsonType.ARRAY,
    "null": JsonType.NULL,
}


def _schema_section() -> list[str]:
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## The divergence log"))
    assert f"`{ds.SCHEMA_VERSION}`" in lines[start]
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return lines[start + 1 : end]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def _tables() -> dict[str, list[list[str]]]:
    """The section's tables, keyed by the first line of the paragraph before each."""
    tables: dict[str, list[list[str]]] = {}
    caption, previous = "", ""
    rows: list[list[str]] = []
    for line in [*_schema_section(), ""]:
        if line.startswith("|"):
            rows.append(_cells(line))
            continue
        if rows:
            assert caption not in tables, caption
            tables[caption] = rows[2:]  # header and --- rule
            rows = []
        if line.strip() and not previous.strip():
            caption = line.strip()
        previous = line
    return tables


def _names(cell: str) -> list[str]:
    names = re.findall(r"`([^`]+)`", cell)
    assert names and ", ".join(f"`{n}`" for n in names) == cell, cell
    return names


def _spec(type_cell: str) -> tuple[frozenset[JsonType], bool]:
    optional = type_cell.endswith("(optional)")
    words = type_cell.removesuffix("(optional)").split(r"\|")
    return frozenset(_README_TYPES[w.strip()] for w in words), not optional


def _table_fields(rows: list[list[str]]) -> dict[str, tuple[frozenset[JsonType], bool]]:
    out: dict[str, tuple[frozenset[JsonType], bool]] = {}
    for row in rows:
        for name in _names(row[0]):
            assert name not in out, name
            out[name] = _spec(row[1])
    return out


def _module_fields(specs: tuple[ds.FieldSpec, ...]) -> dict[str, tuple[frozenset[JsonType], bool]]:
    return {str(s.name): (frozenset(s.types), s.required) for s in specs}


def test_readme_tables_list_exactly_the_schema_fields() -> None:
    tables = _tables()
    expected_captions = {
        "**Envelope, on every record:**": ENVELOPE,
        "`feature_mismatches.<side>[i]`:": MISMATCH_FIELDS,
    }
    for event in Event:
        caption = next(c for c in tables if c.startswith(f'**`event: "{event}"`**'))
        expected_captions[caption] = EVENT_FIELDS[event]
    for caption, specs in expected_captions.items():
        assert _table_fields(tables[caption]) == _module_fields(specs), caption
    (outputs_caption,) = [c for c in tables if c.startswith("`outputs.<alias>`")]
    per_kind: dict[str, dict[str, tuple[frozenset[JsonType], bool]]] = {}
    for row in tables[outputs_caption]:
        kinds = ds.OUTPUT_KINDS if row[2] == "all" else _names(row[2])
        for kind in kinds:
            per_kind.setdefault(kind, {}).update(_table_fields([row]))
    assert per_kind == {k: _module_fields(v) for k, v in OUTPUT_FIELDS.items()}
    # and the section has no other table (no fields documented that the module lacks)
    assert set(tables) == {*expected_captions, outputs_caption}


def test_readme_example_line_is_valid() -> None:
    section = "\n".join(_schema_section())
    (example,) = re.findall(r"```json\n(.*?)\n```", section, re.S)
    record = json.loads(example)
    assert validate_record(record) == []
    assert undeclared_fields(record) == []
    assert record["event"] == Event.DIVERGENCE
