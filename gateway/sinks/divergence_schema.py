"""The divergence log schema, ``gateway.divergence/v1``, as plain data.

The single definition shared by the writer (`gateway.sinks.divergence_log`),
the report (`gateway.report`) and the tests that keep the README's schema
tables in step with it. Standard library only: the report imports it without
structlog, numpy or TensorFlow, and it imports nothing else from the project.

* `SCHEMA_VERSION`: the value of every record's ``schema`` field.
* `Event`: the ``event`` names the writer emits (one structlog method each).
* `Field`: every field name used anywhere in a record (top level and nested).
* `Comparison`: the values of ``comparison``; `DEFAULT_COMPARISON` is what
  readers assume when a record has none.
* `FieldSpec` / `JsonType`: a field's name, its JSON types and whether it is
  required. `ENVELOPE` (on every record), `EVENT_FIELDS` (per event, without
  the envelope; `fields_of` gives both), `LATENCY_FIELDS`, `OUTPUT_FIELDS`
  (per output kind, ``kind`` and ``diverged`` included), `MISMATCH_FIELDS`.
* `validate_record`: the problems of one parsed line (empty list = valid);
  `undeclared_fields`: the fields of a record that the schema does not declare
  (readers ignore them; the writer should emit none).

Compatibility rules: readers ignore fields and events they do not know;
adding an optional field keeps the schema string, removing or retyping a field
needs a new one. A number may be written as null wherever the writer met NaN or
an infinity; fields that can carry such values are declared ``number | null``.

There is no back-compatibility alias: ``gateway.divergence/v1`` is the only
version ever written, and readers match exactly the `Event` names.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

SCHEMA_VERSION: Final = "gateway.divergence/v1"
"""The ``schema`` field of every record."""


class Event(enum.StrEnum):
    """The ``event`` names the writer emits."""

    DIVERGENCE = "divergence"
    """One compared request."""
    SHADOW_ERROR = "shadow_error"
    """The shadow (or, for canary lanes, the mirrored primary) did not answer."""
    SHADOW_DROPS = "shadow_drops"
    """A periodic per-lane summary of mirrored requests dropped (queue full)."""


class Comparison(enum.StrEnum):
    """The values of ``comparison``."""

    SHADOW = "shadow"
    """A configured shadow version against the primary."""
    NOISE = "noise"
    """The primary replayed against itself (the noise floor)."""
    CANARY = "canary"
    """A rollout's canary (as ``shadow_version``) against its primary."""


DEFAULT_COMPARISON: Final = Comparison.SHADOW
"""What a reader assumes for a record without ``comparison``."""

TIMEOUT_ERROR: Final = "DEADLINE_EXCEEDED"
"""The ``error`` of a ``shadow_error`` record whose shadow did not answer in time."""

OUTPUT_KINDS: Final = ("regression", "probabilities", "logits", "classes", "schema")
"""The values of ``outputs.<alias>.kind``."""

MISMATCH_KINDS: Final = (
    "missing_feature",
    "unexpected_feature",
    "dtype_mismatch",
    "shape_mismatch",
    "nan_or_inf",
    "out_of_range",
    "z_score",
    "unseen_category",
)
"""The values of ``feature_mismatches.<side>[i].kind``."""

MISMATCH_ACTIONS: Final = ("ignore", "log", "reject")
"""The values of ``feature_mismatches.<side>[i].action``."""

SIDES: Final = ("primary", "shadow")
"""The keys of ``latency_ms`` and ``feature_mismatches``."""

REDACTED: Final = "<redacted>"
"""The value written in place of a sensitive feature's value."""


class Field(enum.StrEnum):
    """Every field name of the schema (top level and nested)."""

    # envelope
    SCHEMA = "schema"
    TS = "ts"
    EVENT = "event"
    REPLICA = "replica"
    # divergence / shadow_error / shadow_drops
    REQUEST_ID = "request_id"
    MODEL = "model"
    COMPARISON = "comparison"
    PRIMARY_VERSION = "primary_version"
    SHADOW_VERSION = "shadow_version"
    ROUTING_KEY_HASH = "routing_key_hash"
    ROWS = "rows"
    LATENCY_MS = "latency_ms"
    OUTPUTS = "outputs"
    DIVERGED = "diverged"
    WITHIN_NOISE = "within_noise"
    FEATURE_MISMATCHES = "feature_mismatches"
    FEATURES = "features"
    INPUT_DIGEST = "input_digest"
    PROTOCOL = "protocol"
    SHADOW_TARGET = "shadow_target"
    ERROR = "error"
    MESSAGE = "message"
    COUNT = "count"
    # latency_ms.<side>, feature_mismatches.<side>
    PRIMARY = "primary"
    SHADOW = "shadow"
    # outputs.<alias> (also DIVERGED, MESSAGE)
    KIND = "kind"
    MAX_ABS = "max_abs"
    MAX_REL = "max_rel"
    WITHIN = "within"
    LABEL_FLIP = "label_flip"
    TOP1_AGREEMENT = "top1_agreement"
    TOPK_OVERLAP = "topk_overlap"
    JS_MEAN = "js_mean"
    JS_MAX = "js_max"
    AGREEMENT = "agreement"
    # feature_mismatches.<side>[i] (also KIND, COUNT)
    FEATURE = "feature"
    ACTION = "action"
    VALUE = "value"
    REFERENCE = "reference"


class JsonType(enum.StrEnum):
    """JSON value types (``integer`` is a number without a fraction)."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"
    NULL = "null"


def json_type(value: Any) -> JsonType | None:
    """The JSON type of a parsed JSON value (None for non-JSON Python values)."""
    if value is None:
        return JsonType.NULL
    if isinstance(value, bool):
        return JsonType.BOOLEAN
    if isinstance(value, int):
        return JsonType.INTEGER
    if isinstance(value, float):
        return JsonType.NUMBER
    if isinstance(value, str):
        return JsonType.STRING
    if isinstance(value, Mapping):
        return JsonType.OBJECT
    if isinstance(value, list | tuple):
        return JsonType.ARRAY
    return None


@dataclass(frozen=True)
class FieldSpec:
    """One field: its name, the JSON types it may have, whether every record has it."""

    name: Field
    types: tuple[JsonType, ...]
    required: bool = True

    def accepts(self, value: Any) -> bool:
        """Whether `value` has one of the field's types (an integer is also a number)."""
        kind = json_type(value)
        if kind is None:
            return False
        return kind in self.types or (kind is JsonType.INTEGER and JsonType.NUMBER in self.types)


_S, _I, _N = (JsonType.STRING,), (JsonType.INTEGER,), (JsonType.NUMBER, JsonType.NULL)
_B, _O = (JsonType.BOOLEAN,), (JsonType.OBJECT,)
_NULL = JsonType.NULL

ENVELOPE: Final[tuple[FieldSpec, ...]] = (
    FieldSpec(Field.SCHEMA, _S),
    FieldSpec(Field.TS, _S),
    FieldSpec(Field.EVENT, _S),
    FieldSpec(Field.REPLICA, (JsonType.STRING, _NULL)),
)
"""The fields every record starts with, in this order."""

EVENT_FIELDS: Final[Mapping[Event, tuple[FieldSpec, ...]]] = {
    Event.DIVERGENCE: (
        FieldSpec(Field.REQUEST_ID, _S),
        FieldSpec(Field.MODEL, _S),
        FieldSpec(Field.COMPARISON, _S),
        FieldSpec(Field.PRIMARY_VERSION, _I),
        FieldSpec(Field.SHADOW_VERSION, _I),
        FieldSpec(Field.ROUTING_KEY_HASH, (JsonType.STRING, _NULL)),
        FieldSpec(Field.ROWS, _I),
        FieldSpec(Field.LATENCY_MS, _O),
        FieldSpec(Field.OUTPUTS, _O),
        FieldSpec(Field.DIVERGED, _B),
        FieldSpec(Field.WITHIN_NOISE, (JsonType.BOOLEAN, _NULL)),
        FieldSpec(Field.FEATURE_MISMATCHES, _O),
        FieldSpec(Field.FEATURES, _O),
        FieldSpec(Field.INPUT_DIGEST, _S),
        FieldSpec(Field.PROTOCOL, _S, required=False),
    ),
    Event.SHADOW_ERROR: (
        FieldSpec(Field.REQUEST_ID, _S),
        FieldSpec(Field.MODEL, _S),
        FieldSpec(Field.COMPARISON, _S),
        FieldSpec(Field.PRIMARY_VERSION, _I),
        FieldSpec(Field.SHADOW_VERSION, (JsonType.INTEGER, _NULL)),
        FieldSpec(Field.SHADOW_TARGET, (JsonType.INTEGER, JsonType.STRING, _NULL)),
        FieldSpec(Field.ERROR, _S),
        FieldSpec(Field.MESSAGE, _S),
        FieldSpec(Field.PROTOCOL, _S, required=False),
    ),
    Event.SHADOW_DROPS: (
        FieldSpec(Field.MODEL, _S),
        FieldSpec(Field.COMPARISON, _S),
        FieldSpec(Field.SHADOW_VERSION, (JsonType.INTEGER, _NULL)),
        FieldSpec(Field.SHADOW_TARGET, (JsonType.INTEGER, JsonType.STRING, _NULL)),
        FieldSpec(Field.COUNT, _I),
    ),
}
"""Per event, its fields after the envelope."""

LATENCY_FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec(Field.PRIMARY, (JsonType.NUMBER,)),
    FieldSpec(Field.SHADOW, (JsonType.NUMBER,)),
)
"""``latency_ms``: milliseconds per side."""

_OUTPUT_COMMON: Final = (FieldSpec(Field.KIND, _S), FieldSpec(Field.DIVERGED, _B))
_PROBABILITY_FIELDS: Final = (
    FieldSpec(Field.LABEL_FLIP, _B),
    FieldSpec(Field.TOP1_AGREEMENT, _N),
    FieldSpec(Field.TOPK_OVERLAP, _N),
    FieldSpec(Field.MAX_ABS, _N),
    FieldSpec(Field.JS_MEAN, _N),
    FieldSpec(Field.JS_MAX, _N),
)
OUTPUT_FIELDS: Final[Mapping[str, tuple[FieldSpec, ...]]] = {
    "regression": (
        *_OUTPUT_COMMON,
        FieldSpec(Field.MAX_ABS, _N),
        FieldSpec(Field.MAX_REL, _N),
        FieldSpec(Field.WITHIN, _B),
    ),
    "probabilities": (*_OUTPUT_COMMON, *_PROBABILITY_FIELDS),
    "logits": (*_OUTPUT_COMMON, *_PROBABILITY_FIELDS),
    "classes": (*_OUTPUT_COMMON, FieldSpec(Field.AGREEMENT, _N)),
    "schema": (*_OUTPUT_COMMON, FieldSpec(Field.MESSAGE, _S)),
}
"""``outputs.<alias>``, by its ``kind``."""

MISMATCH_FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec(Field.FEATURE, _S),
    FieldSpec(Field.KIND, _S),
    FieldSpec(Field.ACTION, _S),
    FieldSpec(Field.VALUE, (JsonType.NUMBER, JsonType.STRING, _NULL)),
    FieldSpec(Field.COUNT, _I),
    FieldSpec(Field.REFERENCE, _S),
)
"""``feature_mismatches.<side>[i]``: one failed feature check."""

TS_PATTERN: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
"""``ts``: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""


def fields_of(event: Event | str) -> tuple[FieldSpec, ...]:
    """The envelope and the fields of `event` (ValueError for an unknown event)."""
    return ENVELOPE + EVENT_FIELDS[Event(event)]


def _check(
    obj: Mapping[str, Any], specs: tuple[FieldSpec, ...], where: str, problems: list[str]
) -> None:
    for spec in specs:
        path = f"{where}{spec.name}"
        if spec.name not in obj:
            if spec.required:
                problems.append(f"{path}: required field missing")
            continue
        value = obj[spec.name]
        if not spec.accepts(value):
            got = json_type(value)
            expected = " | ".join(spec.types)
            problems.append(f"{path}: expected {expected}, got {got or type(value).__name__}")


def _check_value(value: Any, allowed: tuple[str, ...], path: str, problems: list[str]) -> None:
    """A string field that must be one of `allowed` (a missing or non-string value is
    already reported by `_check`)."""
    if isinstance(value, str) and value not in allowed:
        problems.append(f"{path}: {value!r} is not one of {', '.join(allowed)}")


def _check_divergence(record: Mapping[str, Any], problems: list[str]) -> None:
    latency = record.get(Field.LATENCY_MS)
    if isinstance(latency, Mapping):
        _check(latency, LATENCY_FIELDS, f"{Field.LATENCY_MS}.", problems)
    outputs = record.get(Field.OUTPUTS)
    if isinstance(outputs, Mapping):
        for alias, metrics in outputs.items():
            where = f"{Field.OUTPUTS}.{alias}"
            if not isinstance(metrics, Mapping):
                problems.append(f"{where}: expected object, got {json_type(metrics)}")
                continue
            kind = metrics.get(Field.KIND)
            if not isinstance(kind, str) or kind not in OUTPUT_FIELDS:
                problems.append(f"{where}.{Field.KIND}: {kind!r} is not one of {OUTPUT_KINDS}")
                continue
            _check(metrics, OUTPUT_FIELDS[kind], f"{where}.", problems)
    mismatches = record.get(Field.FEATURE_MISMATCHES)
    if isinstance(mismatches, Mapping):
        for side in SIDES:
            where = f"{Field.FEATURE_MISMATCHES}.{side}"
            items = mismatches.get(side)
            if not isinstance(items, list | tuple):
                problems.append(f"{where}: expected array, got {json_type(items)}")
                continue
            for i, item in enumerate(items):
                if not isinstance(item, Mapping):
                    problems.append(f"{where}[{i}]: expected object, got {json_type(item)}")
                    continue
                _check(item, MISMATCH_FIELDS, f"{where}[{i}].", problems)
                path = f"{where}[{i}]."
                _check_value(item.get(Field.KIND), MISMATCH_KINDS, f"{path}{Field.KIND}", problems)
                _check_value(
                    item.get(Field.ACTION), MISMATCH_ACTIONS, f"{path}{Field.ACTION}", problems
                )


def validate_record(record: Any) -> list[str]:
    """The problems of one parsed log line, as ``"<field path>: <problem>"``; [] if valid.

    Checks the envelope (``schema`` is `SCHEMA_VERSION`, ``ts`` matches
    `TS_PATTERN`, ``event`` is an `Event`), every declared field of the event
    (required ones present, JSON types, ``comparison`` a `Comparison`) and, for
    ``divergence``, the nested ``latency_ms``, ``outputs`` and
    ``feature_mismatches`` objects. Undeclared fields are not problems (see
    `undeclared_fields`).
    """
    if not isinstance(record, Mapping):
        return [f"record: expected object, got {json_type(record) or type(record).__name__}"]
    problems: list[str] = []
    _check(record, ENVELOPE, "", problems)
    schema = record.get(Field.SCHEMA)
    if isinstance(schema, str) and schema != SCHEMA_VERSION:
        problems.append(f"{Field.SCHEMA}: {schema!r} is not {SCHEMA_VERSION!r}")
    ts = record.get(Field.TS)
    if isinstance(ts, str) and not TS_PATTERN.match(ts):
        problems.append(f"{Field.TS}: {ts!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    event = record.get(Field.EVENT)
    if not isinstance(event, str):
        return problems
    if event not in EVENT_FIELDS:
        problems.append(f"{Field.EVENT}: unknown event {event!r}")
        return problems
    _check(record, EVENT_FIELDS[Event(event)], "", problems)
    _check_value(record.get(Field.COMPARISON), tuple(Comparison), str(Field.COMPARISON), problems)
    if event == Event.DIVERGENCE:
        _check_divergence(record, problems)
    return problems


def undeclared_fields(record: Mapping[str, Any]) -> list[str]:
    """Paths of the fields of `record` that the schema does not declare for its event.

    Covers the top level and, for ``divergence``, ``latency_ms``,
    ``outputs.<alias>`` (by kind) and ``feature_mismatches.<side>[i]``. An
    unknown event has every non-envelope field undeclared.
    """
    event = record.get(Field.EVENT)
    specs = fields_of(event) if isinstance(event, str) and event in EVENT_FIELDS else ENVELOPE
    names = {s.name for s in specs}
    out = [str(k) for k in record if k not in names]
    if event != Event.DIVERGENCE:
        return out
    latency = record.get(Field.LATENCY_MS)
    if isinstance(latency, Mapping):
        known = {s.name for s in LATENCY_FIELDS}
        out += [f"{Field.LATENCY_MS}.{k}" for k in latency if k not in known]
    outputs = record.get(Field.OUTPUTS)
    if isinstance(outputs, Mapping):
        for alias, metrics in outputs.items():
            if isinstance(metrics, Mapping):
                kind = metrics.get(Field.KIND)
                kind_specs = OUTPUT_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
                known = {s.name for s in kind_specs}
                out += [f"{Field.OUTPUTS}.{alias}.{k}" for k in metrics if k not in known]
    mismatches = record.get(Field.FEATURE_MISMATCHES)
    if isinstance(mismatches, Mapping):
        out += [f"{Field.FEATURE_MISMATCHES}.{k}" for k in mismatches if k not in SIDES]
        known = {s.name for s in MISMATCH_FIELDS}
        for side in SIDES:
            items = mismatches.get(side)
            for i, item in enumerate(items if isinstance(items, list | tuple) else ()):
                if isinstance(item, Mapping):
                    out += [
                        f"{Field.FEATURE_MISMATCHES}.{side}[{i}].{k}"
                        for k in item
                        if k not in known
                    ]
    return out


__all__ = [
    "DEFAULT_COMPARISON",
    "ENVELOPE",
    "EVENT_FIELDS",
    "LATENCY_FIELDS",
    "MISMATCH_ACTIONS",
    "MISMATCH_FIELDS",
    "MISMATCH_KINDS",
    "OUTPUT_FIELDS",
    "OUTPUT_KINDS",
    "REDACTED",
    "SCHEMA_VERSION",
    "SIDES",
    "TIMEOUT_ERROR",
    "TS_PATTERN",
    "Comparison",
    "Event",
    "Field",
    "FieldSpec",
    "JsonType",
    "fields_of",
    "json_type",
    "undeclared_fields",
    "validate_record",
]
