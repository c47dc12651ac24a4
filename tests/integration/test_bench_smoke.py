"""`loadtest.bench` end to end in a tiny configuration: structure only, never speed; and
the load generator over each of its protocols against a real gateway. The tiny run has
no peers (nothing is downloaded); the peer test is slow and runs only where `make bench`
already made the peers' virtualenvs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
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
    peers=(),  # the peers' venvs are never made here (see test_peers_serve_the_model)
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

    assert report.peers == [] and not any(k.startswith(("mlserver", "kserve")) for k in rows)
    text = render_table(report)
    assert "c=1 p50 latency, ms" in text and "saturation throughput" in text
    assert "gRPC echo (ceiling)" in text  # the comparison table
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


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["mlserver", "kserve"])
def test_peers_serve_the_model_over_v2_grpc(name, models_dir, tmp_path):
    """Each peer, from the venv `make bench` made (skipped when there is none: this test
    never installs anything), answers the load generator's v2 ModelInfer with what the
    SavedModel computes in process, and stops with its workers."""
    import grpc
    import tensorflow as tf

    from gateway._proto.inference import grpc_service_pb2
    from loadtest import peers
    from loadtest.bench import PeerServer, start_peer
    from loadtest.loadgen import (
        OIP_INFER_METHOD,
        build_oip_request,
        make_input_arrays,
    )

    peer = peers.PEERS[name]
    venv = peers.venv_dir(peers.default_cache(), peer)
    if not (venv / peers.MARKER_NAME).exists():
        pytest.skip(f"no {peer.title} venv at {venv} (made by `make bench`)")
    env = peers.ensure_venv(peer)
    assert env.reused
    model_dir = models_dir / "keras_a"
    server, launch = start_peer(env, model_dir, tmp_path)
    assert isinstance(server, PeerServer)
    spec = LoadSpec(model="demo")
    request = build_oip_request(spec)
    try:
        peers.wait_oip_ready(
            server.proc,
            launch.target,
            request.SerializeToString(),
            180,
            Path(server.stderr_file),
            name,
        )
        with grpc.insecure_channel(launch.target) as channel:
            call = channel.unary_unary(
                OIP_INFER_METHOD,
                request_serializer=grpc_service_pb2.ModelInferRequest.SerializeToString,
                response_deserializer=grpc_service_pb2.ModelInferResponse.FromString,
            )
            response = call(request, timeout=10)
        (out,) = response.outputs
        assert out.datatype == "FP32" and list(out.shape) == [1, 3]
        if response.raw_output_contents:
            got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(1, 3)
        else:
            got = np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(1, 3)
        x = make_input_arrays(spec.inputs, spec.seed)["x"]
        fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
        want = next(iter(fn(x=tf.constant(x)).values())).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

        result = run_load(
            LoadSpec(
                target=launch.target,
                model="demo",
                protocol="oip_grpc",
                concurrency=4,
                duration=1.0,
                channels=2,
            )
        )
        assert result.ok > 0 and result.errors == {}, result.errors
        pids = server.serving_pids()
    finally:
        server.stop()
    assert server.proc.returncode is not None
    assert not [pid for pid in pids if _running(pid)], pids


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "(zombie)" not in status
