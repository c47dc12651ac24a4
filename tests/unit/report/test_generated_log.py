"""`gateway report` on a generated multi-replica, multi-file log, checked against a
second, deliberately naive implementation: a Python loop over the JSON lines.

Layout (as two gateways with rotation would leave it, plus a shipped copy):

    a/divergence.jsonl, a/divergence.jsonl.1.gz, a/divergence.jsonl.2.gz   replica host-a
    b/divergence.jsonl, b/divergence.jsonl.1                               replica host-b
    c/copy.jsonl   the first 40 divergence lines of a/divergence.jsonl.2.gz again

Every expected number below is computed from the lines themselves, following
the definitions in `gateway.report.summary`; nothing is hard-coded, so a
change of the generator or the seed keeps the test meaningful.
"""

from __future__ import annotations

import gzip
import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.report.cli import main
from loadtest.gen_divergence_log import generate

Z = statistics.NormalDist().inv_cdf(0.975)
BUCKETS = 5
GroupKey = tuple[str, str, int, int]


def _read(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            yield json.loads(line)


class Expected:
    """The report's numbers, computed record by record in plain Python."""

    def __init__(self, files: list[Path]) -> None:
        seen: set[tuple[Any, ...]] = set()
        self.lines = 0
        self.duplicates = 0
        self.records: dict[GroupKey, list[dict[str, Any]]] = defaultdict(list)
        self.events: list[dict[str, Any]] = []
        for path in files:
            for rec in _read(path):
                self.lines += 1
                key = (
                    rec["event"],
                    rec["model"],
                    rec.get("request_id"),
                    rec.get("shadow_version"),
                    rec.get("comparison"),
                )
                if rec.get("request_id") is not None:
                    if key in seen:
                        self.duplicates += 1
                        continue
                    seen.add(key)
                if rec["event"] == "divergence":
                    group = (
                        rec["model"],
                        rec["comparison"],
                        rec["primary_version"],
                        rec["shadow_version"],
                    )
                    self.records[group].append(rec)
                else:
                    self.events.append(rec)

    def group(self, key: GroupKey) -> dict[str, Any]:
        recs = self.records[key]
        model, comparison, pv, sv = key
        n = len(recs)
        div = sum(r["diverged"] for r in recs)
        flips = sum(any(o.get("label_flip") for o in r["outputs"].values()) for r in recs)
        p = div / n
        center = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
        half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
        errors = [
            e
            for e in self.events
            if e["event"] == "shadow_error" and e["model"] == model and e["shadow_version"] == sv
        ]
        drops = sum(
            e["count"]
            for e in self.events
            if e["event"] == "shadow_drops" and e["model"] == model and e["shadow_version"] == sv
        )
        return {
            "requests": n,
            "diverged": div,
            "divergence_rate": p,
            "divergence_ci95": [max(0.0, center - half), min(1.0, center + half)],
            "label_flips": flips,
            "label_flip_rate": flips / n,
            "errors": len(errors) if comparison == "shadow" else 0,
            "timeouts": sum(e["error"] == "DEADLINE_EXCEEDED" for e in errors)
            if comparison == "shadow"
            else 0,
            "drops": drops if comparison == "shadow" else 0,
            "error_kinds": dict(Counter(e["error"] for e in errors))
            if comparison == "shadow"
            else {},
        }

    def percentiles(self, key: GroupKey, output: str, metric: str) -> dict[str, float]:
        values = [r["outputs"][output][metric] for r in self.records[key]]
        q = np.percentile(values, [50, 90, 99])  # linear interpolation
        return {"p50": q[0], "p90": q[1], "p99": q[2], "max": max(values)}

    def latency(self, key: GroupKey, side: str) -> dict[str, float]:
        values = [r["latency_ms"][side] for r in self.records[key]]
        q = np.percentile(values, [50, 99])
        return {"p50": q[0], "p99": q[1]}

    def feature_checks(self, key: GroupKey) -> dict[tuple[str, str], tuple[int, int]]:
        ids: dict[tuple[str, str], set[str]] = defaultdict(set)
        diverged: dict[str, bool] = {}
        for r in self.records[key]:
            diverged[r["request_id"]] = r["diverged"]
            for side in ("primary", "shadow"):
                for m in r["feature_mismatches"][side]:
                    ids[(m["feature"], m["kind"])].add(r["request_id"])
        return {k: (len(v), sum(diverged[i] for i in v)) for k, v in ids.items()}

    def country_slices(self, key: GroupKey) -> dict[str, tuple[int, int]]:
        n: Counter[str] = Counter()
        d: Counter[str] = Counter()
        for r in self.records[key]:
            n[r["features"]["country"]] += 1
            d[r["features"]["country"]] += r["diverged"]
        return {c: (n[c], d[c]) for c in n}

    def amount_slices(self, key: GroupKey) -> list[tuple[float, float, int, int]]:
        recs = self.records[key]
        x = np.array([r["features"]["amount"] for r in recs], dtype=float)
        edges = sorted(set(np.quantile(x, [j / BUCKETS for j in range(1, BUCKETS)]).tolist()))
        buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in recs:
            buckets[sum(e <= r["features"]["amount"] for e in edges)].append(r)
        out = []
        for b in sorted(buckets):
            amounts = [r["features"]["amount"] for r in buckets[b]]
            div = sum(r["diverged"] for r in buckets[b])
            out.append((min(amounts), max(amounts), len(amounts), div))
        return out

    def worst(self, key: GroupKey, limit: int) -> list[str]:
        def score(r: dict[str, Any]) -> tuple[float, float, str]:
            ma = max(o["max_abs"] for o in r["outputs"].values())
            js = max(o.get("js_max", o.get("js_mean", -1.0)) for o in r["outputs"].values())
            return (-ma, -js, r["request_id"])

        return [r["request_id"] for r in sorted(self.records[key], key=score)[:limit]]

    def timeline(self, key: GroupKey) -> list[dict[str, Any]]:
        n: Counter[str] = Counter()
        d: Counter[str] = Counter()
        for r in self.records[key]:
            minute = r["ts"][:16] + ":00Z"
            n[minute] += 1
            d[minute] += r["diverged"]
        return [
            {"minute": m, "requests": n[m], "diverged": d[m], "rate": d[m] / n[m]}
            for m in sorted(n)
        ]

    def histogram(self, key: GroupKey) -> tuple[int, dict[int, int]]:
        zero = 0
        bins: Counter[int] = Counter()
        for r in self.records[key]:
            ma = max(o["max_abs"] for o in r["outputs"].values())
            if ma <= 0:
                zero += 1
            else:
                bins[math.floor(2 * math.log10(ma))] += 1
        return zero, dict(bins)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Expected]:
    root = tmp_path_factory.mktemp("generated")
    a = generate(
        root / "a" / "divergence.jsonl", 2500, seed=1, files=3, gz=True, replica="host-a:8500"
    )
    b = generate(root / "b" / "divergence.jsonl", 1500, seed=2, files=2, replica="host-b:8500")
    oldest_a = root / "a" / "divergence.jsonl.2.gz"
    copied = [rec for rec in _read(oldest_a) if rec["event"] == "divergence"][:40]
    (root / "c").mkdir()
    (root / "c" / "copy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in copied))
    files = [*a, *b, root / "c" / "copy.jsonl"]
    args = [str(root / "a" / "divergence.jsonl*"), str(root / "b"), str(root / "c" / "*.jsonl")]
    return args, Expected(files)


@pytest.fixture(scope="module")
def report(generated: tuple[list[str], Expected]) -> dict[str, Any]:
    import contextlib
    import io

    args, _ = generated
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args, "--json", "--min-count", "1", "--top", "1000", "--worst", "25"])
    assert code == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def _groups(report: dict[str, Any]) -> dict[GroupKey, dict[str, Any]]:
    return {
        (g["model"], g["comparison"], g["primary_version"], g["shadow_version"]): g
        for g in report["groups"]
    }


def test_inputs_and_groups(report: dict[str, Any], generated: tuple[list[str], Expected]) -> None:
    _, exp = generated
    inputs = report["inputs"]
    assert len(inputs["files"]) == 6
    assert inputs["lines"] == exp.lines == 4040
    assert inputs["invalid_lines"] == 0
    assert inputs["duplicates"] == exp.duplicates == 40
    assert inputs["records"] == sum(len(v) for v in exp.records.values())
    assert inputs["events"] == len(exp.events)
    assert inputs["other_events"] == {}
    assert set(_groups(report)) == set(exp.records)
    assert len(exp.records) == 4  # fraud/churn x shadow/noise


def test_rates_interval_errors_and_drops(
    report: dict[str, Any], generated: tuple[list[str], Expected]
) -> None:
    _, exp = generated
    for key, group in _groups(report).items():
        want = exp.group(key)
        for field, value in want.items():
            if isinstance(value, float):
                assert group[field] == pytest.approx(value, rel=1e-12), (key, field)
            elif field == "divergence_ci95":
                assert group[field] == pytest.approx(value, rel=1e-12), key
            else:
                assert group[field] == value, (key, field)
    fraud = _groups(report)[("fraud", "shadow", 1, 2)]
    assert fraud["diverged"] > 0 and fraud["label_flips"] > 0 and fraud["drops"] > 0


def test_output_and_latency_percentiles(
    report: dict[str, Any], generated: tuple[list[str], Expected]
) -> None:
    _, exp = generated
    for key, group in _groups(report).items():
        outputs = {o["output"]: o for o in group["outputs"]}
        assert set(outputs) == {"scores", "value"}
        for name, metrics in (
            ("scores", ("max_abs", "js_mean", "js_max", "top1_agreement", "topk_overlap")),
            ("value", ("max_abs", "max_rel")),
        ):
            assert set(outputs[name]["metrics"]) == set(metrics)
            for metric in metrics:
                assert outputs[name]["metrics"][metric] == pytest.approx(
                    exp.percentiles(key, name, metric), rel=1e-9, abs=1e-12
                ), (key, name, metric)
        for side in ("primary", "shadow"):
            assert group["latency_ms"][side] == pytest.approx(exp.latency(key, side)), key


def test_feature_slices(report: dict[str, Any], generated: tuple[list[str], Expected]) -> None:
    _, exp = generated
    for key in (("fraud", "shadow", 1, 2), ("churn", "shadow", 3, 4)):
        group = _groups(report)[key]
        rate = group["divergence_rate"]
        checks = {(s["feature"], s["kind"]): s for s in group["feature_checks"]}
        want_checks = exp.feature_checks(key)
        assert {k: (s["requests"], s["diverged"]) for k, s in checks.items()} == want_checks
        assert ("country", "unseen_category") in want_checks
        for (n, div), s in zip(want_checks.values(), [checks[k] for k in want_checks], strict=True):
            assert s["rate"] == pytest.approx(div / n)
            assert s["lift"] == pytest.approx(div / n / rate)
        values = group["feature_values"]
        assert all(s["feature"] in ("amount", "country") for s in values)  # ssn is redacted
        countries = {
            s["bucket"]: (s["requests"], s["diverged"]) for s in values if s["feature"] == "country"
        }
        assert countries == exp.country_slices(key)
        amounts = sorted(
            (s["lo"], s["hi"], s["requests"], s["diverged"])
            for s in values
            if s["feature"] == "amount"
        )
        assert amounts == exp.amount_slices(key)
        assert len(amounts) == BUCKETS
        # ranked by lift, then rate, then requests
        lifts = [s["lift"] for s in group["feature_checks"]]
        assert lifts == sorted(lifts, reverse=True)


def test_worst_requests_histogram_timeline(
    report: dict[str, Any], generated: tuple[list[str], Expected]
) -> None:
    _, exp = generated
    for key, group in _groups(report).items():
        worst = group["worst_requests"]
        if key[1] == "shadow":
            assert [w["request_id"] for w in worst] == exp.worst(key, 25), key
        assert group["timeline"] == exp.timeline(key)
        zero, bins = exp.histogram(key)
        hist = group["histograms"]["max_abs"]
        assert hist["zero"] == zero
        assert {round(2 * math.log10(b["lo"])): b["count"] for b in hist["bins"]} == bins
    noise = {(f["model"], f["primary_version"]): f for f in report["noise_floor"]}
    assert set(noise) == {("fraud", 1), ("churn", 3)}
    assert all(f["deterministic"] for f in noise.values())


def test_fail_if_matches_expected_rates(
    generated: tuple[list[str], Expected], capsys: pytest.CaptureFixture[str]
) -> None:
    args, exp = generated
    rates = {k: exp.group(k)["divergence_rate"] for k in exp.records if k[1] == "shadow"}
    low, high = sorted(rates.values())
    assert low < high
    threshold = (low + high) / 2
    code = main([*args, "--fail-if", f"divergence_rate>{threshold!r}"])
    err = capsys.readouterr().err
    assert code == 1
    worst_key = max(rates, key=lambda k: rates[k])
    assert f"gate failed: {worst_key[0]} shadow v{worst_key[2]}->v{worst_key[3]}" in err
    assert err.count("gate failed:") == 1
    assert main([*args, "--fail-if", f"divergence_rate>{high!r}"]) == 0
