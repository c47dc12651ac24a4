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
