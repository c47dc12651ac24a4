"""The rollout controller over the fake runtime's serving table: configure, auto start,
the keyed split, step statistics, gates judged on a tick, and the effects a promotion
has on serving (no TensorFlow, an injected clock)."""

from __future__ import annotations

import asyncio
import random

import numpy as np

from gateway.config import parse_config
from gateway.core.inference import InferenceRequest
from gateway.routing.controller import RolloutController
from gateway.routing.router import Arm, routing_hash
from gateway.serving.dataplane import DataPlane, RolloutStatistics
from gateway.testing import StaticTable, numpy_version

X = np.array([[1.0]], dtype=np.float32)


class Metrics:
    def __init__(self):
        self.decisions: list[tuple[str, str, str]] = []
        self.states: list[tuple] = []
        self.arms: list[tuple] = []

    def arm_request(self, model, arm, version, code, seconds):
        self.arms.append((arm, version, code))

    def rollout_store(self, kind, up):
        pass

    def rollout_decision(self, model, action, actor):
        self.decisions.append((model, action, actor))

    def rollout_state(self, model, primary, candidate, weight, status):
        self.states.append((primary, candidate, weight, status))


def setup(tmp_path, **rollout):
    config = parse_config(
        {
            "rollouts": {"state_dir": "state", "tick_seconds": 3600},  # ticks are the test's
            "models": [
                {
                    "name": "m",
                    "base_path": ".",
                    "version_labels": {"stable": 1, "canary": 2},
                    "primary": "stable",
                    "rollout": {
                        "candidate": "canary",
                        "routing_key": {"header": "x-user"},
                        "steps": [50, 100],
                        "min_requests_per_step": 10,
                        "min_step_seconds": 0,
                        "gates": {
                            "max_divergence_rate": None,
                            "max_error_rate_ratio": None,
                            "max_p99_latency_ratio": None,
                        },
                        "auto_start": True,
                        **rollout,
                    },
                }
            ],
        },
        tmp_path,
    )
    table = StaticTable.of(
        numpy_version("m", 1, lambda a: {"y": a["x"]}),
        numpy_version("m", 2, lambda a: {"y": a["x"] * 2}),
        primary="stable",
        labels={"stable": 1, "canary": 2},
    )
    now = [1000.0]
    metrics = Metrics()
    controller = RolloutController(
        table, metrics, replica="r1", rng=random.Random(0), clock=lambda: now[0]
    )
    return config, table, controller, metrics, now


def test_auto_start_split_statistics_and_promotion(tmp_path):
    config, table, controller, metrics, now = setup(tmp_path)
    plane = DataPlane(table, router=controller, hooks=[RolloutStatistics(controller)])

    async def main():
        await controller.configure(config)
        assert table.pins["m"] == frozenset({1, 2})
        await controller.tick("m")  # auto start
        status = controller.status("m")
        assert (status.state.status.value, status.state.weight) == ("running", 50.0)
        rollout_id = status.state.rollout_id
        served = {}
        for i in range(40):
            key = f"user-{i}"
            result = await plane.infer(
                InferenceRequest("m", inputs={"x": X}, headers={"x-user": key})
            )
            served[key] = result.version
        for key, version in served.items():
            assert version == (2 if routing_hash("m", key, rollout_id) < 0.5 else 1)
        canary = sum(v == 2 for v in served.values())
        stats = controller.status("m").stats
        assert (stats.canary.requests, stats.primary.requests) == (canary, 40 - canary)
        now[0] += 1
        await controller.tick("m")  # enough requests, no gates: next step (100 %)
        assert controller.status("m").state.weight == 100.0
        for i in range(40):
            await plane.infer(InferenceRequest("m", inputs={"x": X}, headers={"x-user": f"u{i}"}))
        now[0] += 1
        await controller.tick("m")  # the last step passed: promoted
        final = controller.status("m").state
        assert final.status.value == "promoted" and final.primary == 2
        # the effect on serving: the primary label moved, the old primary stays pinned
        assert table.view("m").labels["stable"] == 2
        assert table.pins["m"] == frozenset({1, 2})
        result = await plane.infer(InferenceRequest("m", inputs={"x": X}))
        assert result.version == 2
        actions = [a for _, a, _ in metrics.decisions]
        assert actions[0] == "start" and actions[-1] == "promote"
        await controller.close()

    asyncio.run(main())


def test_a_missing_canary_falls_back_to_the_primary_in_one_route_call(tmp_path):
    config, _, controller, _, _ = setup(tmp_path)

    async def main():
        await controller.configure(config)
        await controller.tick("m")
        rollout_id = controller.status("m").state.rollout_id
        key = next(
            k for k in (f"k{i}" for i in range(100)) if routing_hash("m", k, rollout_id) < 0.5
        )
        decision = controller.route("m", {"x-user": key}, {}.get, available={1})
        assert (decision.arm, decision.version, decision.reason) == (Arm.PRIMARY, 1, "fallback")
        assert decision.key == key and decision.primary == 1
        decision = controller.route("m", {"x-user": key}, {}.get, available={1, 2})
        assert (decision.arm, decision.version, decision.reason) == (Arm.CANARY, 2, "keyed")
        await controller.close()

    asyncio.run(main())


# -- the fleet: shared state store, fleet evidence, one judge, an unreachable store ------


class FlakyStore:
    """A `StateStore` over a real one that can be taken down (every call raises
    StoreUnavailable) and can run a hook just before an update (a racing replica)."""

    def __init__(self, inner):
        self.inner = inner
        self.kind = inner.kind
        self.down = False
        self.before_update = None

    def _check(self):
        from gateway.routing.state_store import StoreUnavailable

        if self.down:
            raise StoreUnavailable("redis://fake:6379/0: Connection refused")

    async def load(self, model):
        self._check()
        return await self.inner.load(model)

    async def update(self, model, change):
        self._check()
        hook, self.before_update = self.before_update, None
        if hook is not None:
            await hook()
        return await self.inner.update(model, change)

    async def acquire_lease(self, model, holder, ttl_seconds):
        self._check()
        return await self.inner.acquire_lease(model, holder, ttl_seconds)

    async def put_evidence(self, model, step, replica, evidence):
        self._check()
        await self.inner.put_evidence(model, step, replica, evidence)

    async def evidence(self, model, step):
        self._check()
        return await self.inner.evidence(model, step)

    async def close(self):
        pass


def replica(tmp_path, name, store, now=None, **rollout):
    config, table, _, metrics, own_clock = setup(tmp_path, **rollout)
    now = now if now is not None else own_clock  # replicas of a test share one clock
    controller = RolloutController(
        table, metrics, replica=name, rng=random.Random(0), clock=lambda: now[0]
    )
    controller._store = store  # the shared store (configure keeps a store it was given)
    plane = DataPlane(table, router=controller, hooks=[RolloutStatistics(controller)])
    return config, controller, plane, metrics, now


def canary_keys(rollout_id, n, start=0):
    keys, i = [], start
    while len(keys) < n:
        if routing_hash("m", f"k{i}", rollout_id) < 0.5:
            keys.append(f"k{i}")
        i += 1
    return keys, i


def test_fleet_evidence_one_judge_and_a_refused_second_decision(tmp_path):
    from gateway.routing.file_store import FileStateStore

    shared = FileStateStore(tmp_path / "state")
    store_a, store_b = FlakyStore(shared), FlakyStore(shared)
    config, a, plane_a, metrics_a, now = replica(tmp_path, "a", store_a)
    _, b, plane_b, _, _ = replica(tmp_path, "b", store_b, now)

    async def main():
        await a.configure(config)
        await b.configure(config)
        await a.tick("m")  # a takes the lease and auto-starts
        await b.tick("m")  # b follows; the lease is a's
        rollout_id = b.status("m").state.rollout_id
        assert b.status("m").state.weight == 50.0
        keys, _ = canary_keys(rollout_id, 14)
        for plane, half in ((plane_a, keys[:7]), (plane_b, keys[7:])):
            for key in half:
                await plane.infer(InferenceRequest("m", inputs={"x": X}, headers={"x-user": key}))
        # each replica alone has 7 < 10 canary requests; the fleet has 14
        await b.tick("m")  # b flushes its 7; not the judge
        assert b.status("m").state.weight == 50.0
        now[0] += 1
        await a.tick("m")  # a judges the fleet's 14: next step
        status = a.status("m")
        assert status.state.weight == 100.0
        advance = status.state.history[-1]
        assert advance.action == "advance"
        await b.tick("m")
        assert b.status("m").state.weight == 100.0
        assert [d.action for d in b.status("m").state.history] == ["start", "advance"]

        # split brain: b also believes it judges (its lease check passes), but a commits
        # a decision between b's judging and b's commit: b's is refused, not applied
        keys, _ = canary_keys(rollout_id, 0)
        for i in range(12):
            await plane_b.infer(InferenceRequest("m", inputs={"x": X}, headers={"x-user": f"z{i}"}))
        store_b.inner = AlwaysLeased(shared)

        async def a_decides_first():
            await a.act("m", "pause", reason="operator")

        store_b.before_update = a_decides_first
        now[0] += 1
        await b.tick("m")  # b judged RUNNING at 100 % (promote), a paused meanwhile
        final = b.status("m").state
        assert final.status.value == "paused"
        assert [d.action for d in final.history] == ["start", "advance", "pause"]

    asyncio.run(main())


class AlwaysLeased:
    """A store whose lease is granted to everyone (two judges at once)."""

    def __init__(self, inner):
        self.inner = inner
        self.kind = inner.kind

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def acquire_lease(self, model, holder, ttl_seconds):
        return True


def test_an_unreachable_store_holds_the_rollout_and_it_resumes(tmp_path):
    from gateway.core.errors import Unavailable
    from gateway.routing.file_store import FileStateStore

    class StoreMetrics(Metrics):
        def __init__(self):
            super().__init__()
            self.store = []

        def rollout_store(self, kind, up):
            self.store.append(up)

    store = FlakyStore(FileStateStore(tmp_path / "state"))
    config, table, _, _, now = setup(tmp_path)
    metrics = StoreMetrics()
    controller = RolloutController(table, metrics, replica="r1", clock=lambda: now[0])
    controller._store = store
    plane = DataPlane(table, router=controller, hooks=[RolloutStatistics(controller)])

    async def main():
        await controller.configure(config)
        await controller.tick_all()  # auto start
        assert controller.status("m").state.weight == 50.0
        store.down = True
        for i in range(40):
            await plane.infer(InferenceRequest("m", inputs={"x": X}, headers={"x-user": f"u{i}"}))
        now[0] += 1
        await controller.tick_all()  # enough evidence, but no store: hold
        status = controller.status("m")
        assert status.state.weight == 50.0 and not status.store_up
        assert metrics.store[-1] is False
        try:
            await controller.act("m", "pause")
        except Unavailable as exc:
            assert "state store is unreachable" in str(exc)
        else:
            raise AssertionError("act with the store down should be UNAVAILABLE")
        # back, and empty (a Redis restarted without persistence): the state is restored
        store.down = False
        (tmp_path / "state" / "m.rollout.json").unlink()
        now[0] += 1
        await controller.tick_all()
        status = controller.status("m")
        assert status.store_up and metrics.store[-1] is True
        assert status.state.weight == 100.0  # the held evidence was judged at last
        assert (tmp_path / "state" / "m.rollout.json").exists()

    asyncio.run(main())


def test_after_the_store_lost_its_data_the_newest_state_a_replica_holds_wins(tmp_path):
    # found in the fleet test: Redis restarted empty right after a start that only one
    # replica had seen; the others put back PENDING first, which must not win
    from gateway.routing.file_store import FileStateStore

    shared = FileStateStore(tmp_path / "state")
    config, a, _, _, now = replica(tmp_path, "a", shared, auto_start=False)
    _, b, _, _, _ = replica(tmp_path, "b", shared, now, auto_start=False)

    async def main():
        await a.configure(config)
        await b.configure(config)
        await a.act("m", "start")  # b has not ticked since: it still holds PENDING
        (tmp_path / "state" / "m.rollout.json").unlink()  # the store lost everything
        await b.tick("m")  # b puts back what it holds: PENDING
        assert (await shared.load("m")).status.value == "pending"
        await a.tick("m")  # a holds a newer state of the same rollout: it wins
        assert (await shared.load("m")).status.value == "running"
        await b.tick("m")
        assert b.status("m").state.status.value == "running"

    asyncio.run(main())
