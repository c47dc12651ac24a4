"""`loadtest.bench_preprocessing` end to end with tiny timings: structure only, never speed."""

from __future__ import annotations

import pytest

from loadtest.bench_preprocessing import main, run


def test_bench_measures_each_cost_for_batch_1_and_64() -> None:
    rows = run(seconds=0.02)
    assert [r["batch"] for r in rows] == [1, 64]
    for r in rows:
        parts = ("checks_us", "validate_us", "preprocessing_us", "skew_us", "model_us")
        assert min(r[k] for k in parts) > 0
        assert r["added_us"] == pytest.approx(
            r["checks_us"] + r["validate_us"] + r["preprocessing_us"] + r["skew_us"]
        )
        assert r["overhead_vs_model"] == pytest.approx(r["added_us"] / r["model_us"])
        assert r["prepared_features"] == 5


def test_bench_prints_one_row_per_batch_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seconds", "0.01"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[-3].split()[:9] == [
        "batch",
        "checks",
        "validate",
        "preproc",
        "skew",
        "added",
        "model",
        "added/model",
        "added/row",
    ]
    assert [line.split()[0] for line in lines[-2:]] == ["1", "64"]
    assert all(len(line.split()) == 9 for line in lines[-2:])
