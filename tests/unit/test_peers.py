"""Unit tests for loadtest.peers (config files, scripts, venv bookkeeping) and the peer rows
of loadtest.bench. Nothing here installs or starts a peer."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest import bench, peers
from loadtest.bench import BenchReport, BenchSettings, PeerStatus, PhaseRun


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


# --------------------------------------------------------------------------------------
# MLServer files
# --------------------------------------------------------------------------------------


def test_mlserver_model_settings_turn_adaptive_batching_on(tmp_path: Path) -> None:
    doc = peers.mlserver_model_settings(tmp_path / "demo" / "1", "demo")
    assert doc == {
        "name": "demo",
        "implementation": "tf_savedmodel_runtime.SavedModelRuntime",
        "max_batch_size": 64,
        "max_batch_time": 0.002,
        "parameters": {
            "uri": str(tmp_path / "demo" / "1"),
            "extra": {"signature": "serving_default"},
        },
    }
    other = peers.mlserver_model_settings(tmp_path, "m", max_batch_size=8, max_batch_time=0.01)
    assert other["max_batch_size"] == 8 and other["max_batch_time"] == 0.01


def test_mlserver_settings_ports_no_metrics_in_process_model() -> None:
    doc = peers.mlserver_settings(grpc_port=9001, http_port=9002)
    assert doc["grpc_port"] == 9001 and doc["http_port"] == 9002
    assert doc["host"] == "127.0.0.1"
    assert doc["metrics_endpoint"] is None  # MLServer starts no metrics server then
    assert doc["parallel_workers"] == peers.MLSERVER_PARALLEL_WORKERS == 0
    assert doc["debug"] is False
    assert json.loads(json.dumps(doc)) == doc


def test_write_mlserver_dir_lays_out_what_mlserver_start_reads(tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "demo" / "1"
    root = peers.write_mlserver_dir(tmp_path / "ml", model_dir, "demo", 9001, 9002)
    settings = json.loads((root / "settings.json").read_text())
    assert settings == peers.mlserver_settings(9001, 9002)
    model_settings = json.loads((root / "demo" / "model-settings.json").read_text())
    assert model_settings == peers.mlserver_model_settings(model_dir, "demo")
    module, cls = model_settings["implementation"].split(".")
    runtime = (root / "demo" / f"{module}.py").read_text()
    assert runtime == peers.MLSERVER_RUNTIME
    tree = ast.parse(runtime)
    runtime_cls = _classes(tree)[cls]
    assert [ast.unparse(b) for b in runtime_cls.bases] == ["MLModel"]
    methods = _methods(runtime_cls)
    assert isinstance(methods["load"], ast.AsyncFunctionDef)
    assert isinstance(methods["predict"], ast.AsyncFunctionDef)
    for needle in (
        "tf.saved_model.load(uri)",
        "signatures[extra.get('signature', 'serving_default')]",
        "NumpyCodec.decode_input(inp)",
        "NumpyCodec.encode_output(name, value.numpy())",
    ):
        assert needle in ast.unparse(runtime_cls), needle


# --------------------------------------------------------------------------------------
# KServe script
# --------------------------------------------------------------------------------------


def test_kserve_script_is_a_kserve_model_on_both_ports(tmp_path: Path) -> None:
    script = peers.write_kserve_dir(tmp_path / "ks")
    text = script.read_text()
    assert text == peers.KSERVE_SCRIPT
    tree = ast.parse(text)
    model = _classes(tree)["SavedModel"]
    assert [ast.unparse(b) for b in model.bases] == ["kserve.Model"]
    methods = _methods(model)
    assert {"load", "predict"} <= set(methods)
    predict = methods["predict"]
    assert [a.arg for a in predict.args.args] == ["self", "payload", "headers"]
    assert ast.unparse(predict.args.args[1].annotation) == "InferRequest"  # type: ignore[arg-type]
    source = ast.unparse(tree)
    for needle in (
        "tf.saved_model.load(self.model_dir)",
        "self.ready = True",
        "inp.as_numpy()",
        "InferOutput(",
        "InferResponse(",
        "kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port",
        ".start([model])",
        "enable_latency_logging=False",
    ):
        assert needle in source, needle


def test_launches_point_at_the_venv_and_the_v2_grpc_port(tmp_path: Path) -> None:
    def env(name: str) -> peers.PeerEnv:
        venv = tmp_path / f"venv-{name}"
        return peers.PeerEnv(peers.PEERS[name], venv, venv / "bin" / "python", 1.0, True)

    model_dir = tmp_path / "m" / "1"
    ml = peers.prepare_launch(env("mlserver"), tmp_path / "ml", model_dir, "demo", 7001, 7002)
    assert ml.argv == [str(tmp_path / "venv-mlserver" / "bin" / "mlserver"), "start", str(ml.cwd)]
    assert ml.target == "127.0.0.1:7001"
    assert "batching 64 / 2 ms" in ml.setup and "parallel_workers 0" in ml.setup
    ks = peers.prepare_launch(env("kserve"), tmp_path / "ks", model_dir, "demo", 7003, 7004)
    assert ks.argv[0] == str(tmp_path / "venv-kserve" / "bin" / "python")
    assert ks.argv[1] == str(tmp_path / "ks" / "kserve_server.py")
    flags = dict(zip(ks.argv[2::2], ks.argv[3::2], strict=True))
    assert flags == {
        "--model_dir": str(model_dir),
        "--model_name": "demo",
        "--grpc_port": "7003",
        "--http_port": "7004",
    }
    assert ks.target == "127.0.0.1:7003"


# --------------------------------------------------------------------------------------
# Venvs
# --------------------------------------------------------------------------------------


def test_requirements_pin_the_peer_and_the_projects_tensorflow() -> None:
    ml = peers.requirements(peers.PEERS["mlserver"], "2.21.0")
    assert ml == [f"mlserver=={peers.MLSERVER_VERSION}", "uvloop<0.22", "tensorflow==2.21.0"]
    ks = peers.requirements(peers.PEERS["kserve"], "2.21.0")
    assert ks == [f"kserve=={peers.KSERVE_VERSION}", "tensorflow==2.21.0"]
    assert peers.requirements(peers.PEERS["kserve"])[-1].startswith("tensorflow==")


def test_venv_dir_and_cache_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    got = peers.venv_dir(tmp_path, peers.PEERS["kserve"])
    assert got == tmp_path / "venvs" / f"kserve-{peers.KSERVE_VERSION}-{py}"
    monkeypatch.setenv("TF_GATEWAY_BENCH_CACHE", str(tmp_path / "c"))
    assert peers.default_cache() == tmp_path / "c"
    monkeypatch.delenv("TF_GATEWAY_BENCH_CACHE")
    assert peers.default_cache() == Path.home() / ".cache" / "tf-gateway-bench"
    assert peers.project_site_packages()  # the running venv's site-packages


def test_pip_failure_reason_skips_noise() -> None:
    out = (
        "WARNING: Location 'file:///opt/x' is ignored\n"
        "Collecting mlserver==9.9\n"
        "ERROR: Could not find a version that satisfies the requirement mlserver==9.9\n"
        "ERROR: No matching distribution found for mlserver==9.9\n"
    )
    assert peers.pip_failure_reason(out) == (
        "Could not find a version that satisfies the requirement mlserver==9.9"
    )
    notice = "ERROR: pip's dependency resolver does not currently take into account all\n"
    assert peers.pip_failure_reason(notice + "boom\n") == "boom"
    assert peers.pip_failure_reason("") == "no output"
    assert len(peers.pip_failure_reason("ERROR: " + "x" * 500)) == 200


def test_ensure_venv_reuses_a_venv_with_the_same_requirements(tmp_path: Path) -> None:
    peer = peers.PEERS["kserve"]
    venv = peers.venv_dir(tmp_path, peer)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    marker = {
        "requirements": peers.requirements(peer),
        "project_site_packages": peers.project_site_packages(),
        "install_s": 21.5,
        "versions": {"kserve": peer.version, "tensorflow": "2.21.0"},
    }
    (venv / peers.MARKER_NAME).write_text(json.dumps(marker))
    env = peers.ensure_venv(peer, tmp_path)
    assert env.reused and env.install_s == 21.5 and env.venv == venv
    assert env.versions["kserve"] == peer.version


def test_another_checkout_reuses_the_venv_pointed_at_its_own_site_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a CI clone of the same project: nothing is installed again
    peer = peers.PEERS["kserve"]
    venv = peers.venv_dir(tmp_path, peer)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    marker = {
        "requirements": peers.requirements(peer),
        "project_site_packages": ["/elsewhere/.venv/lib/python3.11/site-packages"],
        "install_s": 9.0,
        "versions": {},
    }
    (venv / peers.MARKER_NAME).write_text(json.dumps(marker))

    def no_install(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"ran {argv}")

    monkeypatch.setattr(peers.subprocess, "run", no_install)
    env = peers.ensure_venv(peer, tmp_path)
    assert env.reused
    pth = next((venv / "lib").glob(f"python*/site-packages/{peers.PTH_NAME}"))
    assert pth.read_text().splitlines() == peers.project_site_packages()
    saved = json.loads((venv / peers.MARKER_NAME).read_text())
    assert saved["project_site_packages"] == peers.project_site_packages()


def test_ensure_venv_reports_failures_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        if argv[1:3] == ["-m", "venv"]:
            venv = Path(argv[3])
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").touch()
            return subprocess.CompletedProcess(argv, 0, "", "")
        kwargs["stdout"].write("ERROR: No matching distribution found for kserve==0.21.0\n")
        return subprocess.CompletedProcess(argv, 1)

    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    with pytest.raises(peers.PeerUnavailable, match="No matching distribution found"):
        peers.ensure_venv(peers.PEERS["kserve"], tmp_path)
    assert calls[1][1:4] == ["-m", "pip", "install"] and "kserve==0.21.0" in calls[1]
    venv = peers.venv_dir(tmp_path, peers.PEERS["kserve"])
    pth = next((venv / "lib").glob(f"python*/site-packages/{peers.PTH_NAME}"))
    assert pth.read_text().splitlines() == peers.project_site_packages()
    assert not (venv / peers.MARKER_NAME).exists()

    def no_venv(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, 1)

    monkeypatch.setattr(peers.subprocess, "run", no_venv)
    with pytest.raises(peers.PeerUnavailable, match="venv failed"):
        peers.ensure_venv(peers.PEERS["mlserver"], tmp_path)


# --------------------------------------------------------------------------------------
# bench: settings, CLI, rows
# --------------------------------------------------------------------------------------


def test_settings_run_peers_in_make_bench_and_quick_only() -> None:
    assert BenchSettings().peers == ()
    assert BenchSettings.default().peers == peers.PEER_NAMES == ("mlserver", "kserve")
    assert BenchSettings.quick().peers == peers.PEER_NAMES
    assert bench.main(["--peers", "tritonserver"]) == 2


def _run(phase: str, server: str, p50: float, p99: float, rps: float) -> PhaseRun:
    return PhaseRun(
        phase=phase,
        server=server,
        round=1,
        mode="closed",
        concurrency=1 if phase == "c1" else 64,
        rate=None,
        duration_s=3.0,
        sent=100,
        ok=100,
        errors={},
        throughput_rps=rps,
        p50_ms=p50,
        p90_ms=p50,
        p99_ms=p99,
        p999_ms=p99,
        max_ms=p99,
        server_cores=1.0,
        machine_cores=2.0,
        server_cpu_us_per_request=1e6 / rps,
        worker_cpu_share=[1.0],
        protocol="oip_grpc" if server in ("mlserver", "kserve") else "tfs_grpc",
    )


def test_peer_rows_and_comparison_table() -> None:
    settings = dataclasses_replace(BenchSettings.quick(), protocols=())
    report = BenchReport(
        machine={
            "date": "2026-12-02",
            "cpu": "c",
            "usable_cores": 2,
            "cores": 2,
            "python": "3.11",
            "tensorflow": "2.21.0",
            "grpcio": "1",
        },
        settings=settings,
    )
    for server, (p50, p99, rps) in {
        "baseline": (1.0, 2.0, 1000.0),
        "gateway": (1.2, 2.4, 1500.0),
        "grpc_echo": (0.5, 1.0, 3000.0),
        "mlserver": (6.0, 12.0, 700.0),
    }.items():
        report.runs.append(_run("c1", server, p50, p99, 1000 / p50))
        report.runs.append(_run("saturation", server, p50 * 50, p99 * 50, rps))
    report.peers = [
        PeerStatus("mlserver", "MLServer", "measured", "1.7.1", 13.0, False, 10.0, "setup"),
        PeerStatus("kserve", "KServe", "unavailable: pip install kserve==0.21.0 failed: x"),
    ]
    rows = {r.key: r for r in bench.build_rows(report)}
    assert rows["mlserver_c1_p50_ms"].baseline == 1.0
    assert rows["mlserver_c1_p50_ms"].gateway == 6.0
    assert rows["mlserver_c1_p50_ms"].ratio == pytest.approx(6.0)
    assert rows["mlserver_c1_p99_ms"].gateway == 12.0
    assert rows["mlserver_sat_throughput_rps"].ratio == pytest.approx(0.7)
    assert "server CPU" in rows["mlserver_sat_throughput_rps"].note
    assert rows["mlserver_sat_p99_ms"].gateway == 600.0
    assert rows["kserve_c1_p50_ms"].gateway is None
    assert rows["kserve_c1_p50_ms"].note.startswith("unavailable: pip install")

    comparison = {c.key: c for c in bench.build_comparison(report)}
    assert list(comparison) == ["baseline", "gateway", "mlserver", "kserve", "grpc_echo"]
    assert comparison["mlserver"].server == "MLServer 1.7.1"
    assert comparison["mlserver"].throughput_ratio == pytest.approx(0.7)
    assert comparison["mlserver"].note == "setup"
    assert comparison["kserve"].sat_throughput_rps is None
    assert comparison["kserve"].note.startswith("unavailable:")
    assert comparison["grpc_echo"].throughput_ratio == pytest.approx(3.0)

    text = bench.render_table(report, width=220)
    assert "MLServer 1.7.1 over v2 gRPC: c=1 p50 latency, ms" in text
    assert "gRPC echo (ceiling)" in text and "unavailable: pip install" in text
    doc = json.loads(json.dumps(report.to_dict()))
    assert [p["name"] for p in doc["peers"]] == ["mlserver", "kserve"]
    assert [c["key"] for c in doc["comparison"]] == list(comparison)


def dataclasses_replace(settings: BenchSettings, **changes: Any) -> BenchSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)
