"""`loadtest.bench` end to end in a tiny configuration: structure only, never speed; and
the load generator over each of its protocols against a real gateway."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from loadtest.bench import (
    EXTRA_PROTOCOLS,
    PROFILE_KEEP_MARKER,
    BenchReport,
    BenchSettings,
    build_repository,
    build_rows,
    parse_metrics,
    render_profile_markdown,
    render_table,
    run_bench,
    shadow_counters,
    summarize_profile,
)
from loadtest.loadgen import PROTOCOLS, REST_PROTOCOLS, LoadResult, LoadSpec, run_load

TINY = BenchSettings(
    rounds=1,
    workers=1,
    warmup_s=0.2,
    c1_duration_s=1.0,
    sat_duration_s=1.0,
    sat_concurrency=4,
    sat_procs=1,
    channels_per_proc=2,
    echo=True,
    shadow=True,
    shadow_duration_s=1.0,
    memory_versions=False,
    memory_warm_s=0.3,
    floor_seconds=0.2,
    startup_timeout_s=90.0,
)


@pytest.mark.timeout(180)
def test_tiny_bench_run_has_every_metric_and_renders(models_dir, tmp_path):
    demo = tmp_path / "models" / "demo"
    demo.mkdir(parents=True)
    shutil.copytree(models_dir / "keras_a", demo / "1")
    shutil.copytree(models_dir / "keras_b", demo / "2")
    repo = build_repository(tmp_path, memory_versions=False)  # reuses the copies
    messages: list[str] = []

    report = run_bench(TINY, tmp_path, progress=messages.append, repository=repo)

    assert TINY.protocols == EXTRA_PROTOCOLS == ("tfs_rest", "oip_grpc", "oip_rest")
    labels = [f"gateway_{p}" for p in EXTRA_PROTOCOLS]
    for phase in ("c1", "saturation"):
        for server in ("baseline", "gateway", "grpc_echo", *labels):
            (run,) = report.runs_of(phase, server)
            assert run.ok > 0, (phase, server, run)
        for protocol, server in zip(EXTRA_PROTOCOLS, labels, strict=True):
            (run,) = report.runs_of(phase, server)
            assert run.protocol == protocol and run.error_count == 0, run
    rows = {row.key: row for row in build_rows(report)}
    protocol_rows = [
        f"{p}_{k}" for p in EXTRA_PROTOCOLS for k in ("c1_p50_ms", "sat_throughput_rps")
    ]
    for key in (
        "c1_p50_ms",
        "sat_throughput_rps",
        "sat_p99_ms",
        "echo_sat_throughput_rps",
        *protocol_rows,
    ):
        ratio = rows[key].ratio
        assert ratio is not None and math.isfinite(ratio) and ratio > 0, rows[key]
        assert rows[key].baseline is not None and rows[key].gateway is not None
    assert isinstance(rows["c1_p50_ms"].met, bool)
    assert isinstance(rows["sat_throughput_rps"].met, bool)
    # the shadow phase either ran or was skipped because this build rejects the keys
    assert report.shadow_status == "measured" or report.shadow_status.startswith(
        "not supported by this gateway build"
    )
    assert "shadow_p99_ms" in rows
    if report.shadow_status == "measured":
        assert report.runs_of("shadow_on", "gateway_shadow")
    else:
        assert "shadow: not supported by this gateway build" in messages
    rss = rows["rss_1_version_mib"]
    assert rss.gateway is not None and rss.gateway > 0 and rss.baseline is not None
    assert report.floor is not None and report.floor.batch1_us_per_call > 0
    assert report.floor.batch64_us_per_row > 0

    text = render_table(report)
    assert "c=1 p50 latency, ms" in text and "saturation throughput" in text
    for name in ("TF Serving REST", "v2 gRPC", "v2 REST"):
        assert f"gateway over {name}" in text
    assert report.machine["date"] in text
    doc = json.loads(json.dumps(report.to_dict()))
    assert {r["key"] for r in doc["rows"]} == set(rows)
    assert doc["settings"]["rounds"] == 1
    assert doc["settings"]["protocols"] == list(EXTRA_PROTOCOLS)
    assert {r["protocol"] for r in doc["runs"]} == set(PROTOCOLS)


@pytest.mark.timeout(180)
def test_loadgen_drives_every_protocol_against_a_real_gateway(make_repo, gateway_factory):
    from gateway.workers import free_port

    base = make_repo("demo", {1: "keras_a"})
    gw = gateway_factory(
        {
            "server": {"rest_api_port": free_port()},
            "models": [{"name": "demo", "base_path": str(base)}],
        }
    )
    targets = {
        "grpc": f"127.0.0.1:{gw.gateway.port}",
        "rest": f"127.0.0.1:{gw.gateway.rest_port}",
    }

    def spec(protocol: str, **kwargs) -> LoadSpec:
        target = targets["rest" if protocol in REST_PROTOCOLS else "grpc"]
        return LoadSpec(target=target, protocol=protocol, **kwargs)

    for protocol in PROTOCOLS:
        result = run_load(
            spec(
                protocol,
                model="demo",
                version=1,
                concurrency=2,
                duration=1.0,
                metadata=(("tenant", "t1"),),
                key_header="x-user-id",
                keys=4,
            )
        )
        assert result.sent > 0 and result.ok > 0, (protocol, result)
        assert result.errors == {}, (protocol, result.errors)
        doc = result.to_dict()
        assert doc["protocol"] == doc["settings"]["protocol"] == protocol
        assert LoadResult.from_dict(doc) == result

    # an unknown model: counted under the gRPC status name, or the HTTP status for REST
    expected = {
        "tfs_grpc": "NOT_FOUND",
        "oip_grpc": "NOT_FOUND",
        "tfs_rest": "HTTP_404",
        "oip_rest": "HTTP_404",
    }
    for protocol, code in expected.items():
        result = run_load(spec(protocol, model="nope", requests=3, duration=None))
        assert result.ok == 0 and result.errors == {code: 3}, (protocol, result.errors)


def test_profile_summary_and_markdown_keep_the_analysis():
    raw = "\n".join(
        [
            "run (asyncio/events.py:80);Predict (gateway/transport/prediction.py:60);to_numpy (gateway/transport/tensors.py:12) 30",
            "_worker (concurrent/futures/thread.py:83);quick_execute (tensorflow/python/eager/execute.py:53) 60",
            "_run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80) 10",
            "garbage line",
        ]
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 100
    assert summary["top_self"][0]["frame"] == "quick_execute (tensorflow/python/eager/execute.py)"
    assert summary["top_self"][0]["share"] == pytest.approx(0.6)
    components = {c["component"]: c["share"] for c in summary["self_by_component"]}
    assert components["TensorFlow (model call, eager runtime)"] == pytest.approx(0.6)
    inclusive = {c["component"]: c["share"] for c in summary["inclusive_by_component"]}
    assert inclusive["asyncio event loop"] == pytest.approx(0.4)

    report = BenchReport(
        machine={
            "date": "d",
            "cpu": "c",
            "usable_cores": 2,
            "python": "3",
            "tensorflow": "t",
            "grpcio": "g",
        },
        settings=TINY,
        profile={**summary, "command": "py-spy record ...", "processes": 1, "load": {}},
    )
    previous = f"old\n{PROFILE_KEEP_MARKER}\n## Analysis\nkept text\n"
    text = render_profile_markdown(report, previous)
    assert "py-spy record ..." in text and "`quick_execute" in text
    assert text.endswith("## Analysis\nkept text\n") and "old\n" not in text


def test_shadow_counters_from_metrics_text():
    text = (
        "# HELP gateway_shadow_dropped_total x\n"
        'gateway_shadow_dropped_total{model="demo",reason="queue_full"} 3.0\n'
        'gateway_shadow_dropped_total{model="demo",reason="timeout"} 2.0\n'
        'gateway_shadow_dropped_created{model="demo"} 1.7e9\n'
        'gateway_requests_total{code="OK"} 10.0\n'
    )
    counters = shadow_counters(parse_metrics(text))
    assert counters == {"gateway_shadow_dropped_total": 5.0}
