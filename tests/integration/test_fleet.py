"""A fleet on the Redis state store: three gateway processes behind nginx (`grpc_pass`)
share one rollout. Every replica routes every key the same way; the status' figures are
the sum of what each replica served (checked against the clients' own counts); the
decision log has one decision per step; a candidate that diverges on 5% of its inputs,
spread over every replica, is rolled back on fleet evidence that no replica had alone;
and with Redis killed under load no prediction fails, the rollout holds and the store
metric says so, and once Redis is back (empty: no persistence) the rollout resumes and
completes."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.routing.router import routing_hash
from gateway.workers import free_port
from tests.support import (
    GatewayProcess,
    Traffic,
    nginx_binary,
    nginx_conf,
    predict_request,
    wait_until,
)

pytestmark = pytest.mark.slow

THRESHOLD = 0.95  # the candidate diverges on inputs above it: 5% of uniform [0, 1)
MIN_COMPARED = 150
Action = admin_pb2.UpdateRolloutRequest


def _build(path: Path, bump: float) -> None:
    """`y = 2x`, plus `bump` where x > THRESHOLD (a candidate wrong on 5% of inputs)."""
    import tensorflow as tf

    class Model(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": 2.0 * x + bump * tf.cast(x > THRESHOLD, tf.float32)}

    module = Model()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def fleet_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fleet_models")
    built = {"good": root / "good", "bad": root / "bad"}
    _build(built["good"], 0.0)
    _build(built["bad"], 1.0)
    return built


class Fleet:
    """Three `gateway serve` replicas on one Redis store, and nginx in front."""

    def __init__(self, tmp: Path, base: Path, redis_url: str, rollout: dict[str, Any]) -> None:
        self.ports = [free_port() for _ in range(3)]
        self.metrics_ports = [free_port() for _ in range(3)]
        self.lb = free_port()
        self.tmp = tmp
        self.replicas = [
            GatewayProcess(
                {
                    "server": {"host": "127.0.0.1", "port": p, "metrics_port": mp},
                    "lifecycle": {"poll_interval_seconds": 0.2},
                    "logging": {"replica": f"replica-{i}", "file": str(tmp / f"r{i}.log")},
                    "rollouts": {
                        "tick_seconds": 0.2,
                        "store": {"kind": "redis", "url": redis_url, "key_prefix": "fleet"},
                    },
                    "models": [
                        {
                            "name": "m",
                            "base_path": str(base),
                            "version_policy": {"specific": [1, 2]},
                            "version_labels": {"stable": 1, "canary": 2},
                            "primary": "stable",
                            "divergence": {"y": {"kind": "regression", "max_abs": 0.05}},
                            "rollout": rollout,
                        }
                    ],
                },
                tmp / f"r{i}.yaml",
            )
            for i, (p, mp) in enumerate(zip(self.ports, self.metrics_ports, strict=True))
        ]
        self.nginx: Any = None
        self.channel: grpc.Channel | None = None

    def __enter__(self) -> Fleet:
        for r in self.replicas:
            r.start()
        for p in self.ports:
            with grpc.insecure_channel(f"127.0.0.1:{p}") as ch:
                _wait_available(ch)
        conf = nginx_conf(self.tmp / "nginx", self.ports, self.lb)
        self.nginx = subprocess.Popen(
            [nginx_binary(), "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"],
            stderr=subprocess.PIPE,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.lb}")
        admin = admin_pb2_grpc.AdminServiceStub(self.channel)

        def balancer_answers() -> bool:
            try:
                admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=2)
                return True
            except grpc.RpcError:
                assert self.nginx.poll() is None, self.nginx.stderr.read()
                return False

        wait_until(balancer_answers, 30, "GetStatus through nginx", interval=0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.nginx is not None:
            self.nginx.terminate()
            self.nginx.wait(10)
        for r in self.replicas:
            r.kill()

    def rollout(self, port: int | None = None) -> Any:
        target = f"127.0.0.1:{port}" if port else f"127.0.0.1:{self.lb}"
        with grpc.insecure_channel(target) as ch:
            return admin_pb2_grpc.AdminServiceStub(ch).GetRollout(
                admin_pb2.GetRolloutRequest(model="m"), timeout=10
            )

    def act(self, **kw: Any) -> Any:
        assert self.channel is not None
        return admin_pb2_grpc.AdminServiceStub(self.channel).UpdateRollout(
            Action(model="m", **kw), timeout=10
        )

    def metric(self, i: int, series: str) -> float | None:
        url = f"http://127.0.0.1:{self.metrics_ports[i]}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None


def _wait_available(channel: grpc.Channel) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(channel)

    def both() -> bool:
        try:
            (model,) = admin.GetStatus(admin_pb2.GetStatusRequest(model="m"), timeout=5).models
        except grpc.RpcError:
            return False
        return {v.version for v in model.versions if v.state == "AVAILABLE"} >= {1, 2}

    wait_until(both, 120, "versions 1 and 2 AVAILABLE", interval=0.1)


def _repo(tmp: Path, models: dict[str, Path], candidate: str) -> Path:
    base = tmp / "repo" / "m"
    shutil.copytree(models["good"], base / "1")
    shutil.copytree(models[candidate], base / "2")
    return base


def _send(
    fleet: Fleet, keys: list[str], rng: random.Random
) -> tuple[Counter[Any], dict[str, set[int]]]:
    """One keyed request per key through nginx; counts by (replica, version) and each
    key's versions."""
    assert fleet.channel is not None
    stub = prediction_service_pb2_grpc.PredictionServiceStub(fleet.channel)
    served: Counter[Any] = Counter()
    versions: dict[str, set[int]] = {}
    for key in keys:
        x = np.array([[rng.random()]], np.float32)
        resp, call = stub.Predict.with_call(
            predict_request("m", {"x": x}), metadata=[("x-user-id", key)], timeout=30
        )
        version = resp.model_spec.version.value
        served[(dict(call.trailing_metadata())["x-gateway-replica"], version)] += 1
        versions.setdefault(key, set()).add(version)
    return served, versions


def test_fleet_routes_alike_sums_evidence_and_rolls_back_on_fleet_evidence(
    fleet_models, redis_server, tmp_path
):
    rollout = {
        "candidate": "canary",
        "routing_key": {"header": "x-user-id"},
        "steps": [50, 100],
        "min_requests_per_step": 10**9,  # never advances: only the divergence gate acts
        "min_step_seconds": 0,
        "gates": {
            "max_divergence_rate": 0.01,
            "max_error_rate_ratio": None,
            "max_p99_latency_ratio": None,
        },
        "min_samples": {"compared": MIN_COMPARED},
    }
    base = _repo(tmp_path, fleet_models, "bad")
    rng = random.Random(7)
    with Fleet(tmp_path, base, redis_server.url, rollout) as fleet:
        started = fleet.act(action=Action.START)
        assert started.weight == 50
        for p in fleet.ports:  # every replica follows the state in Redis
            wait_until(lambda p=p: fleet.rollout(p).status == "running", 30, f"replica {p}")
        # phase 1: inputs that never diverge: the counts and the routing
        keys = [f"user-{i}" for i in range(61)]  # odd: round robin moves keys between replicas
        low = random.Random(1)
        served: Counter[Any] = Counter()
        versions: dict[str, set[int]] = {}
        for _ in range(2):
            s, v = _send(fleet, keys, _LowInputs(low))
            served.update(s)
            for k, vs in v.items():
                versions.setdefault(k, set()).update(vs)
        assert all(len(v) == 1 for v in versions.values()), versions
        expected = {k: 2 if routing_hash("m", k, started.rollout_id) < 0.5 else 1 for k in keys}
        assert {k: next(iter(v)) for k, v in versions.items()} == expected
        by_replica = Counter(r for r, _ in served.elements())
        assert len(by_replica) == 3, by_replica  # nginx spread the keys over all three

        def summed() -> Any:
            st = fleet.rollout()
            return st if st.primary.requests + st.canary.requests == sum(served.values()) else None

        status = wait_until(summed, 30, "the fleet totals to reach the clients' count")
        assert status.primary.requests == sum(n for (_, v), n in served.items() if v == 1)
        assert status.canary.requests == sum(n for (_, v), n in served.items() if v == 2)
        parts = {r.replica: r for r in status.replicas}
        assert set(parts) == {"replica-0", "replica-1", "replica-2"}
        for name, part in parts.items():
            assert part.primary.requests == served[(name, 1)], name
            assert part.canary.requests == served[(name, 2)], name
        assert status.store == "redis" and status.store_up
        assert status.status == "running"

        # phase 2: uniform inputs, 5% of the canary's diverge; judged on the fleet's sum
        traffic_keys = [f"k-{i}" for i in range(4000)]
        decided = None
        for start in range(0, len(traffic_keys), 100):
            _send(fleet, traffic_keys[start : start + 100], rng)
            decided = fleet.rollout()
            if decided.status != "running":
                break
        assert decided is not None and decided.status == "rolled_back", decided
        found = re.search(r"(\d+)/(\d+) canary answers diverged", decided.failed_gate)
        assert found is not None, decided.failed_gate
        judged_on = int(found.group(2))  # the fleet's compared answers the judge summed
        assert judged_on >= MIN_COMPARED
        assert [d.action for d in decided.history] == ["start", "rollback"]
        own = []
        for i, p in enumerate(fleet.ports):  # one decision, adopted by every replica
            wait_until(lambda p=p: fleet.rollout(p).status == "rolled_back", 30, f"replica {p}")
            status = fleet.rollout(p)
            assert [d.action for d in status.history] == ["start", "rollback"]
            # a replica's own counts, kept as they were when it adopted the rollback
            (mine,) = [r for r in status.replicas if r.replica == f"replica-{i}"]
            own.append(mine.canary.compared)
        assert max(own) < MIN_COMPARED <= judged_on, (own, judged_on)  # no replica alone


class _LowInputs(random.Random):
    """Inputs in [0, 0.5): no request of phase 1 diverges."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng

    def random(self) -> float:
        return self._rng.random() * 0.5


def test_redis_down_under_load_holds_the_rollout_and_it_completes_once_back(
    fleet_models, redis_server, tmp_path
):
    rollout = {
        "candidate": "canary",
        "routing_key": {"header": "x-user-id"},
        "steps": [10, 50, 100],
        "min_requests_per_step": 30,
        "min_step_seconds": 0,
        "gates": {
            "max_divergence_rate": 0.02,
            "max_error_rate_ratio": None,
            "max_p99_latency_ratio": None,
        },
        "min_samples": {"compared": 20},
    }
    base = _repo(tmp_path, fleet_models, "good")
    with Fleet(tmp_path, base, redis_server.url, rollout) as fleet:
        assert fleet.channel is not None
        fleet.act(action=Action.START)
        redis_server.kill()  # before any evidence: every step must wait for Redis
        request = predict_request("m", {"x": np.array([[0.25]], np.float32)})
        with Traffic(fleet.channel, request, threads=3) as traffic:
            for i in range(3):
                wait_until(
                    lambda i=i: fleet.metric(i, 'gateway_rollout_store_up{store="redis"}') == 0.0,
                    30,
                    f"replica {i} to report the store down",
                )
            held = [fleet.rollout(p) for p in fleet.ports]
            traffic.wait_for_requests(200)  # plenty of evidence: nothing may advance now
            after = [fleet.rollout(p) for p in fleet.ports]
            assert [s.weight for s in after] == [s.weight for s in held]
            assert [len(s.history) for s in after] == [len(s.history) for s in held]
            assert all(not s.store_up for s in after)
            redis_server.restart()  # empty: no persistence; the replicas restore the state

            def promoted() -> bool:
                return all(fleet.rollout(p).status == "promoted" for p in fleet.ports)

            wait_until(promoted, 120, "the rollout to resume and complete on every replica")
        assert traffic.errors == []
        final = fleet.rollout()
        actions = [d.action for d in final.history]
        assert actions[0] == "start" and actions[-1] == "promote", actions
        assert actions.count("advance") == 2, actions  # 10 -> 50 -> 100, once each
        for i in range(3):
            assert fleet.metric(i, 'gateway_rollout_store_up{store="redis"}') == 1.0
