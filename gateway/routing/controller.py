"""Runs every model's canary rollout on the event loop: routing, step statistics, gates,
durable state, and the manual actions of the admin service.

Contract:

* The request path calls :meth:`RolloutController.route` (a dict lookup and, for a
  keyed request, one sha256; no I/O, no lock) and :meth:`RolloutController.record`
  (counter increments). Nothing else here runs per request.
* Everything that touches the shared state store (:class:`StateStore`: a directory
  for one machine, or Redis for a fleet) is an atomic read-modify-write that
  re-applies the pure transition to the *newest* stored state: replicas never
  overwrite each other's decisions, and each replica re-reads the state every
  ``rollouts.tick_seconds`` so it follows what another replica decided.
* Gates are judged on the fleet's evidence: every tick each replica replaces its own
  cumulative step statistics in the store, and the one replica holding the model's
  judging lease sums every replica's and judges. Its decision is committed only if
  the stored state is still the one it judged (a second judge, e.g. after a lease
  expired under a long pause, is refused by that check instead of applying a second
  decision). A store that cannot be reached holds every rollout (no step, no automatic
  rollback), is reported once (`rollout_store_unavailable`, `gateway_rollout_store_up`
  0) and retried every tick; the request path never waits on it.
* Effects of a state on serving are applied idempotently by :meth:`_apply`: both arms
  (and, after a promotion, the old primary) are pinned loaded, and the model's
  primary (its label when the config names the primary by label) points at
  ``state.primary``.
* Every decision, automatic or manual, is one ``rollout_decision`` log record with
  its reason and gate figures, and a ``gateway_rollout_decisions_total`` increment.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

import numpy as np
import structlog

from gateway.config import GatewayConfig, ModelConfig, RolloutsConfig
from gateway.core.errors import FailedPrecondition, InvalidInput, NotFound, Unavailable
from gateway.core.model_view import Servable
from gateway.core.protocols import RolloutMetrics, ServingControls
from gateway.core.states import VersionState
from gateway.routing import rollout as ro
from gateway.routing.arm_stats import StepStats
from gateway.routing.gates import evaluate
from gateway.routing.rollout import (
    Decision,
    InvalidTransition,
    RolloutPlan,
    RolloutState,
    Status,
)
from gateway.routing.router import Arm, FeatureSource, RouteDecision, decide
from gateway.routing.state_store import StateStore, StoreUnavailable
from gateway.routing.status import RolloutStatus
from gateway.routing.store import CorruptStateError

log = structlog.get_logger("gateway.rollout")

ACTIONS = ("start", "pause", "resume", "set_weight", "promote", "rollback", "release")
"""Manual actions accepted by :meth:`RolloutController.act`."""

SkewSource = Callable[[str, int], float | None]
"""(model, version) -> the version's largest current feature skew (JS / L-inf), or None."""


@dataclass
class _Rollout:
    """One model's rollout as this replica sees it."""

    config: ModelConfig
    plan: RolloutPlan
    state: RolloutState
    stats: StepStats
    waiting_for: str = ""
    others: tuple[tuple[str, StepStats], ...] = ()
    """The other replicas' evidence of the current step, as last read from the store."""


def routing_key(
    plan: RolloutPlan, headers: Mapping[str, str], feature: FeatureSource
) -> str | None:
    """The request's routing key: the configured header, or the first row's value of the
    configured input feature (a request's rows all follow its first row); None if absent."""
    rk = plan.routing_key
    if rk is None:
        return None
    if rk.source == "header":
        value = headers.get(rk.name)
        return value if isinstance(value, str) and value else None
    array = feature(rk.name)
    if not isinstance(array, np.ndarray) or array.size == 0:
        return None
    first = array.reshape(-1)[0]
    if isinstance(first, bytes | np.bytes_):
        return bytes(first).decode("utf-8", "replace")
    return str(first.item() if isinstance(first, np.generic) else first)


class RolloutController:
    """All rollouts of one gateway; see the module docstring for the threading contract."""

    def __init__(
        self,
        manager: ServingControls[Servable],
        metrics: RolloutMetrics,
        skew_of: SkewSource | None = None,
        *,
        replica: str = "",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._skew_of = skew_of
        self._replica = replica
        self._rng = rng or random.Random()
        self._clock = clock
        self._rollouts: dict[str, _Rollout] = {}
        self._errors: dict[str, str] = {}
        self._store: StateStore | None = None
        self._store_up = True
        self._tick_seconds = RolloutsConfig().tick_seconds  # until `configure`
        self._lease_seconds = 3 * self._tick_seconds
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one state change at a time in this process
        self._pending: dict[str, ModelConfig] = {}
        """Rollouts not yet restored because the store was unreachable (retried per tick)."""
        self.identity = replica
        """This replica's name in the store (evidence, lease): the replica name, else set
        by the gateway to host:port; distinct per process, stable across a restart."""

    # -- configuration -------------------------------------------------------------

    async def configure(self, config: GatewayConfig) -> None:
        """Adopt the config's rollout blocks: restore each model's stored state (or create a
        PENDING one for a new candidate) and apply it. Call on the event loop."""
        rollouts = config.rollouts
        self._tick_seconds = rollouts.tick_seconds
        self._lease_seconds = rollouts.lease_seconds or 3 * rollouts.tick_seconds
        if any(m.rollout is not None for m in config.models) and self._store is None:
            self._store = await open_store(rollouts)
        async with self._lock:
            configured = {m.name for m in config.models if m.rollout is not None}
            for name in [n for n in self._rollouts if n not in configured]:
                del self._rollouts[name]
                self._release_effects(name, config.model(name))
            for name in [n for n in self._pending if n not in configured]:
                del self._pending[name]
                self._errors.pop(name, None)
            for model in config.models:
                if model.rollout is not None:
                    await self._configure_model(model, RolloutPlan.from_config(model))
        if self._task is None and self._store is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _configure_model(self, model: ModelConfig, plan: RolloutPlan) -> None:
        assert self._store is not None
        name = model.name

        def adopt(current: RolloutState | None) -> RolloutState:
            if current is not None and current.candidate == plan.candidate:
                return current
            return RolloutState.new(name, plan, previous=current)

        try:
            state = await self._store.update(name, adopt)
            assert state is not None
            own = await self._own_evidence(name, state.step_token)
        except CorruptStateError as exc:
            self._errors[name] = str(exc)
            self._rollouts.pop(name, None)
            log.error("rollout_state_corrupt", model=name, error=str(exc))
            return
        except StoreUnavailable as exc:
            self._store_down(exc)
            if name not in self._rollouts:
                self._pending[name] = model
                self._errors[name] = f"rollout state store unreachable ({exc}); retried every tick"
            return
        self._store_ok()
        self._pending.pop(name, None)
        self._errors.pop(name, None)
        old = self._rollouts.get(name)
        stats = own or StepStats(started_at=self._clock(), step=state.step_token)
        if old is not None and old.state.step_token == state.step_token:
            stats = old.stats
        self._rollouts[name] = _Rollout(model, plan, state, stats)
        self._apply(self._rollouts[name])
        log.info(
            "rollout_configured",
            model=name,
            rollout_id=state.rollout_id,
            status=state.status.value,
            weight=state.weight,
            primary=state.primary,
            candidate=state.candidate,
        )

    async def close(self) -> None:
        """Stop the periodic evaluation; flush this replica's evidence; close the store."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._store is not None:
            with contextlib.suppress(StoreUnavailable):
                for r in list(self._rollouts.values()):
                    if r.state.is_active:
                        await self._flush(r)
            await self._store.close()
            self._store = None

    async def _own_evidence(self, name: str, step: str) -> StepStats | None:
        """This replica's evidence of `step` in the store (after a restart: the counts of
        the process before it), to go on counting from."""
        assert self._store is not None
        found = (await self._store.evidence(name, step)).get(self.identity)
        if found is None:
            return None
        try:
            stats = StepStats.from_evidence(found)
        except (ValueError, KeyError, TypeError):
            return None
        return stats if stats.step == step else None

    def _store_ok(self) -> None:
        if not self._store_up:
            log.info("rollout_store_recovered", store=self._store_kind())
        self._store_up = True
        self._metrics.rollout_store(self._store_kind(), True)

    def _store_down(self, exc: StoreUnavailable) -> None:
        if self._store_up:
            log.warning(
                "rollout_store_unavailable",
                store=self._store_kind(),
                error=str(exc),
                detail="rollouts hold (no step, no automatic rollback) until it is back",
            )
        self._store_up = False
        self._metrics.rollout_store(self._store_kind(), False)

    def _store_kind(self) -> str:
        return self._store.kind if self._store is not None else ""

    # -- the request path ----------------------------------------------------------

    def route(
        self,
        model: str,
        headers: Mapping[str, str],
        feature: FeatureSource,
        available: Container[int],
    ) -> RouteDecision | None:
        """Where a request that names no version goes (None when the model has no rollout):
        the split's decision with the routing key, or, when the split chose a canary that
        is not `available`, the rollout's primary (reason "fallback")."""
        r = self._rollouts.get(model)
        if r is None:
            return None
        key = routing_key(r.plan, headers, feature) if r.state.is_active else None
        decision = decide(None, key, r.state, self._rng)
        if decision.arm is Arm.CANARY and decision.version not in available:
            return RouteDecision(Arm.PRIMARY, r.state.primary, "fallback", key, r.state.primary)
        return decision

    def primary_of(self, model: str) -> int | None:
        """The rollout's primary version (None without a rollout)."""
        r = self._rollouts.get(model)
        return None if r is None else r.state.primary

    def record(self, model: str, arm: Arm, version: int, code: str, seconds: float) -> None:
        """Count one request the split assigned (its gRPC status name and latency)."""
        self._metrics.arm_request(model, arm.value, version, code, seconds)
        r = self._rollouts.get(model)
        if r is not None and r.state.is_active:
            r.stats.record(arm, code, seconds)

    def on_canary_compared(self, model: str, primary: int, canary: int, diverged: bool) -> None:
        """A canary answer was compared with the primary's (the mirror's canary lane)."""
        r = self._rollouts.get(model)
        if (
            r is not None
            and r.state.is_active
            and (r.state.primary, r.state.candidate) == (primary, canary)
        ):
            r.stats.canary.record_comparison(diverged)

    # -- periodic evaluation -------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_seconds)  # the tick period is the behaviour
            await self.tick_all()

    async def tick_all(self) -> None:
        """One tick of every rollout (the periodic task's body): retry restoring the ones
        the store was down for, tick each, and report the store's reachability. Never
        raises."""
        for model in list(self._pending.values()):
            async with self._lock:
                await self._configure_model(model, RolloutPlan.from_config(model))
        for name in list(self._rollouts):
            try:
                await self.tick(name)
                self._store_ok()
            except StoreUnavailable as exc:
                self._store_down(exc)
            except Unavailable:
                pass  # an automatic action found the store down: reported by `act`
            except Exception:
                log.exception("rollout_tick_failed", model=name)

    async def tick(self, name: str) -> None:
        """One evaluation of `name`'s rollout: follow the stored state, flush this replica's
        evidence, and, when this replica holds the judging lease, auto-start, feed the skew
        gate, judge the step on the fleet's evidence and persist what changed.
        StoreUnavailable propagates (the caller reports it; the rollout holds)."""
        assert self._store is not None
        r = self._rollouts.get(name)
        if r is None:
            return
        try:
            stored = await self._store.load(name)
        except CorruptStateError as exc:
            log.error("rollout_state_corrupt", model=name, error=str(exc))
            return
        if stored is None or _behind(stored, r.state):
            # The store lost the state (a Redis restarted without persistence, a failover
            # to an empty replica, a deleted file), or another replica put back an older
            # one after such a loss: put back the newest this replica holds.
            held = r.state

            def restore(current: RolloutState | None) -> RolloutState | None:
                return held if current is None or _behind(current, held) else current

            stored = await self._store.update(name, restore)
            log.warning("rollout_state_restored", model=name, rollout_id=held.rollout_id)
        if stored is not None and stored != r.state:
            self._adopt(r, stored)
        state = r.state
        if state.is_active:
            await self._flush(r)
        if not await self._store.acquire_lease(name, self.identity, self._lease_seconds):
            return  # another replica judges this tick
        if state.status is Status.PENDING and r.config.rollout and r.config.rollout.auto_start:
            if not self._missing(r):
                await self.act(name, "start", actor="auto", reason="auto_start")
            return
        if state.status is not Status.RUNNING:
            return
        missing = self._missing(r, candidate_only=True)
        if missing and self._failed(name, state.candidate):
            reason = f"candidate version {state.candidate} is not available ({missing})"
            at = self._clock()

            def fail(current: RolloutState | None) -> RolloutState | None:
                if current is None:
                    return None
                return ro.rollback(current, at, reason, actor="auto")[0]

            await self._commit(r, fail)
            return
        if self._skew_of is not None:
            skew = self._skew_of(name, state.candidate)
            if skew is not None:
                r.stats.canary.record_skew(skew)
        fleet = self._fleet(r)
        now = self._clock()
        new, decision = ro.tick(state, r.plan, fleet, now)
        if decision is None:
            return
        if decision.action == "hold":
            if decision.reason != r.waiting_for:
                log.debug("rollout_hold", model=name, reason=decision.reason)
            r.waiting_for = decision.reason
            return

        def judged(current: RolloutState | None) -> RolloutState | None:
            # Only the state that was judged may change: a state another replica (or an
            # operator) changed since is kept, and re-judged on the next tick's evidence.
            return new if current == state else current

        await self._commit(r, judged)

    async def _flush(self, r: _Rollout) -> None:
        """Replace this replica's evidence of the current step in the store, and read the
        other replicas' (for the fleet's sums)."""
        assert self._store is not None
        name, step = r.config.name, r.state.step_token
        if r.stats.step == step:
            await self._store.put_evidence(name, step, self.identity, r.stats.to_evidence())
        others: list[tuple[str, StepStats]] = []
        for replica, evidence in sorted((await self._store.evidence(name, step)).items()):
            if replica == self.identity:
                continue
            try:
                part = StepStats.from_evidence(evidence)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "rollout_evidence_unreadable", model=name, replica=replica, error=str(exc)
                )
                continue
            if part.step == step:
                others.append((replica, part))
        r.others = tuple(others)

    def _fleet(self, r: _Rollout) -> StepStats:
        """The step's statistics summed over the fleet: this replica's live counts and the
        others' as last flushed."""
        parts = [r.stats, *(s for _, s in r.others if s.step == r.stats.step)]
        started = min(p.started_at for p in parts)
        return StepStats.fleet(parts, started, r.stats.step)

    # -- manual actions ------------------------------------------------------------

    async def act(
        self,
        name: str,
        action: str,
        weight: float | None = None,
        reason: str = "",
        *,
        actor: ro.Actor = "admin",
    ) -> RolloutStatus:
        """Apply a manual action (see `ACTIONS`) and return the new status.

        Raises NotFound (no rollout for `name`), FailedPrecondition (not allowed in the
        current status, or a version it needs is not available) or InvalidInput.
        """
        r = self._rollout(name)
        if action not in ACTIONS:
            raise InvalidInput(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
        if action in ("start", "resume", "set_weight"):
            missing = self._missing(r)
            if missing:
                raise FailedPrecondition(f"cannot {action} the rollout of '{name}': {missing}")
        if action == "set_weight" and weight is None:
            raise InvalidInput("weight: expected a percentage in (0, 100]")
        plan = r.plan
        now = self._clock()

        def change(current: RolloutState | None) -> RolloutState:
            cur = current if current is not None else r.state
            if action == "start":
                if cur.status is Status.ROLLED_BACK:
                    cur = RolloutState.new(name, plan, previous=cur)
                elif cur.status is Status.PROMOTED:
                    raise InvalidTransition(
                        f"rollout {cur.rollout_id} already promoted version {cur.candidate}; "
                        "name a new candidate in the config to start another rollout"
                    )
                return ro.start(cur, plan, now, actor=actor)[0]
            if action == "set_weight":
                assert weight is not None
                return ro.set_weight(cur, plan, weight, now, reason, actor=actor)[0]
            if action == "rollback":
                return ro.rollback(cur, now, reason or "rolled back by an operator", actor=actor)[0]
            fn = {"pause": ro.pause, "resume": ro.resume, "promote": ro.promote}.get(action)
            if fn is not None:
                return fn(cur, now, reason, actor=actor)[0]
            return ro.release(cur, now, reason, actor=actor)[0]

        try:
            await self._commit(r, change)
        except StoreUnavailable as exc:
            self._store_down(exc)
            raise Unavailable(
                f"cannot {action} the rollout of '{name}': the rollout state store is "
                f"unreachable ({exc}); nothing changed, try again"
            ) from exc
        except InvalidTransition as exc:
            raise FailedPrecondition(str(exc)) from exc
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        return self.status(name)

    # -- status --------------------------------------------------------------------

    def models(self) -> list[str]:
        """Models with a configured rollout (including ones whose state is unreadable)."""
        return sorted({*self._rollouts, *self._errors})

    def status(self, name: str) -> RolloutStatus:
        """A snapshot of `name`'s rollout (admin service); unreadable stored state gives a
        status with only its `error`."""
        if name in self._errors:
            return RolloutStatus.unreadable(name, self._errors[name])
        r = self._rollout(name)
        stats = self._fleet(r)  # a new object: later requests do not change it
        own = copy.deepcopy(r.stats)
        parts = sorted([(self.identity, own), *((n, s) for n, s in r.others if s.step == own.step)])
        return RolloutStatus(
            model=name,
            replica=self._replica,
            state=r.state,
            plan=r.plan,
            stats=stats,
            gates=tuple(evaluate(r.plan.gates, stats, r.plan.min_samples)),
            waiting_for=r.waiting_for if r.state.status is Status.RUNNING else "",
            missing=self._missing(r),
            replicas=tuple(parts),
            store=self._store_kind(),
            store_up=self._store_up,
        )

    # -- internals -----------------------------------------------------------------

    def _rollout(self, name: str) -> _Rollout:
        r = self._rollouts.get(name)
        if r is None:
            if name in self._errors:
                raise FailedPrecondition(self._errors[name])
            self._manager.view(name)  # NotFound for unknown models
            raise NotFound(f"model '{name}' has no rollout configured")
        return r

    def _missing(self, r: _Rollout, candidate_only: bool = False) -> str:
        """'' when both arms are available, else which version is not (and its state)."""
        view = self._manager.table.get(r.config.name)
        versions = view.versions if view is not None else {}
        wanted = [("candidate", r.state.candidate)]
        if not candidate_only:
            wanted.append(("primary", r.state.primary))
        missing = [
            f"{role} version {v} is not available" for role, v in wanted if v not in versions
        ]
        return "; ".join(missing)

    def _failed(self, name: str, version: int) -> bool:
        return any(
            s.version == version and s.state in (VersionState.FAILED, VersionState.END)
            for s in self._manager.statuses(name)
        )

    async def _commit(
        self, r: _Rollout, change: Callable[[RolloutState | None], RolloutState | None]
    ) -> None:
        """Apply `change` to the newest stored state under the store's lock; adopt and log
        the result."""
        assert self._store is not None
        async with self._lock:
            name = r.config.name
            new = await self._store.update(name, change)
            if new is not None and new != r.state:
                self._adopt(r, new)

    def _adopt(self, r: _Rollout, new: RolloutState) -> None:
        """Make `new` this replica's state: log decisions it has that ours has not, reset
        the step statistics on a new step, apply the effects."""
        old = r.state
        if new.rollout_id == old.rollout_id:
            fresh = new.history[len(old.history) :] if len(new.history) >= len(old.history) else ()
        else:
            fresh = new.history
        for decision in fresh:
            self._log_decision(new, decision)
        if new.step_token != r.stats.step and new.is_active:
            # (an ended rollout keeps the last step's statistics: the evidence it ended on)
            r.stats.reset(self._clock(), new.step_token)
        r.state = new
        r.waiting_for = ""
        self._apply(r)

    def _log_decision(self, state: RolloutState, decision: Decision) -> None:
        self._metrics.rollout_decision(state.model, decision.action, decision.actor)
        log.info(
            "rollout_decision",
            model=state.model,
            rollout_id=state.rollout_id,
            action=decision.action,
            actor=decision.actor,
            reason=decision.reason,
            from_weight=decision.from_weight,
            to_weight=decision.to_weight,
            gates=list(decision.gates),
            status=state.status.value,
            primary=state.primary,
            candidate=state.candidate,
            failed_gate=state.failed_gate,
            replica=self._replica,
        )

    def _apply(self, r: _Rollout) -> None:
        st = r.state
        name = r.config.name
        pins = {st.primary}
        if st.status in (Status.PENDING, Status.RUNNING, Status.PAUSED):
            pins.add(st.candidate)
        if st.previous_primary is not None:
            pins.add(st.previous_primary)
        self._manager.pin(name, frozenset(pins))
        label = r.config.primary if isinstance(r.config.primary, str) else None
        if label is not None:
            self._manager.set_label(name, label, st.primary)
        else:
            self._manager.set_primary(name, st.primary)
        self._metrics.rollout_state(
            name, st.primary, st.candidate, st.weight if st.is_active else 0.0, st.status.value
        )

    def _release_effects(self, name: str, model: ModelConfig | None) -> None:
        """The rollout block is gone: the config decides again."""
        if model is None:
            return
        self._manager.pin(name, frozenset())
        if isinstance(model.primary, str):
            self._manager.set_label(name, model.primary, None)
        self._manager.set_primary(name, None)


def _behind(stored: RolloutState, held: RolloutState) -> bool:
    """`stored` is an older state of the rollout `held` is in: a rollout's history only
    grows, so a store showing fewer decisions than a replica adopted has lost data."""
    return stored.rollout_id == held.rollout_id and len(stored.history) < len(held.history)


async def open_store(config: RolloutsConfig) -> StateStore:
    """The state store `rollouts.store` names: the `file` store in `state_dir`, or Redis."""
    if config.store.kind == "redis":
        from gateway.routing.redis_store import RedisStateStore  # only with a redis store

        return RedisStateStore.from_config(config.store)
    from gateway.routing.file_store import FileStateStore

    return await FileStateStore.open(config.state_dir)
