"""DivergenceLog: each structlog processor, redaction, digests, and the file it writes."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.analysis.feature_checks import Action, CheckKind, Mismatch
from gateway.sinks.divergence_log import (
    MAX_LIST,
    REDACTED,
    SCHEMA,
    DivergenceLog,
    add_envelope,
    first_row_features,
    input_digest,
    make_redactor,
    mismatch_json,
    to_writer_args,
    utc_timestamp,
)
from gateway.sinks.jsonl import JsonlWriter

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def example_fields() -> dict[str, Any]:
    """The fields of the README's schema example (without schema/ts/event/replica)."""
    return {
        "request_id": "c0ffee",
        "model": "fraud",
        "comparison": "shadow",
        "primary_version": 1,
        "shadow_version": 2,
        "routing_key_hash": "9f86d081",
        "rows": 1,
        "latency_ms": {"primary": 1.92, "shadow": 2.41},
        "outputs": {
            "scores": {
                "kind": "probabilities",
                "diverged": True,
                "label_flip": True,
                "max_abs": 0.3,
            }
        },
        "diverged": True,
        "within_noise": False,
        "feature_mismatches": {
            "primary": [
                {
                    "feature": "amount",
                    "kind": "out_of_range",
                    "value": 400.0,
                    "count": 1,
                    "reference": "[1.0, 3.0]",
                }
            ],
            "shadow": [],
        },
        "features": {"amount": 400.0, "country": "DE", "ssn": "123-45-6789"},
        "input_digest": "sha256:ab12",
    }


# ---------------------------------------------------------------- processors


def test_utc_timestamp_format_and_value() -> None:
    ns = int(datetime(2026, 11, 25, 6, 0, 0, tzinfo=UTC).timestamp()) * 10**9
    assert utc_timestamp(ns + 123_456_789) == "2026-11-25T06:00:00.123456Z"
    assert utc_timestamp(ns + 1_000_000_999) == "2026-11-25T06:00:01.000000Z"
    assert utc_timestamp(ns - 1000) == "2026-11-25T05:59:59.999999Z"
    now = utc_timestamp()
    assert TS_RE.match(now)
    parsed = datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5


def test_add_envelope_puts_schema_ts_event_first_without_mutating() -> None:
    ed = {"replica": "h:1", "request_id": "r", "event": "divergence"}
    out = add_envelope(None, "divergence", ed)
    assert list(out)[:4] == ["schema", "ts", "event", "replica"]
    assert out["schema"] == SCHEMA and TS_RE.match(out["ts"])
    assert out["event"] == "divergence" and out["request_id"] == "r"
    assert ed == {"replica": "h:1", "request_id": "r", "event": "divergence"}


def test_add_envelope_keeps_a_given_ts_and_forces_the_schema() -> None:
    out = add_envelope(None, "shadow_error", {"ts": "2026-01-01T00:00:00.000000Z", "schema": "x"})
    assert out["ts"] == "2026-01-01T00:00:00.000000Z"
    assert out["schema"] == SCHEMA
    assert out["event"] == "shadow_error"  # defaults to the method name


def test_redactor_features_and_every_mismatch_value() -> None:
    redact = make_redactor({"ssn", "email"})
    features = {"amount": 400.0, "ssn": "123", "email": "a@b"}
    mismatches = {
        "primary": [
            {"feature": "ssn", "kind": "unseen_category", "value": "123", "count": 1},
            {"feature": "amount", "kind": "out_of_range", "value": 400.0, "count": 1},
        ],
        "shadow": [{"feature": "email", "kind": "unseen_category", "value": "a@b", "count": 1}],
    }
    ed = {"event": "divergence", "features": features, "feature_mismatches": mismatches}
    out = redact(None, "divergence", ed)
    assert out["features"] == {"amount": 400.0, "ssn": REDACTED, "email": REDACTED}
    assert out["feature_mismatches"]["primary"][0]["value"] == REDACTED
    assert out["feature_mismatches"]["primary"][1]["value"] == 400.0
    assert out["feature_mismatches"]["shadow"][0]["value"] == REDACTED
    # the caller's objects are untouched
    assert features["ssn"] == "123" and mismatches["primary"][0]["value"] == "123"
    assert mismatches["shadow"][0]["value"] == "a@b"
    assert ed["features"] is features


def test_redactor_returns_the_same_dict_when_nothing_is_sensitive() -> None:
    redact = make_redactor({"ssn"})
    ed = {"features": {"amount": 1.0, "ssn": REDACTED}, "feature_mismatches": {"primary": []}}
    assert redact(None, "divergence", ed) is ed
    assert make_redactor(())(None, "divergence", {"features": {"ssn": 1}}) == {
        "features": {"ssn": 1}
    }


def test_redactor_converts_mismatch_objects() -> None:
    m = Mismatch("ssn", CheckKind.UNSEEN_CATEGORY, Action.LOG, "123", 1, "3 categories")
    out = make_redactor({"ssn"})(None, "divergence", {"feature_mismatches": {"primary": [m]}})
    assert out["feature_mismatches"]["primary"] == [
        {
            "feature": "ssn",
            "kind": "unseen_category",
            "action": "log",
            "value": REDACTED,
            "count": 1,
            "reference": "3 categories",
        }
    ]


def test_redactor_handles_missing_and_null_fields() -> None:
    redact = make_redactor({"ssn"})
    for ed in ({}, {"features": None, "feature_mismatches": None}, {"feature_mismatches": {}}):
        assert redact(None, "divergence", ed) is ed


def test_to_writer_args_passes_the_dict_positionally() -> None:
    ed = {"a": 1}
    args, kwargs = to_writer_args(None, "divergence", ed)
    assert args[0] is ed and kwargs == {}


# ---------------------------------------------------------------- helpers


def test_input_digest_is_stable_and_canonical() -> None:
    a = {"x": np.arange(8, dtype=np.float32).reshape(2, 4), "c": np.array([b"DE", b"FR"], object)}
    d = input_digest(a)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", d)
    # same values: other dict order, Fortran layout, big-endian, str instead of bytes
    b = {
        "c": np.array(["DE", "FR"]),
        "x": np.asfortranarray(np.arange(8, dtype=">f4").reshape(2, 4)),
    }
    assert input_digest(b) == d
    assert input_digest(a) == d  # deterministic


def test_input_digest_changes_with_values_dtype_shape_and_names() -> None:
    base = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    d = input_digest(base)
    changed = [
        {"x": np.arange(8, dtype=np.float32).reshape(2, 4) + np.float32(1e-6)},
        {"x": np.arange(8, dtype=np.float64).reshape(2, 4)},
        {"x": np.arange(8, dtype=np.float32).reshape(4, 2)},
        {"y": np.arange(8, dtype=np.float32).reshape(2, 4)},
        {**base, "z": np.zeros(0, np.int64)},
    ]
    digests = {input_digest(c) for c in changed}
    assert d not in digests and len(digests) == len(changed)
    # string boundaries are length-prefixed
    assert input_digest({"s": np.array([b"ab", b"c"], object)}) != input_digest(
        {"s": np.array([b"a", b"bc"], object)}
    )


def test_first_row_features() -> None:
    features = {
        "amount": np.array([400.0, 1.0], np.float32),
        "country": np.array([b"DE", b"FR"], object),
        "ssn": np.array([b"123", b"456"], object),
        "vec": np.arange(40, dtype=np.int64).reshape(2, 20),
        "nan": np.array([np.nan]),
        "empty": np.zeros((0, 3)),
        "scalar": np.array(3),
    }
    out = first_row_features(features, {"ssn"})
    assert out == {
        "amount": 400.0,
        "country": "DE",
        "ssn": REDACTED,
        "vec": list(range(MAX_LIST)),
        "nan": None,
        "empty": None,
        "scalar": 3,
    }
    json.dumps(out, allow_nan=False)


def test_mismatch_json() -> None:
    m = Mismatch("amount", CheckKind.OUT_OF_RANGE, Action.LOG, np.float64(400.0), 1, "[1.0, 3.0]")
    assert mismatch_json(m) == {
        "feature": "amount",
        "kind": "out_of_range",
        "action": "log",
        "value": 400.0,
        "count": 1,
        "reference": "[1.0, 3.0]",
    }


# ---------------------------------------------------------------- the log


def read(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def test_divergence_record_matches_the_schema(tmp_path: Path) -> None:
    log = DivergenceLog(tmp_path / "div.jsonl", sensitive_features={"ssn"}, replica="host-1:8500")
    fields = example_fields()
    assert log.divergence(**fields) is True
    log.close()
    (rec,) = read(tmp_path / "div.jsonl")
    assert rec["schema"] == "gateway.divergence/v1"
    assert TS_RE.match(rec["ts"])
    assert rec["event"] == "divergence" and rec["replica"] == "host-1:8500"
    expected = example_fields()
    expected["features"]["ssn"] = REDACTED
    for key, value in expected.items():
        assert rec[key] == value, key
    assert fields["features"]["ssn"] == "123-45-6789"  # caller's dict not mutated
    assert log.stats()["written"] == 1


def test_shadow_error_and_drops_events(tmp_path: Path) -> None:
    log = DivergenceLog(tmp_path / "div.jsonl")
    assert log.shadow_error(
        model="fraud",
        primary_version=1,
        shadow_version=2,
        request_id="r1",
        error="DEADLINE_EXCEEDED",
        message="deadline 50 ms exceeded",
    )
    assert log.drops("fraud", 2, 17)
    log.close()
    err, drops = read(tmp_path / "div.jsonl")
    assert err["event"] == "shadow_error" and err["error"] == "DEADLINE_EXCEEDED"
    assert err["replica"] is None and err["schema"] == SCHEMA
    assert drops == {
        "schema": SCHEMA,
        "ts": drops["ts"],
        "event": "shadow_drops",
        "replica": None,
        "model": "fraud",
        "shadow_version": 2,
        "count": 17,
    }


def test_serialisation_happens_on_the_writer_thread(tmp_path: Path) -> None:
    threads: list[str] = []

    class Spy:
        def __init__(self, value: float) -> None:
            self.value = value

        def __str__(self) -> str:
            threads.append(threading.current_thread().name)
            return str(self.value)

    log = DivergenceLog(tmp_path / "div.jsonl")
    log.divergence(request_id="r", outputs={"spy": Spy(1.5)})
    assert threads == []  # nothing serialised on the caller's thread
    log.close()
    assert threads and threads[0] != threading.current_thread().name
    assert read(tmp_path / "div.jsonl")[0]["outputs"] == {"spy": "1.5"}


def test_bad_fields_never_raise(tmp_path: Path) -> None:
    log = DivergenceLog(tmp_path / "div.jsonl")
    assert log.divergence(event="nope") is False  # clashes with the event name
    assert log.stats()["rejected"] == 1
    log.close()
    assert log.divergence(request_id="late") is False
    assert log.stats()["dropped_closed"] == 1


def test_queue_full_returns_false(tmp_path: Path) -> None:
    writer = JsonlWriter(tmp_path / "div.jsonl", queue_size=1, flush_interval=60)
    log = DivergenceLog(tmp_path / "div.jsonl", writer=writer)
    try:
        results = [log.divergence(request_id=str(i)) for i in range(1000)]
        assert results[0] is True
        assert results.count(False) == log.stats()["dropped_queue_full"] > 0
    finally:
        log.close()


@dataclass
class _Args:
    n: int


@pytest.mark.parametrize("rotate_mb", [0.001])
def test_rotation_through_divergence_log(tmp_path: Path, rotate_mb: float) -> None:
    log = DivergenceLog(tmp_path / "div.jsonl", rotate_mb=rotate_mb, keep=2)
    for i in range(100):
        log.divergence(**example_fields(), extra=_Args(i))
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["div.jsonl", "div.jsonl.1", "div.jsonl.2"]
    recs = [r for p in tmp_path.iterdir() for r in read(p)]
    assert all(r["schema"] == SCHEMA for r in recs)
    assert read(tmp_path / "div.jsonl")[-1]["extra"] == {"n": 99}
