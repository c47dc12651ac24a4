"""The mirror pipeline over the fake runtime (no TensorFlow): shadow, canary and noise
lanes fed by the data plane's response hook, the recorder chain, drops, the breaker and
tf.Example requests. Tests wait on a recorder that wakes them, never on sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Collection
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from gateway.config import GatewayConfig, ModelConfig
from gateway.core.dtypes import DT_FLOAT, DT_STRING
from gateway.core.inference import InferenceRequest, Method
from gateway.routing.router import Arm, RouteDecision
from gateway.serving.dataplane import Answer, DataPlane
from gateway.serving.mirror import (
    CANARY,
    NOISE,
    SHADOW,
    Breaker,
    Compared,
    Failed,
    Mirror,
    MirrorTask,
    Outcome,
)
from gateway.serving.mirror.lanes import lanes_of
from gateway.testing import StaticTable, numpy_signature, numpy_version

X = np.array([[1.0], [2.0]], dtype=np.float32)


# -- fakes -------------------------------------------------------------------------


class FakeLog:
    """A `DivergenceSink` keeping every record."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.drop_reports: list[dict[str, Any]] = []
        self.closed = False

    def divergence(self, **fields: Any) -> bool:
        self.records.append(fields)
        return True

    def shadow_error(self, **fields: Any) -> bool:
        self.errors.append(fields)
        return True

    def drops(self, model: str, shadow_version: int | None, count: int, **fields: Any) -> bool:
        self.drop_reports.append({"model": model, "count": count, **fields})
        return True

    def close(self, timeout: float | None = 10.0) -> bool:
        self.closed = True
        return True


class FakeMetrics:
    """A `MirrorMetrics` keeping every call."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, Any, Any, str, str]] = []
        self.divergences: list[tuple[str, str, int, int, bool]] = []
        self.noise_floors: list[tuple[str, int, bool]] = []

    def shadow_outcome(self, model, primary, shadow, comparison, outcome) -> None:
        self.outcomes.append((model, primary, shadow, comparison, outcome))

    def divergence(self, model, comparison, primary, shadow, result, latency_ms) -> None:
        self.divergences.append((model, comparison, primary, shadow, result.diverged))

    def noise_floor(self, model, version, floor) -> None:
        self.noise_floors.append((model, version, floor.deterministic))


class Seen:
    """A recorder appended to the chain: keeps every outcome, wakes `wait_for`."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        for n, event in self._waiters:
            if len(self.outcomes) >= n:
                event.set()

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[Outcome]:
        if len(self.outcomes) < n:
            event = asyncio.Event()
            self._waiters.append((n, event))
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                pytest.fail(
                    f"waited {timeout:g}s for {n} mirror outcomes, got {len(self.outcomes)}: "
                    f"{[(type(o).__name__, o.lane.name) for o in self.outcomes]}"
                )
        return self.outcomes


class FixedRouter:
    """Every keyless request goes to `decision`."""

    def __init__(self, decision: RouteDecision) -> None:
        self.decision = decision

    def route(self, model, headers, feature, available):
        return self.decision


class Answers:
    """A response hook keeping the data plane's answers."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []

    def on_response(self, answer: Answer) -> None:
        self.answers.append(answer)


class Examples:
    """An `ExampleBatch` over pre-decoded features."""

    def __init__(self, features: dict[str, np.ndarray]) -> None:
        self._features = features
        rows = len(next(iter(features.values())))
        self._serialized = np.array([f"ex{i}".encode() for i in range(rows)], dtype=object)

    @property
    def serialized(self) -> np.ndarray:
        return self._serialized

    def feature_names(self) -> frozenset[str]:
        return frozenset(self._features)

    def features(self, names: Collection[str]) -> dict[str, np.ndarray]:
        return {n: self._features[n] for n in names if n in self._features}


# -- helpers -----------------------------------------------------------------------


def scaled(model: str, version: int, factor: float):
    return numpy_version(model, version, lambda a: {"y": a["x"] * factor})


def failing(model: str, version: int):
    def fn(a):
        raise ValueError("this version fails every call")

    return numpy_version(model, version, fn)


def config(mirroring: dict[str, Any] | None = None, **model: Any) -> GatewayConfig:
    data: dict[str, Any] = {"models": [{"name": "m", "base_path": "/fake/m", **model}]}
    if mirroring is not None:
        data["mirroring"] = mirroring
    return GatewayConfig.model_validate(data)


class Rig:
    """A mirror (fake sinks, a `Seen` recorder appended) behind a data plane."""

    def __init__(
        self,
        table: StaticTable,
        cfg: GatewayConfig,
        router: FixedRouter | None = None,
        recorders: tuple[Any, ...] = (),
    ) -> None:
        self.log = FakeLog()
        self.metrics = FakeMetrics()
        self.canary_calls: list[tuple[str, int, int, bool]] = []
        self.mirror = Mirror(
            table,
            self.metrics,
            self.log,
            rng=random.Random(0),
            on_canary=lambda *args: self.canary_calls.append(args),
            recorders=recorders,
        )
        self.seen = Seen()
        self.mirror.recorders.append(self.seen)
        self.answers = Answers()
        self.plane = DataPlane(table, router=router, hooks=[self.answers, self.mirror])
        self.mirror.configure(cfg)

    async def send(self, n: int, **request: Any) -> None:
        for i in range(n):
            request.setdefault("inputs", {"x": X})
            await self.plane.infer(InferenceRequest("m", request_id=f"r{i}", **request))

    def lane(self, name: str) -> dict[str, Any]:
        (lane,) = [s for s in self.mirror.summary("m") if s.lane == name]
        return dataclasses.asdict(lane)


def run(coro):
    return asyncio.run(coro)


# -- tests -------------------------------------------------------------------------


def test_a_diverging_shadow_is_logged_diverged_with_the_right_versions():
    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), scaled("m", 2, 2.0), primary=1)
        rig = Rig(table, config(primary=1, shadows=[{"version": 2}]))
        await rig.send(5)
        outcomes = await rig.seen.wait_for(5)
        await rig.mirror.close()
        return rig, outcomes

    rig, outcomes = run(main())
    assert all(isinstance(o, Compared) for o in outcomes)
    assert len(rig.log.records) == 5 and rig.log.closed
    for record in rig.log.records:
        assert record["comparison"] == SHADOW and record["diverged"] is True
        assert (record["primary_version"], record["shadow_version"]) == (1, 2)
        assert record["outputs"]["y"]["kind"] == "regression"
        assert set(record["latency_ms"]) == {"primary", "shadow"} and record["rows"] == 2
    assert sorted(r["request_id"] for r in rig.log.records) == [f"r{i}" for i in range(5)]
    lane = rig.lane("shadow:2")
    assert (lane["compared"], lane["diverged"], lane["shadow_version"]) == (5, 5, 2)
    assert lane["max_abs"]["y"] == pytest.approx(2.0)
    assert rig.metrics.divergences == [("m", SHADOW, 1, 2, True)] * 5
    assert rig.canary_calls == []


def test_a_canary_comparison_is_recorded_primary_first():
    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), scaled("m", 2, 2.0), primary=1)
        cfg = config(primary=1, rollout={"candidate": 2})
        router = FixedRouter(RouteDecision(Arm.CANARY, 2, "keyed", "user-1", 1))
        rig = Rig(table, cfg, router)
        await rig.send(3)
        outcomes = await rig.seen.wait_for(3)
        await rig.mirror.close()
        return rig, outcomes

    rig, outcomes = run(main())
    assert [a.version for a in rig.answers.answers] == [2, 2, 2]  # the canary answered
    canary_latency = {a.request.request_id: a.seconds * 1e3 for a in rig.answers.answers}
    for outcome in outcomes:
        assert isinstance(outcome, Compared) and outcome.comparison == CANARY
        assert (outcome.primary_version, outcome.shadow_version) == (1, 2)
        assert outcome.answered_version == 2
        assert outcome.latency_ms["shadow"] == canary_latency[outcome.task.request_id]
        assert outcome.latency_ms["primary"] == outcome.call_latency_ms
    for record in rig.log.records:
        assert (record["comparison"], record["primary_version"], record["shadow_version"]) == (
            CANARY,
            1,
            2,
        )
        # the rollout's primary (y = x) is the reference: |x - 2x| / |x| = 1, not 0.5
        assert record["outputs"]["y"]["max_rel"] == pytest.approx(1.0)
        assert record["routing_key_hash"] is not None
    assert rig.canary_calls == [("m", 1, 2, True)] * 3
    assert rig.metrics.divergences == [("m", CANARY, 1, 2, True)] * 3
    assert rig.lane("canary")["shadow_version"] == 2


def test_a_failed_canary_comparison_is_logged_primary_first():
    async def main():
        table = StaticTable.of(failing("m", 1), scaled("m", 2, 2.0), primary=1)
        cfg = config(primary=1, rollout={"candidate": 2})
        rig = Rig(table, cfg, FixedRouter(RouteDecision(Arm.CANARY, 2, "random", None, 1)))
        await rig.send(2)
        outcomes = await rig.seen.wait_for(2)
        await rig.mirror.close()
        return rig, outcomes

    rig, outcomes = run(main())
    assert all(isinstance(o, Failed) for o in outcomes)
    assert [(e["primary_version"], e["shadow_version"]) for e in rig.log.errors] == [(1, 2)] * 2
    assert [o[1:] for o in rig.metrics.outcomes] == [(1, 2, CANARY, "error")] * 2
    assert rig.canary_calls == [] and rig.lane("canary")["errors"] == 2


def test_a_full_queue_drops_and_counts():
    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), scaled("m", 2, 1.0), primary=1)
        rig = Rig(table, config(primary=1, shadows=[{"version": 2, "queue_size": 2}]))
        answers = Answers()  # a plane without the mirror, to get one real answer
        await DataPlane(table, hooks=[answers]).infer(InferenceRequest("m", inputs={"x": X}))
        (answer,) = answers.answers
        for _ in range(5):  # synchronously: no worker runs in between
            rig.mirror.on_response(answer)
        queued = rig.lane("shadow:2")
        await rig.seen.wait_for(2)
        await rig.mirror.close()
        return rig, queued

    rig, queued = run(main())
    assert (queued["offered"], queued["dropped"], queued["queued"]) == (5, 3, 2)
    assert [o for o in rig.metrics.outcomes if o[4] == "dropped"] == [
        ("m", 1, 2, SHADOW, "dropped")
    ] * 3
    assert rig.lane("shadow:2")["compared"] == 2
    assert [(d["count"], d["comparison"]) for d in rig.log.drop_reports] == [(3, SHADOW)]


def test_a_raising_shadow_opens_the_breaker_after_n_failures():
    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), failing("m", 2), primary=1)
        cfg = config(
            {"breaker": {"failures": 3, "cooldown_seconds": 60}},
            primary=1,
            shadows=[{"version": 2}],
        )
        with capture_logs() as logs:
            rig = Rig(table, cfg)
            for i in range(3):  # one at a time: each is its own model call
                await rig.send(1)
                await rig.seen.wait_for(i + 1)
            assert rig.lane("shadow:2")["suspended"]
            await rig.send(4)  # suppressed at the offer: never queued
            lane = rig.lane("shadow:2")
            await rig.mirror.close()
        return rig, lane, logs

    rig, lane, logs = run(main())
    assert (lane["errors"], lane["suppressed"], lane["compared"], lane["queued"]) == (3, 4, 0, 0)
    assert all(isinstance(o, Failed) and o.code == "INTERNAL" for o in rig.seen.outcomes)
    assert [e["error"] for e in rig.log.errors] == ["INTERNAL"] * 3
    assert "ValueError: this version fails every call" in rig.log.errors[0]["message"]
    suspended = [r for r in logs if r["event"] == "shadow_suspended"]
    assert len(suspended) == 1 and suspended[0]["consecutive_failures"] == 3
    outcomes = [o[4] for o in rig.metrics.outcomes]
    assert outcomes == ["error"] * 3 + ["suppressed"] * 4


def test_the_breaker_probes_after_the_cooldown_and_doubles_it_while_probes_fail():
    breaker = Breaker(failures=2, cooldown=1.0, max_cooldown=3.0)
    assert breaker.admit(0.0) and breaker.record(False, 0.0) is None
    assert breaker.record(False, 0.0) == "opened" and breaker.suspended
    assert not breaker.admit(0.5)
    assert breaker.admit(1.0) and not breaker.admit(1.0)  # one probe at a time
    assert breaker.record(False, 1.0) is None and breaker.cooldown == 2.0
    assert breaker.admit(2.0)
    assert breaker.record(False, 2.0) is None and breaker.cooldown == 3.0  # capped
    assert breaker.admit(4.0) and breaker.record(True, 4.0) == "closed"
    assert not breaker.suspended and breaker.cooldown == 1.0


def test_an_appended_recorder_sees_every_outcome_of_every_lane():
    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), scaled("m", 2, 1.0), failing("m", 3), primary=1)
        cfg = config(primary=1, shadows=[{"version": 2}, {"version": 3}], noise_sample_rate=1.0)
        rig = Rig(table, cfg)
        await rig.send(4)
        outcomes = await rig.seen.wait_for(12)
        await rig.mirror.close()
        return rig, outcomes

    rig, outcomes = run(main())
    kinds = sorted((o.lane.name, type(o).__name__) for o in outcomes)
    assert kinds == sorted(
        [("shadow:2", "Compared")] * 4 + [("shadow:3", "Failed")] * 4 + [("noise", "Compared")] * 4
    )
    assert len(rig.log.records) == 8 and len(rig.log.errors) == 4
    pairs = {(o.task.request_id, o.lane.name) for o in outcomes}
    assert len(pairs) == 12  # each request once per lane


def test_the_noise_lane_of_a_deterministic_primary_reports_zero_divergence():
    async def main():
        table = StaticTable.of(scaled("m", 1, 3.0), primary=1)
        rig = Rig(table, config(primary=1, noise_sample_rate=1.0))
        await rig.send(12)
        await rig.seen.wait_for(12)
        await rig.mirror.close()
        return rig

    rig = run(main())
    noise = rig.lane("noise")
    assert (noise["compared"], noise["diverged"], noise["noise_samples"]) == (12, 0, 12)
    assert noise["deterministic"] and noise["max_abs"]["y"] == 0.0
    assert rig.mirror.noise["m"].count == 12 and rig.mirror.noise["m"].deterministic
    assert {
        (r["comparison"], r["primary_version"], r["shadow_version"]) for r in rig.log.records
    } == {(NOISE, 1, 1)}
    assert all(r["within_noise"] is None and not r["diverged"] for r in rig.log.records)
    assert rig.metrics.noise_floors[-1] == ("m", 1, True)


def test_shadow_comparisons_get_a_within_noise_verdict_once_the_floor_has_samples():
    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), scaled("m", 2, 1.0), primary=1)
        rig = Rig(table, config(primary=1, shadows=[{"version": 2}], noise_sample_rate=1.0))
        await rig.send(12)
        await rig.seen.wait_for(24)
        await rig.send(1)
        await rig.seen.wait_for(26)
        await rig.mirror.close()
        return rig

    rig = run(main())
    last = [o for o in rig.seen.outcomes if o.lane.name == "shadow:2"][-1]
    assert isinstance(last, Compared) and last.within_noise is True
    assert rig.lane("shadow:2")["within_noise"] >= 1


def classify_version(version: int, alias: str, seen: list[np.ndarray]):
    def classify(a):
        seen.append(a[alias])
        rows = len(a[alias])
        return {
            "classes": np.array([[b"a", b"b"]] * rows, dtype=object),
            "scores": np.full((rows, 2), 0.25 * version, dtype=np.float32),
        }

    sig = numpy_signature(
        classify,
        {alias: (DT_STRING, (None,))},
        {"classes": (DT_STRING, (None, 2)), "scores": (DT_FLOAT, (None, 2))},
        method=Method.CLASSIFY,
    )
    return numpy_version("m", version, None, sig)


def test_classify_requests_are_mirrored_to_the_shadows_own_classify_alias():
    v1_seen: list[np.ndarray] = []
    v2_seen: list[np.ndarray] = []

    async def main():
        table = StaticTable.of(
            classify_version(1, "examples", v1_seen),
            classify_version(2, "inputs", v2_seen),
            primary=1,
        )
        rig = Rig(table, config(primary=1, shadows=[{"version": 2}]))
        batch = Examples({"age": np.array([30.0, 40.0])})
        await rig.send(1, method=Method.CLASSIFY, examples=batch, inputs={})
        outcomes = await rig.seen.wait_for(1)
        await rig.mirror.close()
        return rig, batch, outcomes

    rig, batch, (outcome,) = run(main())
    assert isinstance(outcome, Compared), outcome
    assert outcome.task.method is Method.CLASSIFY
    np.testing.assert_array_equal(v2_seen[0], batch.serialized)  # under v2's own alias
    (record,) = rig.log.records
    assert (record["primary_version"], record["shadow_version"], record["rows"]) == (1, 2, 2)
    assert record["outputs"]["classes"]["agreement"] == 1.0
    assert record["outputs"]["scores"]["max_abs"] == pytest.approx(0.25)
    assert record["features"] == {"age": 30.0}


def test_the_config_sets_queue_sizes_timeouts_and_breakers_of_the_lanes():
    defaults = ModelConfig.model_validate(
        {
            "name": "m",
            "base_path": "/fake/m",
            "primary": 1,
            "shadows": [{"version": 2, "timeout_ms": 300}, {"version": 3}],
            "noise_sample_rate": 0.5,
            "rollout": {"candidate": 2},
        }
    )

    async def lanes(model: ModelConfig, cfg: GatewayConfig):
        return {lane.name: lane for lane in lanes_of(model, cfg.mirroring.breaker)}

    built = run(lanes(defaults, GatewayConfig()))
    assert {k: v.queue.maxsize for k, v in built.items()} == {
        "shadow:2": 10_000,
        "shadow:3": 10_000,
        "noise": 10_000,
        "canary": 10_000,
    }
    assert built["noise"].timeout_s == 0.3  # the longest shadow timeout
    assert built["canary"].timeout_s == 1.0
    assert built["noise"].breaker.failures == 20 and built["noise"].breaker.cooldown == 1.0
    assert built["noise"].breaker.max_cooldown == 60.0
    mirroring = GatewayConfig().mirroring
    assert (mirroring.bulk, mirroring.linger_ms) == (64, 10.0)
    assert ModelConfig(name="m", base_path="/fake/m").noise_timeout() == 1000

    tuned = defaults.model_copy(
        update={
            "noise_queue_size": 5,
            "noise_timeout_ms": 50,
            "rollout": defaults.rollout.model_copy(update={"compare_queue_size": 7}),
        }
    )
    gw = GatewayConfig.model_validate(
        {"mirroring": {"bulk": 8, "linger_ms": 0, "breaker": {"failures": 2}}}
    )
    built = run(lanes(tuned, gw))
    assert (built["noise"].queue.maxsize, built["noise"].timeout_s) == (5, 0.05)
    assert built["canary"].queue.maxsize == 7
    assert built["shadow:2"].breaker.failures == 2
    with pytest.raises(ValueError, match="max_cooldown_seconds"):
        GatewayConfig.model_validate({"mirroring": {"breaker": {"cooldown_seconds": 90}}})


def test_a_recorder_that_raises_does_not_stop_the_others():
    class Broken:
        def record(self, outcome: Outcome) -> None:
            raise RuntimeError("broken sink")

    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), scaled("m", 2, 2.0), primary=1)
        # Broken comes after the default recorders, before the appended Seen
        rig = Rig(table, config(primary=1, shadows=[{"version": 2}]), recorders=(Broken(),))
        with capture_logs() as logs:
            await rig.send(2)
            await rig.seen.wait_for(2)
        await rig.mirror.close()
        return rig, logs

    rig, logs = run(main())
    assert len(rig.log.records) == 2 and rig.lane("shadow:2")["compared"] == 2
    failures = [r for r in logs if r["event"] == "recorder_failed"]
    assert [(r["recorder"], r["lane"]) for r in failures] == [("Broken", "shadow:2")] * 2
    assert not [r for r in logs if r["event"] == "mirror_failed"]


def test_offer_takes_a_mirror_task_directly():
    async def main():
        table = StaticTable.of(scaled("m", 1, 1.0), scaled("m", 2, 1.0), primary=1)
        rig = Rig(table, config(primary=1, shadows=[{"version": 2}]))
        rig.mirror.offer(
            MirrorTask(
                request_id="direct",
                model="m",
                signature="serving_default",
                inputs={"x": X},
                primary_version=1,
                primary_outputs={"y": X},
                primary_latency_ms=1.5,
                primary_mismatches=[{"feature": "x", "kind": "nan_or_inf"}],
                routing_key_hash=None,
            )
        )
        await rig.seen.wait_for(1)
        await rig.mirror.close()
        return rig

    (record,) = run(main()).log.records
    assert record["request_id"] == "direct" and not record["diverged"]
    assert record["latency_ms"]["primary"] == 1.5
    assert record["feature_mismatches"] == {
        "primary": [{"feature": "x", "kind": "nan_or_inf"}],
        "shadow": [],
    }
