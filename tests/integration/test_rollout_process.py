"""Rollouts across processes: a gateway SIGKILLed mid-rollout comes back at the same step
with the same key assignments (over mTLS, driven by the `gateway rollout` CLI with the admin
token), and two replicas behind a real gRPC load balancer (nginx `grpc_pass`) send every
key to the same version."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.routing.router import routing_hash
from gateway.workers import free_port
from tests.support import (
    GatewayProcess,
    certificates,
    nginx_binary,
    nginx_conf,
    predict_request,
    run_cli,
    wait_until,
)

KEYS = [f"user-{i}" for i in range(200)]


def _repo(tmp_path: Path, shadow_models: dict[str, Any]) -> Path:
    base = tmp_path / "repo" / "m"
    shutil.copytree(shadow_models["a"], base / "1")
    shutil.copytree(shadow_models["b"], base / "2")
    return base


def _config(tmp_path: Path, base: Path, port: int, **server: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": None, **server},
        "lifecycle": {"poll_interval_seconds": 0.2},
        "logging": {"file": str(tmp_path / f"gw-{port}.log")},
        "rollouts": {"state_dir": str(tmp_path / "state"), "tick_seconds": 0.1},
        "models": [
            {
                "name": "m",
                "base_path": str(base),
                "version_policy": {"specific": [1, 2]},
                "version_labels": {"stable": 1, "canary": 2},
                "primary": "stable",
                "rollout": {
                    "candidate": "canary",
                    "routing_key": {"header": "x-user-id"},
                    "steps": [5, 25, 50, 100],
                    # never advances by itself here: the tests move it by hand
                    "min_requests_per_step": 10**9,
                    "min_step_seconds": 0,
                    "gates": {
                        "max_divergence_rate": None,
                        "max_error_rate_ratio": None,
                        "max_p99_latency_ratio": None,
                    },
                },
            }
        ],
    }


def _wait_both_available(channel: grpc.Channel, timeout: float = 120.0) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    last: list[Any] = ["no answer yet"]

    def both_available() -> bool:
        try:
            (model,) = admin.GetStatus(admin_pb2.GetStatusRequest(model="m"), timeout=5).models
        except grpc.RpcError as exc:
            last[0] = f"{exc.code().name}: {exc.details()}"
            return False
        last[0] = {v.version: v.state for v in model.versions}
        return {v.version for v in model.versions if v.state == "AVAILABLE"} >= {1, 2}

    wait_until(
        both_available,
        timeout,
        "versions 1 and 2 both AVAILABLE",
        seen=lambda: last[0],
        interval=0.1,
    )


def _wait_weight(channel: grpc.Channel, weight: float, who: str, timeout: float = 30) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    seen: list[float] = []

    def followed() -> bool:
        seen.append(admin.GetRollout(admin_pb2.GetRolloutRequest(model="m")).weight)
        return seen[-1] == weight

    wait_until(
        followed,
        timeout,
        f"{who} to follow to weight {weight}",
        seen=lambda: f"weight {seen[-1:]}",
        interval=0.05,  # each check is an admin RPC
    )


def _assignments(channel: grpc.Channel, x: Any) -> dict[str, int]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return {
        key: stub.Predict(
            predict_request("m", {"x": x}), metadata=[("x-user-id", key)], timeout=30
        ).model_spec.version.value
        for key in KEYS
    }


@pytest.mark.parametrize("store", ["file", "redis"])
def test_sigkill_mid_rollout_resumes_the_same_step_and_keys(
    shadow_models, tmp_path, store, request
):
    certs = certificates(tmp_path / "certs")
    token = tmp_path / "token"
    token.write_text("rollout-token\n")
    base = _repo(tmp_path, shadow_models)
    port = free_port()
    config = _config(
        tmp_path,
        base,
        port,
        admin_token_file=str(token),
        tls={
            "cert_file": str(certs["server.pem"]),
            "key_file": str(certs["server.key"]),
            "client_ca_file": str(certs["ca.pem"]),
        },
    )
    if store == "redis":
        redis_url = request.getfixturevalue("redis_server").url
        config["rollouts"]["store"] = {"kind": "redis", "url": redis_url}
    target = f"127.0.0.1:{port}"
    tls = [
        "--target", target, "--tls-ca", str(certs["ca.pem"]),
        "--tls-cert", str(certs["client.pem"]), "--tls-key", str(certs["client.key"]),
    ]  # fmt: skip
    creds = grpc.ssl_channel_credentials(
        certs["ca.pem"].read_bytes(),
        certs["client.key"].read_bytes(),
        certs["client.pem"].read_bytes(),
    )
    x = shadow_models["x"][:1]
    gw = GatewayProcess(config, tmp_path / "gw.yaml").start()
    try:
        channel = grpc.secure_channel(target, creds)
        _wait_both_available(channel)
        # mTLS: a client without a certificate cannot even connect
        plain = grpc.secure_channel(
            target, grpc.ssl_channel_credentials(certs["ca.pem"].read_bytes())
        )
        with pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.AdminServiceStub(plain).GetStatus(
                admin_pb2.GetStatusRequest(), timeout=5
            )
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        plain.close()
        # the CLI without the token is refused; with it, it drives the rollout
        refused = run_cli("rollout", "start", "m", *tls)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stdout, refused
        assert run_cli("rollout", "start", "m", *tls, "--token-file", str(token)).returncode == 0
        moved = run_cli("rollout", "set-weight", "m", "25", *tls, "--token-file", str(token),
                     "--reason", "looks fine", "--json")  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        before = json.loads(moved.stdout)
        assert (before["status"], before["weight"], before["stepIndex"]) == ("running", 25.0, 1)
        keys_before = _assignments(channel, x)
        expected = {k: 2 if routing_hash("m", k, before["rolloutId"]) < 0.25 else 1 for k in KEYS}
        assert keys_before == expected
        channel.close()
        gw.kill()  # mid-rollout, no graceful anything

        gw = GatewayProcess(config, tmp_path / "gw.yaml").start()
        channel = grpc.secure_channel(target, creds)
        _wait_both_available(channel)
        shown = run_cli("rollout", "status", "m", *tls, "--json")
        after = json.loads(shown.stdout)
        for key in ("rolloutId", "status", "weight", "stepIndex", "stepStartedAt"):
            assert after[key] == before[key], key
        assert [d["action"] for d in after["history"]] == ["start", "set_weight"]
        assert _assignments(channel, x) == keys_before
        text = run_cli("rollout", "status", "m", *tls)
        assert "RUNNING" in text.stdout and "canary weight 25%" in text.stdout
        channel.close()
    finally:
        gw.kill()


def test_two_replicas_behind_nginx_send_every_key_to_the_same_version(shadow_models, tmp_path):
    nginx = nginx_binary()
    base = _repo(tmp_path, shadow_models)
    p1, p2, lb = free_port(), free_port(), free_port()
    replicas = [
        GatewayProcess(
            {**_config(tmp_path, base, p), "logging": {"replica": f"replica-{i}",
                                                       "file": str(tmp_path / f"r{i}.log")}},
            tmp_path / f"r{i}.yaml",
        )
        for i, p in enumerate((p1, p2))
    ]  # fmt: skip
    conf = nginx_conf(tmp_path / "nginx", [p1, p2], lb)
    proc = None
    try:
        for r in replicas:
            r.start()
        for p in (p1, p2):
            with grpc.insecure_channel(f"127.0.0.1:{p}") as ch:
                _wait_both_available(ch)
        proc = subprocess.Popen(
            [nginx, "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"],
            stderr=subprocess.PIPE,
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{lb}")
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        through_lb: list[str] = ["no answer yet"]

        def balancer_answers() -> bool:  # nginx needs a moment to listen
            try:
                admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=2)
                return True
            except grpc.RpcError as exc:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                through_lb[0] = f"{exc.code().name}: {exc.details()}"
                return False

        wait_until(
            balancer_answers,
            30,
            f"GetStatus through nginx on 127.0.0.1:{lb}",
            seen=lambda: through_lb[0],
            interval=0.1,
        )
        # start through the balancer (lands on one replica); the other follows the shared state
        Action = admin_pb2.UpdateRolloutRequest
        admin.UpdateRollout(Action(model="m", action=Action.START))
        status = admin.UpdateRollout(Action(model="m", action=Action.SET_WEIGHT, weight=25))
        rollout_id = status.rollout_id
        for p in (p1, p2):
            with grpc.insecure_channel(f"127.0.0.1:{p}") as ch:
                _wait_weight(ch, 25, f"the replica on {p}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        x = shadow_models["x"][:1]
        seen: dict[str, set[int]] = {}
        replicas_of: dict[str, set[str]] = {}
        keys = [*KEYS, "user-odd"]  # an odd count: round-robin alternates replicas per pass
        for _ in range(3):
            for key in keys:
                resp, call = stub.Predict.with_call(
                    predict_request("m", {"x": x}), metadata=[("x-user-id", key)], timeout=30
                )
                seen.setdefault(key, set()).add(resp.model_spec.version.value)
                replica = dict(call.trailing_metadata())["x-gateway-replica"]
                replicas_of.setdefault(key, set()).add(replica)
        assert all(len(v) == 1 for v in seen.values()), {
            k: v for k, v in seen.items() if len(v) > 1
        }
        expected = {k: 2 if routing_hash("m", k, rollout_id) < 0.25 else 1 for k in keys}
        assert {k: next(iter(v)) for k, v in seen.items()} == expected
        both = [k for k, r in replicas_of.items() if r == {"replica-0", "replica-1"}]
        assert len(both) > len(keys) // 4, "the balancer should spread each key over both"
        assert 0 < sum(1 for v in expected.values() if v == 2) < len(KEYS)
        channel.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for r in replicas:
            r.kill()
