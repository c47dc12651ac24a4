"""A small multi-file divergence log whose every number is computed by hand in the tests.

fraud shadow v1->v2, 10 unique requests (r01..r10):

    id   minute diverged flip scores.max_abs js_max  amount country  mismatches
    r01  06:00  no       no   0.011          0.001   1      DE
    r02  06:00  no       no   0.020          0.002   2      DE
    r03  06:00  YES      YES  0.300          0.080   3      BR       (in replica a .1 AND b .gz)
    r04  06:00  no       no   0.030          0.003   4      DE
    r05  06:01  YES      no   0.120          0.020   5      BR       primary amount/out_of_range
    r06  06:01  no       no   0.000 (value 0) 0.000  6      FR
    r07  06:01  no       no   0.040          0.004   7      FR
    r08  06:01  YES      YES  0.500          0.200   8      BR       primary+shadow amount/out_of_range
    r09  06:02  no       no   0.015          0.001   9      DE       shadow country/unseen_category
    r10  06:02  no       no   0.025          0.002   10     DE       (ssn redacted)

Latencies: request rNN has primary 0.5 * NN ms and shadow 1 + NN ms.

plus fraud noise v1->v1 (2 identical replays), churn shadow v3->v4 (4 requests, 1
diverged), 2 shadow_error (DEADLINE_EXCEEDED, UNAVAILABLE), 2 shadow_drops summaries for
the fraud shadow lane as the gateway writes them (count 3 with shadow_version 2 from
replica b; count 2 with shadow_version null, i.e. before the lane compared anything, from
replica a), 1 unknown event, and a truncated last line. Files: a/divergence.jsonl.1
(older), a/divergence.jsonl (newest, ends with a truncated line) and b/divergence.jsonl.gz.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCHEMA = "gateway.divergence/v1"

FRAUD = [
    # id, second offset, diverged, flip, max_abs, js, value_max_abs, amount, country, fm_p, fm_s
    ("r01", 10, False, False, 0.011, 0.001, 0.0001, 1, "DE", [], []),
    ("r02", 20, False, False, 0.020, 0.002, 0.0002, 2, "DE", [], []),
    ("r03", 30, True, True, 0.300, 0.080, 0.0003, 3, "BR", [], []),
    ("r04", 40, False, False, 0.030, 0.003, 0.0004, 4, "DE", [], []),
    ("r05", 70, True, False, 0.120, 0.020, 0.0005, 5, "BR", [("amount", "out_of_range")], []),
    ("r06", 80, False, False, 0.000, 0.000, 0.0, 6, "FR", [], []),
    ("r07", 90, False, False, 0.040, 0.004, 0.0006, 7, "FR", [], []),
    (
        "r08",
        100,
        True,
        True,
        0.500,
        0.200,
        0.0007,
        8,
        "BR",
        [("amount", "out_of_range")],
        [("amount", "out_of_range")],
    ),
    ("r09", 130, False, False, 0.015, 0.001, 0.0008, 9, "DE", [], [("country", "unseen_category")]),
    ("r10", 140, False, False, 0.025, 0.002, 0.0009, 10, "DE", [], []),
]


def ts(seconds: float) -> str:
    minute, sec = divmod(seconds, 60)
    return f"2026-11-25T06:{int(minute):02d}:{sec:09.6f}Z"


def fraud_record(row: tuple[Any, ...], replica: str) -> dict[str, Any]:
    rid, sec, diverged, flip, max_abs, js, vma, amount, country, fm_p, fm_s = row
    # replica b's model takes amount as a [batch, 1] tensor: its first row is a 1-value list
    features: dict[str, Any] = {
        "amount": [amount] if replica == "host-b:8500" else amount,
        "country": country,
    }
    if rid == "r10":
        features["ssn"] = "<redacted>"
    return {
        "schema": SCHEMA,
        "ts": ts(sec),
        "event": "divergence",
        "request_id": rid,
        "replica": replica,
        "model": "fraud",
        "comparison": "shadow",
        "primary_version": 1,
        "shadow_version": 2,
        "routing_key_hash": "9f86d081",
        "rows": 1,
        "latency_ms": {"primary": 0.5 * int(rid[1:]), "shadow": 1.0 + int(rid[1:])},
        "outputs": {
            "scores": {
                "kind": "probabilities",
                "diverged": diverged,
                "label_flip": flip,
                "top1_agreement": 0.0 if flip else 1.0,
                "topk_overlap": 2 / 3 if flip else 1.0,
                "max_abs": max_abs,
                "js_mean": js,
                "js_max": js,
            },
            "value": {
                "kind": "regression",
                "diverged": False,
                "max_abs": vma,
                "max_rel": vma / 10,
                "within": True,
            },
        },
        "diverged": diverged,
        "within_noise": False,
        "feature_mismatches": {
            "primary": [
                {"feature": f, "kind": k, "value": 400.0, "count": 1, "reference": "[1, 3]"}
                for f, k in fm_p
            ],
            "shadow": [{"feature": f, "kind": k, "count": 1} for f, k in fm_s],
        },
        "features": features,
        "input_digest": f"sha256:{rid}",
        "future_field": {"nested": [1, 2, 3]},  # unknown fields are ignored
    }


def noise_record(rid: str, sec: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "ts": ts(sec),
        "event": "divergence",
        "request_id": rid,
        "model": "fraud",
        "comparison": "noise",
        "primary_version": 1,
        "shadow_version": 1,
        "rows": 1,
        "outputs": {
            "scores": {
                "kind": "probabilities",
                "diverged": False,
                "label_flip": False,
                "top1_agreement": 1.0,
                "topk_overlap": 1.0,
                "max_abs": 0.0,
                "js_mean": 0.0,
                "js_max": 0.0,
            }
        },
        "diverged": False,
        "feature_mismatches": {"primary": [], "shadow": []},
    }


CHURN_MAX_ABS = {"c1": 0.001, "c2": 0.002, "c3": 0.003, "c4": 0.2}


def churn_record(rid: str, sec: float) -> dict[str, Any]:
    diverged = rid == "c4"
    return {
        "schema": SCHEMA,
        "ts": ts(sec),
        "event": "divergence",
        "request_id": rid,
        "model": "churn",
        "comparison": "shadow",
        "primary_version": 3,
        "shadow_version": 4,
        "outputs": {
            "p": {
                "kind": "regression",
                "diverged": diverged,
                "max_abs": CHURN_MAX_ABS[rid],
                "max_rel": 0.01,
                "within": not diverged,
            }
        },
        "diverged": diverged,
        "features": {"segment": "<b>evil</b>" if diverged else "plain"},
    }


def event(name: str, sec: float, rid: str | None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"schema": SCHEMA, "ts": ts(sec), "event": name}
    if rid is not None:
        record["request_id"] = rid
    return {**record, **extra}


def drops(sec: float, count: int, shadow_version: int | None, replica: str) -> dict[str, Any]:
    """A ``shadow_drops`` summary exactly as `Mirror._flush_drops` writes it."""
    return event(
        "shadow_drops",
        sec,
        None,
        replica=replica,
        model="fraud",
        shadow_version=shadow_version,
        count=count,
        comparison="shadow",
        shadow_target="canary",
    )


@dataclass
class LogSet:
    root: Path
    a_current: Path
    a_rotated: Path
    b_gz: Path

    @property
    def args(self) -> list[str]:
        """Inputs as a user would pass them: a glob for replica a, a path for replica b."""
        return [str(self.root / "a" / "divergence.jsonl*"), str(self.b_gz)]


def _lines(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture
def logs(tmp_path: Path) -> LogSet:
    by_id = {row[0]: row for row in FRAUD}
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    rotated = [fraud_record(by_id[r], "host-a:8500") for r in ("r01", "r02", "r03", "r04", "r05")]
    rotated += [noise_record("n1", 5), churn_record("c1", 300), churn_record("c2", 310)]
    current = [fraud_record(by_id[r], "host-a:8500") for r in ("r06", "r07")]
    current += [
        event(
            "shadow_error",
            200,
            "e1",
            model="fraud",
            comparison="shadow",
            primary_version=1,
            shadow_version=2,
            error="DEADLINE_EXCEEDED",
        ),
        event("config_reload", 210, "x1", model="fraud"),
        drops(215, 2, None, "host-a:8500"),
        churn_record("c3", 320),
    ]
    replica_b = [fraud_record(by_id[r], "host-b:8500") for r in ("r03", "r08", "r09", "r10")]
    replica_b += [
        noise_record("n2", 6),
        churn_record("c4", 330),
        event("shadow_error", 220, "e2", model="fraud", shadow_version=2, error="UNAVAILABLE"),
        drops(230, 3, 2, "host-b:8500"),
    ]
    a_rotated = a_dir / "divergence.jsonl.1"
    a_rotated.write_text(_lines(rotated))
    a_current = a_dir / "divergence.jsonl"
    a_current.write_text(_lines(current) + '{"schema": "gateway.divergence/v1", "ts": "2026-1')
    b_gz = b_dir / "divergence.jsonl.gz"
    with gzip.open(b_gz, "wt") as fh:
        fh.write(_lines(replica_b))
    return LogSet(tmp_path, a_current, a_rotated, b_gz)
