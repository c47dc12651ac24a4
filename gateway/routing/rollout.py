"""The canary rollout state machine: pure transition functions over immutable states.

No I/O, no clock, no randomness: every function takes ``now`` (Unix seconds,
wall clock, because states are persisted and shared by replicas) and returns
``(new_state, decision)``; ``decision`` is ``None`` when nothing happened.
A state change is recorded in ``history`` (and the returned state is a new
object); a ``hold`` decision from :func:`tick` explains the wait but changes
nothing, so it is not recorded and the same state object is returned.

Statuses::

    PENDING --start--> RUNNING --tick: step passed--> RUNNING (next step) ... --> PROMOTED
                        |  ^                         tick: gate failed, on_failure=rollback
                  pause |  | resume                  --> ROLLED_BACK (weight 0)
                        v  |                         tick: gate failed, on_failure=pause
                       PAUSED                        --> PAUSED (weight kept)

Manual actions (``actor="admin"`` by default): :func:`pause`, :func:`resume`,
:func:`set_weight`, :func:`promote`, :func:`rollback`. Repeating an action
whose target status is already reached is a no-op ``(state, None)``; an action
that makes no sense from the current status raises :class:`InvalidTransition`.

Advance criteria of :func:`tick` (all at once, checked on RUNNING only):

1. no enabled gate failed (a judged failure triggers ``plan.on_failure`` at
   once, even mid-step: fail fast);
2. ``now - step_started_at >= plan.min_step_seconds``;
3. the step's *canary* requests (split traffic only, any status code)
   ``>= plan.min_requests_per_step``: the gates judge the canary, and the
   primary always has at least as much traffic below 50 %;
4. every enabled gate is judged (enough samples; see ``gates``).

Then the weight moves to the first step above the current weight; at 100 %
the rollout is PROMOTED instead (the candidate becomes the primary).
On ``on_failure: pause`` the weight is kept (the canary keeps its share until
an operator acts): choose ``rollback`` when a failing canary must stop at once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, Final, Literal, get_args

from gateway.config import ModelConfig, RoutingKeyConfig
from gateway.routing.arm_stats import StepStats
from gateway.routing.gates import GateResult, Gates, MinSamples, evaluate

__all__ = [
    "Action",
    "Actor",
    "Decision",
    "InvalidTransition",
    "RolloutPlan",
    "RolloutState",
    "RoutingKey",
    "Status",
    "pause",
    "promote",
    "release",
    "resume",
    "rollback",
    "set_weight",
    "start",
    "tick",
]

SCHEMA_VERSION: Final = 1
MAX_HISTORY: Final = 500
"""Most decisions kept in ``RolloutState.history`` (oldest dropped first)."""

Action = Literal[
    "start", "advance", "hold", "pause", "resume", "rollback", "promote", "set_weight", "release"
]
Actor = Literal["auto", "admin"]
OnFailure = Literal["rollback", "pause"]
KeySource = Literal["header", "feature"]

_ACTIONS: Final = frozenset(get_args(Action))
_ACTORS: Final = frozenset(get_args(Actor))
_KEY_SOURCES: Final = get_args(KeySource)


class InvalidTransition(ValueError):
    """A manual action that is not allowed from the rollout's current status."""


class Status(enum.Enum):
    """Where a rollout is. RUNNING and PAUSED are *active* (the canary gets traffic)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


# ---------------------------------------------------------------- validation helpers


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    return out


def _integer(value: Any, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _string(value: Any, key: str, *, allow_none: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_none):
        raise ValueError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def _pct(weight: float) -> str:
    return f"{weight:g}%"


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class RoutingKey:
    """Where a request's routing key comes from: a metadata header or an input feature.

    Header names are lowercased (gRPC metadata keys are lowercase).
    """

    source: KeySource
    name: str

    def __post_init__(self) -> None:
        assert self.source in _KEY_SOURCES and self.name, (self.source, self.name)
        if self.source == "header":
            object.__setattr__(self, "name", self.name.lower())

    @classmethod
    def from_config(cls, cfg: RoutingKeyConfig) -> RoutingKey:
        """The ``rollout.routing_key`` block (exactly one of ``header``, ``feature``)."""
        if cfg.header is not None:
            return cls("header", cfg.header)
        assert cfg.feature is not None  # the config allows exactly one
        return cls("feature", cfg.feature)

    def to_dict(self) -> dict[str, str]:
        """The config form, ``{source: name}``."""
        return {self.source: self.name}


@dataclass(frozen=True)
class RolloutPlan:
    """A model's rollout block, with labels resolved to versions.

    Built with :meth:`from_config` from a validated :class:`~gateway.config.ModelConfig`,
    whose validators guarantee what the state machine relies on (asserted here):
    ``steps`` are increasing percentages in (0, 100] ending at 100, and the candidate
    is not the primary. The config models hold every default.
    """

    candidate: int
    primary: int
    steps: tuple[float, ...]
    min_requests_per_step: int
    min_step_seconds: float
    gates: Gates
    on_failure: OnFailure
    routing_key: RoutingKey | None
    min_samples: MinSamples

    def __post_init__(self) -> None:
        steps = self.steps
        assert steps and steps[0] > 0.0 and steps[-1] == 100.0, steps
        assert all(a < b for a, b in pairwise(steps)), steps
        assert self.candidate != self.primary, (self.candidate, self.primary)

    @classmethod
    def from_config(cls, model: ModelConfig) -> RolloutPlan:
        """The ``rollout`` block of ``model`` (which must have one), its candidate and
        primary resolved against the model's ``version_labels``."""
        r = model.rollout
        if r is None:
            raise ValueError(f"model {model.name!r} has no rollout block")
        candidate, primary = model.rollout_versions()
        return cls(
            candidate=candidate,
            primary=primary,
            steps=tuple(float(s) for s in r.steps),
            min_requests_per_step=r.min_requests_per_step,
            min_step_seconds=float(r.min_step_seconds),
            gates=Gates.from_config(r.gates),
            on_failure=r.on_failure,
            routing_key=None if r.routing_key is None else RoutingKey.from_config(r.routing_key),
            min_samples=MinSamples.from_config(r.min_samples),
        )

    def to_dict(self) -> dict[str, Any]:
        """The plan as shown by the rollout status (versions as numbers; ``min_samples``
        left out)."""
        out: dict[str, Any] = {
            "candidate": self.candidate,
            "primary": self.primary,
            "steps": list(self.steps),
            "min_requests_per_step": self.min_requests_per_step,
            "min_step_seconds": self.min_step_seconds,
            "gates": self.gates.to_dict(),
            "on_failure": self.on_failure,
        }
        if self.routing_key is not None:
            out["routing_key"] = self.routing_key.to_dict()
        return out

    def next_step(self, weight: float) -> tuple[int, float] | None:
        """``(index, percent)`` of the first step above ``weight``, or None at the top."""
        for index, step in enumerate(self.steps):
            if step > weight:
                return index, step
        return None

    def step_index_of(self, weight: float) -> int:
        """Index of the largest step <= ``weight`` (0 below the first step)."""
        return max(0, sum(1 for step in self.steps if step <= weight) - 1)


# ---------------------------------------------------------------- decisions and state


@dataclass(frozen=True)
class Decision:
    """One thing the rollout did (or, for ``hold``, why it did not move).

    ``at`` is Unix seconds; ``gates`` holds ``GateResult.to_dict()`` dicts of
    the evaluation behind an automatic decision; ``from_weight`` /
    ``to_weight`` are the canary percentages before and after.
    """

    at: float
    action: Action
    reason: str
    gates: tuple[dict[str, Any], ...] = ()
    actor: Actor = "auto"
    from_weight: float = 0.0
    to_weight: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "at": self.at,
            "action": self.action,
            "reason": self.reason,
            "gates": [dict(g) for g in self.gates],
            "actor": self.actor,
            "from_weight": self.from_weight,
            "to_weight": self.to_weight,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "decision") -> Decision:
        """Inverse of :meth:`to_dict`; ValueError names the bad key."""
        data = _mapping(data, path)
        action = data.get("action")
        if action not in _ACTIONS:
            raise ValueError(f"{path}.action: unknown action {action!r}")
        actor = data.get("actor", "auto")
        if actor not in _ACTORS:
            raise ValueError(f"{path}.actor: expected auto or admin, got {actor!r}")
        gates = data.get("gates", [])
        if not isinstance(gates, list):
            raise ValueError(f"{path}.gates: expected a list, got {type(gates).__name__}")
        for i, gate in enumerate(gates):
            GateResult.from_dict(_mapping(gate, f"{path}.gates[{i}]"))  # validates
        reason = data.get("reason", "")
        if not isinstance(reason, str):
            raise ValueError(f"{path}.reason: expected a string, got {reason!r}")
        return cls(
            at=_number(data.get("at"), f"{path}.at"),
            action=action,
            reason=reason,
            gates=tuple(dict(g) for g in gates),
            actor=actor,
            from_weight=_number(data.get("from_weight", 0.0), f"{path}.from_weight"),
            to_weight=_number(data.get("to_weight", 0.0), f"{path}.to_weight"),
        )


def make_rollout_id(model: str, candidate: int, attempt: int) -> str:
    """``"{model}/{candidate}/{attempt}"``: stable across processes and restarts."""
    return f"{model}/{candidate}/{attempt}"


@dataclass(frozen=True)
class RolloutState:
    """One model's rollout, persisted as JSON (:meth:`to_dict` / :meth:`from_dict`).

    * ``rollout_id`` seeds the routing hash; derived from model, candidate and
      ``attempt`` (a per-model start counter), never random, so every replica
      routes a key the same way.
    * ``weight`` is the percent of split traffic currently routed to the canary
      (100 once PROMOTED, 0 once ROLLED_BACK).
    * ``primary`` is the version answering the rest; PROMOTED sets it to the
      candidate.
    * ``step_started_at`` is when the current step (re)started (None while
      PENDING); ``failed_gate`` names the failing gate(s) with figures.
    * ``previous_primary`` is the primary a promotion replaced: it stays loaded
      so that :func:`rollback` can revert the promotion at once, until
      :func:`release` lets it go.
    """

    rollout_id: str
    model: str
    primary: int
    candidate: int
    status: Status
    step_index: int
    weight: float
    step_started_at: float | None
    failed_gate: str | None = None
    history: tuple[Decision, ...] = ()
    attempt: int = 1
    previous_primary: int | None = None

    @classmethod
    def new(
        cls, model: str, plan: RolloutPlan, previous: RolloutState | None = None
    ) -> RolloutState:
        """A PENDING rollout of ``plan`` for ``model``.

        Pass the model's previous state (any status) as ``previous`` so the
        start counter, and with it the ``rollout_id``, moves on.
        """
        _string(model, "model")
        attempt = previous.attempt + 1 if previous is not None else 1
        return cls(
            rollout_id=make_rollout_id(model, plan.candidate, attempt),
            model=model,
            primary=plan.primary,
            candidate=plan.candidate,
            status=Status.PENDING,
            step_index=0,
            weight=0.0,
            step_started_at=None,
            attempt=attempt,
        )

    @property
    def is_active(self) -> bool:
        """RUNNING or PAUSED: the split is applied at ``weight``."""
        return self.status in (Status.RUNNING, Status.PAUSED)

    @property
    def step_token(self) -> str:
        """Identifies the current step; pass it to ``StepStats.reset`` (see ``StepStats``)."""
        started = None if self.step_started_at is None else float(self.step_started_at)
        return f"{self.rollout_id}@{float(self.weight)!r}@{started!r}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (with a ``schema`` version)."""
        return {
            "schema": SCHEMA_VERSION,
            "rollout_id": self.rollout_id,
            "model": self.model,
            "attempt": self.attempt,
            "primary": self.primary,
            "candidate": self.candidate,
            "status": self.status.value,
            "step_index": self.step_index,
            "weight": self.weight,
            "step_started_at": self.step_started_at,
            "failed_gate": self.failed_gate,
            "previous_primary": self.previous_primary,
            "history": [d.to_dict() for d in self.history],
        }

    @classmethod
    def from_dict(cls, data: Any) -> RolloutState:
        """Inverse of :meth:`to_dict`; ValueError names the missing or bad key."""
        data = _mapping(data, "state")
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise ValueError(f"schema: expected {SCHEMA_VERSION}, got {schema!r}")
        for key in ("rollout_id", "model", "primary", "candidate", "status", "weight"):
            if key not in data:
                raise ValueError(f"{key}: missing")
        status_value = data["status"]
        try:
            status = Status(status_value)
        except ValueError:
            allowed = [s.value for s in Status]
            raise ValueError(f"status: expected one of {allowed}, got {status_value!r}") from None
        weight = _number(data["weight"], "weight")
        if not 0.0 <= weight <= 100.0:
            raise ValueError(f"weight: expected a percentage in [0, 100], got {weight!r}")
        started = data.get("step_started_at")
        failed_gate = data.get("failed_gate")
        if failed_gate is not None and not isinstance(failed_gate, str):
            raise ValueError(f"failed_gate: expected a string or null, got {failed_gate!r}")
        previous = data.get("previous_primary")
        history = data.get("history", [])
        if not isinstance(history, list):
            raise ValueError(f"history: expected a list, got {type(history).__name__}")
        return cls(
            rollout_id=_string(data["rollout_id"], "rollout_id"),
            model=_string(data["model"], "model"),
            primary=_integer(data["primary"], "primary"),
            candidate=_integer(data["candidate"], "candidate"),
            status=status,
            step_index=_integer(data.get("step_index", 0), "step_index"),
            weight=weight,
            step_started_at=None if started is None else _number(started, "step_started_at"),
            failed_gate=failed_gate,
            history=tuple(Decision.from_dict(d, f"history[{i}]") for i, d in enumerate(history)),
            attempt=_integer(data.get("attempt", 1), "attempt", minimum=1),
            previous_primary=None if previous is None else _integer(previous, "previous_primary"),
        )


# ---------------------------------------------------------------- transitions

Transition = tuple[RolloutState, Decision | None]


def _record(
    state: RolloutState, decision: Decision, **changes: Any
) -> tuple[RolloutState, Decision]:
    history = (*state.history, decision)[-MAX_HISTORY:]
    return replace(state, history=history, **changes), decision


def _promoted(
    state: RolloutState, decision: Decision, **changes: Any
) -> tuple[RolloutState, Decision]:
    """The candidate becomes the primary (weight 100); the old primary is held."""
    return _record(
        state,
        decision,
        status=Status.PROMOTED,
        primary=state.candidate,
        previous_primary=state.primary,
        weight=100.0,
        **changes,
    )


def _check_plan(state: RolloutState, plan: RolloutPlan) -> None:
    if plan.candidate != state.candidate:
        raise ValueError(
            f"rollout {state.rollout_id} is for candidate {state.candidate}, the plan for "
            f"{plan.candidate}: start a new rollout (RolloutState.new(..., previous=state))"
        )


def _refuse(state: RolloutState, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"cannot {action} rollout {state.rollout_id}: it is {state.status.value}"
    )


def start(
    state: RolloutState, plan: RolloutPlan, now: float, *, actor: Actor = "auto"
) -> Transition:
    """PENDING -> RUNNING at ``plan.steps[0]`` percent; the step starts at ``now``.

    No-op when already RUNNING. From PAUSED / PROMOTED / ROLLED_BACK raises
    InvalidTransition (resume, or create a new rollout with
    ``RolloutState.new(model, plan, previous=state)``).
    """
    if state.status is Status.RUNNING:
        return state, None
    if state.status is not Status.PENDING:
        raise _refuse(state, "start")
    _check_plan(state, plan)
    weight = plan.steps[0]
    decision = Decision(
        at=now,
        action="start",
        reason=(
            f"rollout {state.rollout_id}: version {state.candidate} against "
            f"{state.primary}, steps {'/'.join(_pct(s) for s in plan.steps)}"
        ),
        actor=actor,
        from_weight=state.weight,
        to_weight=weight,
    )
    return _record(
        state,
        decision,
        status=Status.RUNNING,
        step_index=0,
        weight=weight,
        step_started_at=now,
        failed_gate=None,
    )


def tick(state: RolloutState, plan: RolloutPlan, stats: StepStats, now: float) -> Transition:
    """The periodic automatic decision for a RUNNING rollout (see the module doc).

    Returns ``(state, None)`` unless RUNNING; otherwise one of:

    * ``rollback`` / ``pause`` (per ``plan.on_failure``) when a gate failed,
      with ``failed_gate`` naming it and its figures;
    * ``hold`` (same state object, not recorded) naming what is missing;
    * ``advance`` to the next step (``step_started_at = now``: reset ``stats``
      with ``stats.reset(now, new_state.step_token)``);
    * ``promote`` when the 100 % step passed.

    ``stats`` from another step (``stats.step`` set and not equal to
    ``state.step_token``) only ever give a ``hold``. Raises ValueError when
    ``plan`` is for another candidate.
    """
    if state.status is not Status.RUNNING:
        return state, None
    _check_plan(state, plan)
    weight = state.weight
    if stats.step and stats.step != state.step_token:
        return state, Decision(
            at=now,
            action="hold",
            reason="step statistics belong to another step; reset them for this step",
            from_weight=weight,
            to_weight=weight,
        )
    results = evaluate(plan.gates, stats, plan.min_samples)
    gate_dicts = tuple(r.to_dict() for r in results)
    failed = [r for r in results if r.failed]
    if failed:
        failed_gate = "; ".join(r.describe() for r in failed)
        if plan.on_failure == "rollback":
            decision = Decision(
                now, "rollback", f"gate failed: {failed_gate}", gate_dicts, "auto", weight, 0.0
            )
            return _record(
                state, decision, status=Status.ROLLED_BACK, weight=0.0, failed_gate=failed_gate
            )
        decision = Decision(
            now, "pause", f"gate failed: {failed_gate}", gate_dicts, "auto", weight, weight
        )
        return _record(state, decision, status=Status.PAUSED, failed_gate=failed_gate)

    started = state.step_started_at if state.step_started_at is not None else now
    elapsed = now - started
    canary_requests = stats.canary.requests
    waiting: list[str] = []
    if elapsed < plan.min_step_seconds:
        waiting.append(f"step time {elapsed:.0f}/{plan.min_step_seconds:g} s")
    if canary_requests < plan.min_requests_per_step:
        waiting.append(f"canary requests {canary_requests}/{plan.min_requests_per_step}")
    waiting.extend(f"{r.name}: {r.detail}" for r in results if not r.judged)
    if waiting:
        reason = "waiting for " + "; ".join(waiting)
        return state, Decision(now, "hold", reason, gate_dicts, "auto", weight, weight)

    passed = (
        f"step {_pct(weight)} passed after {elapsed:.0f} s with {canary_requests} canary "
        f"requests" + (", gates passed" if results else "")
    )
    nxt = plan.next_step(weight)
    if nxt is None:
        decision = Decision(
            now,
            "promote",
            f"{passed}; version {state.candidate} is the primary",
            gate_dicts,
            "auto",
            weight,
            100.0,
        )
        return _promoted(state, decision, step_index=len(plan.steps) - 1, failed_gate=None)
    index, step = nxt
    decision = Decision(
        now, "advance", f"{passed}; next {_pct(step)}", gate_dicts, "auto", weight, step
    )
    return _record(state, decision, step_index=index, weight=step, step_started_at=now)


def pause(
    state: RolloutState, now: float, reason: str = "", *, actor: Actor = "admin"
) -> Transition:
    """RUNNING -> PAUSED (weight kept; ``tick`` does nothing until :func:`resume`).

    No-op when PAUSED; InvalidTransition from any other status.
    """
    if state.status is Status.PAUSED:
        return state, None
    if state.status is not Status.RUNNING:
        raise _refuse(state, "pause")
    decision = Decision(now, "pause", reason or "paused", (), actor, state.weight, state.weight)
    return _record(state, decision, status=Status.PAUSED)


def resume(
    state: RolloutState, now: float, reason: str = "", *, actor: Actor = "admin"
) -> Transition:
    """PAUSED -> RUNNING; the current step restarts at ``now`` (reset the stats) and
    ``failed_gate`` is cleared.

    No-op when RUNNING; InvalidTransition from any other status.
    """
    if state.status is Status.RUNNING:
        return state, None
    if state.status is not Status.PAUSED:
        raise _refuse(state, "resume")
    decision = Decision(now, "resume", reason or "resumed", (), actor, state.weight, state.weight)
    return _record(state, decision, status=Status.RUNNING, step_started_at=now, failed_gate=None)


def set_weight(
    state: RolloutState,
    plan: RolloutPlan,
    percent: float,
    now: float,
    reason: str = "",
    *,
    actor: Actor = "admin",
) -> Transition:
    """Route ``percent`` (in (0, 100]) to the canary now; status unchanged.

    Allowed when RUNNING or PAUSED (use :func:`rollback` for 0). The step
    restarts at ``now`` (reset the stats); the next advance goes to the first
    plan step above ``percent``, and at 100 a passing step promotes. Same
    weight: no-op. ValueError for a bad percentage, InvalidTransition from
    another status.
    """
    value = _number(percent, "percent")
    if not 0.0 < value <= 100.0:
        raise ValueError(f"percent: expected a percentage in (0, 100], got {percent!r}")
    if not state.is_active:
        raise _refuse(state, "set the weight of")
    _check_plan(state, plan)
    if value == state.weight:
        return state, None
    decision = Decision(
        now,
        "set_weight",
        reason or f"weight set to {_pct(value)}",
        (),
        actor,
        state.weight,
        value,
    )
    return _record(
        state,
        decision,
        weight=value,
        step_index=plan.step_index_of(value),
        step_started_at=now,
    )


def promote(
    state: RolloutState, now: float, reason: str = "", *, actor: Actor = "admin"
) -> Transition:
    """PENDING / RUNNING / PAUSED -> PROMOTED: the candidate becomes the primary (weight 100);
    the old primary is kept as ``previous_primary`` (for :func:`rollback`).

    No-op when PROMOTED; InvalidTransition when ROLLED_BACK (start a new rollout).
    """
    if state.status is Status.PROMOTED:
        return state, None
    if state.status is Status.ROLLED_BACK:
        raise _refuse(state, "promote")
    decision = Decision(
        now,
        "promote",
        reason or f"promoted: version {state.candidate} is the primary",
        (),
        actor,
        state.weight,
        100.0,
    )
    return _promoted(state, decision)


def rollback(state: RolloutState, now: float, reason: str, *, actor: Actor = "admin") -> Transition:
    """PENDING / RUNNING / PAUSED -> ROLLED_BACK: weight 0, the primary answers everything.

    ``failed_gate`` is kept (a pause on a failed gate followed by a manual
    rollback still names the gate). From PROMOTED it reverts the promotion while
    the old primary is still held (``previous_primary``): that version is the
    primary again, at once. No-op when ROLLED_BACK; InvalidTransition when
    PROMOTED and released (roll forward with a new rollout of the old version).
    """
    if state.status is Status.ROLLED_BACK:
        return state, None
    if state.status is Status.PROMOTED:
        if state.previous_primary is None:
            raise _refuse(state, "roll back (the old primary was released)")
        old = state.previous_primary
        decision = Decision(
            now,
            "rollback",
            reason or f"promotion reverted: version {old} is the primary again",
            (),
            actor,
            state.weight,
            0.0,
        )
        return _record(
            state,
            decision,
            status=Status.ROLLED_BACK,
            primary=old,
            previous_primary=None,
            weight=0.0,
        )
    decision = Decision(now, "rollback", reason or "rolled back", (), actor, state.weight, 0.0)
    return _record(state, decision, status=Status.ROLLED_BACK, weight=0.0)


def release(
    state: RolloutState, now: float, reason: str = "", *, actor: Actor = "admin"
) -> Transition:
    """PROMOTED: stop holding the old primary (it may be unloaded; no more instant revert).

    No-op when nothing is held; InvalidTransition from any status but PROMOTED.
    """
    if state.status is not Status.PROMOTED:
        raise _refuse(state, "release the old primary of")
    if state.previous_primary is None:
        return state, None
    decision = Decision(
        now,
        "release",
        reason or f"old primary {state.previous_primary} released",
        (),
        actor,
        state.weight,
        state.weight,
    )
    return _record(state, decision, previous_primary=None)
