"""`gateway report` on a small hand-built log (see conftest.py for the data table)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.report.cli import add_report_parser, main
from gateway.report.gates import parse_gate
from gateway.report.summary import wilson_interval

from .conftest import LogSet


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    doc: dict[str, Any] = json.loads(captured.out) if captured.out else {}
    return code, doc, captured.err


def group(report: dict[str, Any], label: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [g for g in report["groups"] if g["label"] == label]
    assert len(matches) == 1, [g["label"] for g in report["groups"]]
    return matches[0]


@pytest.fixture
def report(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, doc, _ = run_json(capsys, *logs.args, "--min-count", "1")
    assert code == 0
    return doc


# --- inputs ----------------------------------------------------------------------------


def test_inputs_counts(report: dict[str, Any], logs: LogSet) -> None:
    inputs = report["inputs"]
    assert report["schema"] == "gateway.report/v1"
    assert sorted(inputs["files"]) == sorted(
        str(p) for p in (logs.a_current, logs.a_rotated, logs.b_gz)
    )
    assert inputs["lines"] == 23
    assert inputs["invalid_lines"] == 1  # the truncated last line
    assert inputs["duplicates"] == 1  # r03 logged by both replicas
    assert inputs["records"] == 16  # 10 fraud shadow + 2 noise + 4 churn
    assert inputs["events"] == 5  # 2 errors, 2 drops summaries, 1 config_reload
    assert inputs["other_events"] == {"config_reload": 1}
    assert inputs["filtered_out"] == 0
    assert report["time_range"] == {
        "first": "2026-11-25T06:00:05.000000Z",
        "last": "2026-11-25T06:05:30.000000Z",
    }
    assert [g["label"] for g in report["groups"]] == [
        "churn shadow v3->v4",
        "fraud shadow v1->v2",
        "fraud noise v1->v1",
    ]


# --- rates -----------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(3, 10) or (0, 0)
    assert lo == pytest.approx(0.1078, abs=1e-4)
    assert hi == pytest.approx(0.6032, abs=1e-4)
    lo, hi = wilson_interval(0, 10) or (0, 0)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_group_rates(report: dict[str, Any]) -> None:
    fraud = group(report, "fraud shadow v1->v2")
    assert fraud["requests"] == 10
    assert fraud["diverged"] == 3
    assert fraud["divergence_rate"] == pytest.approx(0.3)
    z = 1.959963984540054
    center = (0.3 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.3 * 0.7 / 10 + z * z / 400) / (1 + z * z / 10)
    assert fraud["divergence_ci95"] == pytest.approx([center - half, center + half])
    assert fraud["label_flips"] == 2
    assert fraud["label_flip_rate"] == pytest.approx(0.2)
    assert fraud["errors"] == 2
    assert fraud["timeouts"] == 1
    assert fraud["drops"] == 5  # 3 + 2 (the summary without shadow_version included)
    assert fraud["error_kinds"] == {"DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 1}
    assert fraud["first_ts"] == "2026-11-25T06:00:10.000000Z"
    assert fraud["last_ts"] == "2026-11-25T06:02:20.000000Z"
    # shadow 2..11 ms, primary 0.5..5 ms; linear interpolation at 0.5*9 and 0.99*9
    assert fraud["latency_ms"]["shadow"] == pytest.approx({"p50": 6.5, "p99": 10.91})
    assert fraud["latency_ms"]["primary"] == pytest.approx({"p50": 2.75, "p99": 4.955})
    churn = group(report, "churn shadow v3->v4")
    assert (churn["requests"], churn["diverged"], churn["divergence_rate"]) == (4, 1, 0.25)
    assert (churn["errors"], churn["timeouts"], churn["drops"]) == (0, 0, 0)


def test_output_percentiles(report: dict[str, Any]) -> None:
    fraud = group(report, "fraud shadow v1->v2")
    outputs = {o["output"]: o for o in fraud["outputs"]}
    assert set(outputs) == {"scores", "value"}
    scores = outputs["scores"]
    assert (scores["kind"], scores["count"], scores["diverged"]) == ("probabilities", 10, 3)
    assert scores["label_flips"] == 2
    # sorted max_abs: 0 .011 .015 .02 .025 .03 .04 .12 .3 .5 (linear interpolation)
    assert scores["metrics"]["max_abs"] == pytest.approx(
        {"p50": (0.025 + 0.03) / 2, "p90": 0.3 + 0.1 * 0.2, "p99": 0.3 + 0.91 * 0.2, "max": 0.5}
    )
    assert scores["metrics"]["js_max"]["max"] == pytest.approx(0.2)
    assert scores["metrics"]["top1_agreement"]["p50"] == 1.0
    assert "agreement" not in scores["metrics"]  # not logged for probabilities
    value = outputs["value"]
    assert value["kind"] == "regression"
    assert value["metrics"]["max_abs"]["max"] == pytest.approx(0.0009)
    assert value["metrics"]["max_rel"]["max"] == pytest.approx(0.00009)
    assert set(value["metrics"]) == {"max_abs", "max_rel"}


# --- features --------------------------------------------------------------------------


def test_feature_check_slices(report: dict[str, Any]) -> None:
    fraud = group(report, "fraud shadow v1->v2")
    assert fraud["feature_checks"] == [
        {
            "feature": "amount",
            "kind": "out_of_range",
            "requests": 2,  # r05, r08 (r08 on both sides counts once)
            "diverged": 2,
            "rate": 1.0,
            "lift": pytest.approx(1 / 0.3),
        },
        {
            "feature": "country",
            "kind": "unseen_category",
            "requests": 1,
            "diverged": 0,
            "rate": 0.0,
            "lift": 0.0,
        },
    ]
    assert fraud["feature_mismatch_counts"] == [
        {"feature": "amount", "kind": "out_of_range", "primary": 2, "shadow": 1},
        {"feature": "country", "kind": "unseen_category", "primary": 0, "shadow": 1},
    ]


def test_feature_value_slices(report: dict[str, Any]) -> None:
    fraud = group(report, "fraud shadow v1->v2")
    got = [
        (s["feature"], s["bucket"], s["requests"], s["diverged"], s["rate"], s["lift"])
        for s in fraud["feature_values"]
    ]
    third = pytest.approx(0.5 / 0.3)
    # amount 1..10 in 5 quantile buckets (edges 2.8 4.6 6.4 8.2); ssn is redacted -> skipped
    assert got == [
        ("country", "BR", 3, 3, 1.0, pytest.approx(1 / 0.3)),
        ("amount", "[3, 4]", 2, 1, 0.5, third),
        ("amount", "[5, 6]", 2, 1, 0.5, third),
        ("amount", "[7, 8]", 2, 1, 0.5, third),
        ("country", "DE", 5, 0, 0.0, 0.0),
        ("amount", "[1, 2]", 2, 0, 0.0, 0.0),
        ("amount", "[9, 10]", 2, 0, 0.0, 0.0),
        ("country", "FR", 2, 0, 0.0, 0.0),
    ]
    numeric = fraud["feature_values"][1]
    assert (numeric["type"], numeric["lo"], numeric["hi"]) == ("numeric", 3.0, 4.0)


def test_min_count_and_top_limit(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = run_json(capsys, *logs.args, "--min-count", "3", "--top", "1")
    assert code == 0
    fraud = group(doc, "fraud shadow v1->v2")
    assert fraud["feature_checks"] == []  # the largest check slice has 2 requests
    assert [(s["feature"], s["bucket"]) for s in fraud["feature_values"]] == [("country", "BR")]


def test_buckets_option(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = run_json(capsys, *logs.args, "--min-count", "1", "--buckets", "2")
    assert code == 0
    fraud = group(doc, "fraud shadow v1->v2")
    amount = sorted(
        (s["bucket"], s["requests"], s["diverged"])
        for s in fraud["feature_values"]
        if s["feature"] == "amount"
    )
    assert amount == [("[1, 5]", 5, 2), ("[6, 10]", 5, 1)]  # median edge 5.5


# --- worst, histogram, timeline, noise -------------------------------------------------


def test_worst_requests(report: dict[str, Any]) -> None:
    fraud = group(report, "fraud shadow v1->v2")
    worst = fraud["worst_requests"]
    assert [w["request_id"] for w in worst] == [
        "r08",
        "r03",
        "r05",
        "r07",
        "r04",
        "r10",
        "r02",
        "r09",
        "r01",
        "r06",
    ]
    assert worst[0] == {
        "request_id": "r08",
        "ts": "2026-11-25T06:01:40.000000Z",
        "replica": "host-b:8500",
        "max_abs": 0.5,
        "js_max": 0.2,
        "diverged": True,
        "label_flip": True,
        "diverged_outputs": ["scores"],
    }
    assert worst[1]["replica"] == "host-a:8500"  # duplicate kept from the first file


def test_worst_limit(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    _, doc, _ = run_json(capsys, *logs.args, "--worst", "3")
    fraud = group(doc, "fraud shadow v1->v2")
    assert [w["request_id"] for w in fraud["worst_requests"]] == ["r08", "r03", "r05"]


def test_histogram_and_timeline(report: dict[str, Any]) -> None:
    fraud = group(report, "fraud shadow v1->v2")
    hist = fraud["histograms"]["max_abs"]
    assert hist["zero"] == 1  # r06
    assert [(round(2 * math.log10(b["lo"])), b["count"]) for b in hist["bins"]] == [
        (-4, 5),  # .011 .015 .02 .025 .03 in [1e-2, 10**-1.5)
        (-3, 1),  # .04
        (-2, 2),  # .12 .3
        (-1, 1),  # .5
    ]
    assert fraud["timeline"] == [
        {"minute": "2026-11-25T06:00:00Z", "requests": 4, "diverged": 1, "rate": 0.25},
        {"minute": "2026-11-25T06:01:00Z", "requests": 4, "diverged": 2, "rate": 0.5},
        {"minute": "2026-11-25T06:02:00Z", "requests": 2, "diverged": 0, "rate": 0.0},
    ]


def test_noise_floor(report: dict[str, Any]) -> None:
    assert report["noise_floor"] == [
        {
            "model": "fraud",
            "primary_version": 1,
            "requests": 2,
            "diverged": 0,
            "deterministic": True,
            "max_abs": 0.0,
            "floor": {
                "scores": {
                    name: {"max": pytest.approx(v), "p99": pytest.approx(v)}
                    for name, v in {
                        "max_abs": 0.0,
                        "js_mean": 0.0,
                        "js_max": 0.0,
                        "top1_agreement": 1.0,
                        "topk_overlap": 1.0,
                    }.items()
                }
            },
        }
    ]


# --- filters ---------------------------------------------------------------------------


def test_model_filter(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = run_json(capsys, *logs.args, "--model", "churn")
    assert code == 0
    assert [g["label"] for g in doc["groups"]] == ["churn shadow v3->v4"]
    assert doc["inputs"]["records"] == 4
    assert doc["noise_floor"] == []


def test_time_filter(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = run_json(
        capsys, *logs.args, "--since", "2026-11-25T06:01:00Z", "--until", "2026-11-25T06:02:00"
    )
    assert code == 0
    assert [g["label"] for g in doc["groups"]] == ["fraud shadow v1->v2"]
    fraud = doc["groups"][0]
    assert (fraud["requests"], fraud["diverged"]) == (4, 2)  # r05..r08
    assert fraud["errors"] == 0  # the error events are at 06:03
    assert doc["inputs"]["filters"]["since"] == "2026-11-25T06:01:00+00:00"


def test_filters_leaving_nothing_exit_2(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_json(capsys, *logs.args, "--model", "nope")
    assert code == 2
    assert "no records match" in err


# --- gates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gates", "code", "failed"),
    [
        (["divergence_rate>0.3"], 0, []),
        (["divergence_rate>0.25"], 1, ["fraud shadow v1->v2"]),
        (["divergence_rate>=0.25"], 1, ["churn shadow v3->v4", "fraud shadow v1->v2"]),
        (["label_flip_rate>=0.2"], 1, ["fraud shadow v1->v2"]),
        (["p99.max_abs>0.5"], 0, []),
        (["p99.max_abs>0.48"], 1, ["fraud shadow v1->v2"]),  # 0.482
        (["p99.scores.max_abs > 0.48"], 1, ["fraud shadow v1->v2"]),
        (["p99.value.max_abs>0.48"], 0, []),
        (["max.js_max>0.1"], 1, ["fraud shadow v1->v2"]),  # churn has no js: not failed
        (["errors>0"], 1, ["fraud shadow v1->v2"]),
        (["timeouts>1", "drops>=1"], 1, ["fraud shadow v1->v2"]),
        (["ci_low>10%"], 1, ["fraud shadow v1->v2"]),  # 0.1078
        (["requests<5"], 1, ["churn shadow v3->v4"]),  # noise groups are not gated
    ],
)
def test_fail_if(
    logs: LogSet,
    capsys: pytest.CaptureFixture[str],
    gates: list[str],
    code: int,
    failed: list[str],
) -> None:
    argv = [*logs.args]
    for gate in gates:
        argv += ["--fail-if", gate]
    got_code, doc, err = run_json(capsys, *argv)
    assert got_code == code
    failed_groups = sorted({r["group"] for r in doc["gates"]["results"] if r["failed"]})
    assert failed_groups == failed
    assert doc["gates"]["failed"] is bool(failed)
    for label in failed:
        assert f"gate failed: {label}: " in err
    assert len(doc["gates"]["results"]) == 2 * len(gates)  # 2 non-noise groups


def test_gate_result_structure(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    _, doc, err = run_json(capsys, *logs.args, "--fail-if", "errors>0")
    fraud = next(r for r in doc["gates"]["results"] if r["model"] == "fraud")
    assert fraud == {
        "group": "fraud shadow v1->v2",
        "model": "fraud",
        "comparison": "shadow",
        "primary_version": 1,
        "shadow_version": 2,
        "expr": "errors>0",
        "metric": "errors",
        "op": ">",
        "threshold": 0.0,
        "value": 2.0,
        "failed": True,
    }
    assert "gate failed: fraud shadow v1->v2: errors>0 (value 2)" in err


@pytest.mark.parametrize(
    "expr",
    [
        "divergence_rate>>1",
        "divergence_rate",
        "__import__('os')>1",
        "bogus>1",
        "p42.max_abs>1",
        "p99.bogus>1",
        "errors>1e999",
        "errors > x",
    ],
)
def test_bad_gate_exits_2(logs: LogSet, capsys: pytest.CaptureFixture[str], expr: str) -> None:
    code, _, err = run_json(capsys, *logs.args, "--fail-if", expr)
    assert code == 2
    assert "--fail-if" in err


def test_parse_gate() -> None:
    gate = parse_gate(" p99.my.out.js_mean <= 1.5e-2 ")
    assert (gate.stat, gate.output, gate.output_metric, gate.op) == (
        "p99",
        "my.out",
        "js_mean",
        "<=",
    )
    assert gate.threshold == pytest.approx(0.015)
    assert parse_gate("divergence_rate>1%").threshold == pytest.approx(0.01)


# --- bad inputs ------------------------------------------------------------------------


def test_no_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_json(capsys, str(tmp_path / "missing*.jsonl"))
    assert code == 2
    assert "no such file" in err
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n{broken\n")
    code, _, err = run_json(capsys, str(garbage))
    assert code == 2
    assert "no valid records" in err
    bad_gz = tmp_path / "bad.jsonl.gz"
    bad_gz.write_bytes(b"\x00\x01not gzip")
    code, _, err = run_json(capsys, str(bad_gz))
    assert code == 2
    assert "unreadable" in err


def test_unreadable_file_is_skipped(
    logs: LogSet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_gz = tmp_path / "bad.jsonl.gz"
    bad_gz.write_bytes(b"\x00\x01not gzip")
    code, doc, err = run_json(capsys, *logs.args, str(bad_gz))
    assert code == 0
    assert doc["inputs"]["unreadable_files"] == [str(bad_gz)]
    assert doc["inputs"]["records"] == 16
    assert "unreadable, skipped" in err


def test_bad_timestamp_exit_2(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_json(capsys, *logs.args, "--since", "yesterday")
    assert code == 2
    assert "--since" in err


def test_same_file_twice_is_read_once(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    _, doc, _ = run_json(capsys, *logs.args, str(logs.a_rotated), str(logs.root / "a"))
    assert len(doc["inputs"]["files"]) == 3
    assert doc["inputs"]["duplicates"] == 1


# --- renderers and entry points --------------------------------------------------------


def test_terminal_output(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*logs.args, "--min-count", "1"])
    out = capsys.readouterr().out
    assert code == 0
    for text in (
        "fraud shadow v1->v2",
        "30.00%",
        "[10.78%, 60.32%]",
        "20.00%",  # label flips
        "deterministic over 2 replayed requests",
        "value: BR",
        "check: out_of_range",
        "r08",
    ):
        assert text in out, text


def test_html_output_is_self_contained(logs: LogSet, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert main([*logs.args, "--html", str(page), "--min-count", "1", "--json"]) == 0
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "src=", "@import", "url("):
        assert needle not in html, needle
    assert html.count("<svg") >= 4
    assert "<b>evil</b>" not in html
    assert "&lt;b&gt;evil&lt;/b&gt;" in html
    assert 'id="js-status"' in html
    # check and value slices form one list sorted by lift (BR: 3.33x, unseen country: 0x)
    assert html.index("value: BR") < html.index("check: unseen_category")
    assert html.index("check: out_of_range") < html.index("value: [3, 4]")


def test_add_report_parser(logs: LogSet, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    add_report_parser(sub)
    args = parser.parse_args(["report", *logs.args, "--json", "--fail-if", "errors>5"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]["records"] == 16


def test_module_entry_point(logs: LogSet) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.report.cli", *logs.args, "--json", "--fail-if", "errors>0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["gates"]["failed"] is True


# --- edge cases of the definitions -----------------------------------------------------


def _probabilities(rid: str, max_abs: float, js: float, flip: bool, diverged: bool) -> str:
    record = {
        "schema": "gateway.divergence/v1",
        "ts": "2026-11-25T07:00:00.000000Z",
        "event": "divergence",
        "request_id": rid,
        "model": "m",
        "comparison": "shadow",
        "primary_version": 1,
        "shadow_version": 2,
        "outputs": {
            "p": {
                "kind": "probabilities",
                "diverged": diverged,
                "label_flip": flip,
                "max_abs": max_abs,
                "js_mean": js / 2,
                "js_max": js,
            }
        },
        "diverged": diverged,
    }
    return json.dumps(record) + "\n"


def test_worst_ties_and_flips_that_do_not_diverge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A label flip is counted even when the rule says flips do not diverge
    # (label_flip: false in the model's divergence config); equal max_abs
    # values are ordered by js_max, then request id.
    log = tmp_path / "divergence.jsonl"
    log.write_text(
        _probabilities("a", 0.2, 0.01, flip=True, diverged=False)
        + _probabilities("b", 0.2, 0.03, flip=False, diverged=True)
        + _probabilities("c", 0.2, 0.02, flip=True, diverged=True)
        + _probabilities("d", 0.1, 0.09, flip=False, diverged=False)
        + _probabilities("e", 0.2, 0.02, flip=False, diverged=False)
    )
    code, doc, _ = run_json(capsys, str(log))
    assert code == 0
    (g,) = doc["groups"]
    assert (g["requests"], g["diverged"], g["label_flips"]) == (5, 2, 2)
    assert g["label_flip_rate"] == pytest.approx(0.4)
    assert [w["request_id"] for w in g["worst_requests"]] == ["b", "c", "e", "a", "d"]
    assert [w["label_flip"] for w in g["worst_requests"]] == [False, True, False, True, False]
    _, doc, _ = run_json(capsys, str(log), "--worst", "3")
    assert [w["request_id"] for w in doc["groups"][0]["worst_requests"]] == ["b", "c", "e"]
