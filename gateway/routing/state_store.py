"""The rollout state store: where replicas keep each model's `RolloutState`, agree on who
judges a tick, and pool their step evidence.

One interface, two kinds:

* ``file`` (:class:`gateway.routing.file_store.FileStateStore`): today's directory of
  JSON files with ``flock``, for one machine (replicas of ``--workers``, or processes
  sharing a local directory). The embedded default.
* ``redis`` (:class:`gateway.routing.redis_store.RedisStateStore`): a Redis server
  shared by a fleet, through redis-py's asyncio client.

Contract, whichever kind:

* :meth:`update` is an atomic read-modify-write: ``change`` is applied to the newest
  stored state (re-applied after a conflicting write, so it must be pure) and the
  result stored only if nobody wrote in between. ``change`` returning its argument
  unchanged (or None for a missing state) stores nothing.
* :meth:`acquire_lease` takes or renews a model's judging lease for ``ttl_seconds``:
  one replica at a time judges a rollout's tick; when the holder stops renewing,
  another takes over after the TTL. A lease is advisory: two replicas that both think
  they hold it still cannot apply two different decisions, because the judge's
  ``update`` refuses a state that changed since it judged (see the controller).
* :meth:`put_evidence` replaces one replica's cumulative evidence for one step (a
  JSON-friendly dict, ``StepStats.to_evidence()``); :meth:`evidence` returns every
  replica's latest. Replacing a cumulative snapshot (instead of adding increments)
  makes a retried flush harmless: a count is never added twice, and a replica that
  dies loses at most the requests since its last flush (one tick).
* Every method raises :class:`StoreUnavailable` when the store cannot be reached in
  its timeout; the caller holds the rollout (no step, no automatic rollback) and
  retries on the next tick. Predictions never wait on the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.routing.rollout import RolloutState

Evidence = Mapping[str, Any]
"""One replica's step evidence: `StepStats.to_evidence()` (JSON-friendly)."""

Change = Callable[[RolloutState | None], RolloutState | None]
"""A pure transition of the stored state (None: no state stored)."""


class StoreUnavailable(Exception):
    """The store could not be reached (or answered too slowly); the message says why."""


class StateStore(Protocol):
    """Rollout state, judging leases and step evidence shared by replicas."""

    kind: str
    """"file" or "redis" (the `store` label of the store metrics)."""

    async def load(self, model: str) -> RolloutState | None:
        """The model's stored state, or None. CorruptStateError when unreadable."""
        ...

    async def update(self, model: str, change: Change) -> RolloutState | None:
        """Atomically apply `change` to the newest stored state; the state now stored."""
        ...

    async def acquire_lease(self, model: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew `model`'s judging lease for `holder`; True when it holds it."""
        ...

    async def put_evidence(self, model: str, step: str, replica: str, evidence: Evidence) -> None:
        """Replace `replica`'s evidence for step `step` (kept at least an hour)."""
        ...

    async def evidence(self, model: str, step: str) -> dict[str, Evidence]:
        """Every replica's latest evidence for step `step`, by replica name."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
