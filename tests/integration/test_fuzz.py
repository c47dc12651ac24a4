"""The protobuf-aware fuzzer (`loadtest.fuzz`) against a real `gateway serve` process:
`GATEWAY_FUZZ_COUNT` (default 10,000) mutated gRPC requests over every unary method of the
TF Serving, admin and v2 services, and a fifth as many mutated REST bodies, get no
INTERNAL / UNKNOWN answer (no HTTP 500), a details message on every error and
UNAUTHENTICATED for every token-less admin mutation; the process survives, its memory
does not grow by more than 200 MiB, `gateway_internal_errors_total` stays 0 and a valid
Predict is answered exactly as before."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import grpc
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.workers import free_port
from loadtest import fuzz
from tests.support import GatewayProcess, outputs_of, predict_request, wait_serving

COUNT = int(os.environ.get("GATEWAY_FUZZ_COUNT", "10000"))
SEED = int(os.environ.get("GATEWAY_FUZZ_SEED", "0"))
WARMUP = 1000
MODELS = ("m", "est", "module")
EXAMPLES = {"est": ("x", 2)}
TOKEN = "fuzz-test-token"
RSS_GROWTH = 200 * fuzz.MiB


def _config(tmp: Path, repos: dict[str, Path]) -> dict:
    (tmp / "token").write_text(TOKEN + "\n")
    return {
        "server": {
            "host": "127.0.0.1",
            "port": free_port(),
            "metrics_port": free_port(),
            "rest_api_port": free_port(),
            "admin_token_file": str(tmp / "token"),
        },
        "logging": {"file": str(tmp / "gw.log"), "divergence_log": str(tmp / "divergence.jsonl")},
        "lifecycle": {"poll_interval_seconds": 0.5},
        "models": [
            {
                "name": "m",
                "base_path": str(repos["m"]),
                "version_policy": {"all": {}},
                "primary": 1,
                "version_labels": {"stable": 1, "canary": 2},
                "shadows": [{"version": 2}],
            },
            {"name": "est", "base_path": str(repos["est"])},
            {"name": "module", "base_path": str(repos["module"])},
        ],
    }


def _repos(tmp: Path, models_dir: Path, shadow_models) -> dict[str, Path]:
    sources = {
        "m": {1: shadow_models["a"], 2: shadow_models["b"]},
        "est": {1: models_dir / "estimator"},
        "module": {1: models_dir / "module"},
    }
    for name, versions in sources.items():
        for version, src in versions.items():
            shutil.copytree(src, tmp / "repo" / name / str(version))
    return {name: tmp / "repo" / name for name in sources}


def _findings(title: str, outcomes: list[fuzz.Outcome], log: Path) -> str:
    lines = [f"{title}: {len(outcomes)}, distinct:"]
    lines += [
        f"  {n}x {o.method} -> {o.code}: {o.details[:300]} (e.g. #{o.index} [{o.mutation}])"
        for n, o in fuzz.distinct(outcomes)
    ]
    lines += [f"server log: {line}" for line in fuzz.server_errors(log)]
    return "\n".join(lines)


def test_fuzzing_every_api_gets_no_internal_error_and_no_leak(models_dir, shadow_models, tmp_path):
    config = _config(tmp_path, _repos(tmp_path, models_dir, shadow_models))
    server = config["server"]
    target = f"127.0.0.1:{server['port']}"
    log = tmp_path / "gw.log"
    with GatewayProcess(config, tmp_path / "gw.yaml", log=tmp_path / "gw.err") as gw:
        for name in MODELS:
            wait_serving(target, name)
        channel = grpc.insecure_channel(target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        probe = predict_request("m", {"x": shadow_models["x"][:3]})
        before = outputs_of(stub.Predict(probe, timeout=30))

        ctx = asyncio.run(fuzz.context_for(target, MODELS, EXAMPLES, TOKEN, reload_rate=0.05))
        assert {m.name for m in ctx.models if m.signatures} == set(MODELS), ctx.models
        # warm-up: cases outside the measured range (first calls, caches, allocator arenas)
        warm = asyncio.run(fuzz.run_cases(target, fuzz.cases(SEED, WARMUP, ctx, start=COUNT), SEED))
        rss_before = fuzz.rss_bytes(gw.proc.pid)
        report = asyncio.run(fuzz.run_cases(target, fuzz.cases(SEED, COUNT, ctx), SEED))
        rest = asyncio.run(
            fuzz.fuzz_rest(f"http://127.0.0.1:{server['rest_api_port']}", COUNT // 5, ctx, SEED)
        )
        alive = gw.proc.poll() is None
        rss_after = fuzz.rss_bytes(gw.proc.pid) if alive else 0
        print(warm.summary("warm-up"))
        print(report.summary())
        print(rest.summary("REST"))
        print(f"server RSS {rss_before / fuzz.MiB:.0f} -> {rss_after / fuzz.MiB:.0f} MiB")

        assert alive, f"the gateway died (exit {gw.proc.returncode}): {gw.log.read_text()[-3000:]}"
        assert report.requests == COUNT
        assert rest.requests + sum(rest.transport_errors.values()) == COUNT // 5
        assert report.unauthenticated_checked > 0
        # every property is checked before failing, so one run shows everything wrong
        problems = []
        findings = warm.findings + report.findings + rest.findings
        if findings:
            problems.append(_findings("INTERNAL / UNKNOWN / HTTP 500 answers", findings, log))
        empty = warm.empty_details + report.empty_details + rest.empty_details
        if empty:
            problems.append(_findings("non-OK answers without details", empty, log))
        violations = warm.auth_violations + report.auth_violations
        if violations:
            problems.append(
                _findings("token-less admin mutations not UNAUTHENTICATED", violations, log)
            )
        if rss_after - rss_before >= RSS_GROWTH:
            problems.append(f"server RSS grew {rss_before} -> {rss_after} bytes")
        after = outputs_of(stub.Predict(probe, timeout=30))
        if after.keys() != before.keys() or any(
            not np.array_equal(after[k], v) for k, v in before.items()
        ):
            problems.append(f"the valid Predict changed: {before} -> {after}")
        internal = fuzz.scrape(
            f"http://127.0.0.1:{server['metrics_port']}/metrics", "gateway_internal_errors_total"
        )
        if sum(internal.values()) != 0:
            problems.append(f"gateway_internal_errors_total: {internal}")
        channel.close()
        assert not problems, "\n\n".join(problems)
