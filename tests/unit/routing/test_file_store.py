"""The file state store's leases and evidence, and step statistics as evidence."""

from __future__ import annotations

import asyncio

import pytest

from gateway.routing.arm_stats import StepStats
from gateway.routing.file_store import FileStateStore
from gateway.routing.router import Arm
from gateway.routing.state_store import StoreUnavailable


def stats(step: str, canary_ok: int, canary_errors: int = 0, started: float = 10.0) -> StepStats:
    s = StepStats(started_at=started, step=step)
    for i in range(canary_ok):
        s.record(Arm.CANARY, "OK", 0.001 * (i + 1))
    for _ in range(canary_errors):
        s.record(Arm.CANARY, "UNAVAILABLE", 0.0)
    s.record(Arm.PRIMARY, "INVALID_ARGUMENT", 0.0)
    s.canary.record_comparison(True)
    s.canary.record_comparison(False)
    s.canary.record_skew(0.07)
    return s


def test_evidence_round_trips_losslessly_and_sums_to_the_fleet():
    a, b = stats("s1", 30, 2, started=12.0), stats("s1", 10, started=11.0)
    back = StepStats.from_evidence(a.to_evidence())
    assert back.to_dict() == a.to_dict()
    assert back.canary.p99() == a.canary.p99()
    fleet = StepStats.fleet([a, b], 11.0, "s1")
    assert fleet.canary.requests == 42 and fleet.canary.errors == 2
    assert fleet.canary.latency.count == 40 and fleet.canary.compared == 4
    assert fleet.primary.client_errors == 2 and fleet.started_at == 11.0
    assert fleet.canary.max_feature_skew == 0.07
    with pytest.raises((ValueError, KeyError)):
        StepStats.from_evidence({"step": "s1", "started_at": 1.0, "primary": {}})


def test_lease_is_held_renewed_and_taken_over_after_expiry(tmp_path):
    now = [100.0]
    store = FileStateStore(tmp_path, clock=lambda: now[0])

    async def main():
        assert await store.acquire_lease("m", "a", 3.0)
        assert not await store.acquire_lease("m", "b", 3.0)
        now[0] += 2
        assert await store.acquire_lease("m", "a", 3.0)  # renewed until 105
        now[0] += 2
        assert not await store.acquire_lease("m", "b", 3.0)
        now[0] += 1.5  # a stopped renewing
        assert await store.acquire_lease("m", "b", 3.0)
        assert not await store.acquire_lease("m", "a", 3.0)

    asyncio.run(main())


def test_evidence_is_replaced_per_replica_and_kept_per_step(tmp_path):
    store = FileStateStore(tmp_path)

    async def main():
        await store.put_evidence("m", "s1", "gw/w1", stats("s1", 1).to_evidence())
        await store.put_evidence("m", "s1", "gw/w1", stats("s1", 5).to_evidence())  # replaced
        await store.put_evidence("m", "s1", "gw/w2", stats("s1", 2).to_evidence())
        await store.put_evidence("m", "s2", "gw/w1", stats("s2", 9).to_evidence())
        found = await store.evidence("m", "s1")
        assert sorted(found) == ["gw/w1", "gw/w2"]
        assert StepStats.from_evidence(found["gw/w1"]).canary.requests == 5
        assert await store.evidence("m", "nope") == {}

    asyncio.run(main())


def test_an_unusable_directory_is_store_unavailable(tmp_path):
    store = FileStateStore(tmp_path / "state")
    (tmp_path / "state").rename(tmp_path / "gone")
    (tmp_path / "state").write_text("not a directory")

    async def main():
        with pytest.raises(StoreUnavailable, match="rollout state directory"):
            await store.put_evidence("m", "s1", "a", {})

    asyncio.run(main())
