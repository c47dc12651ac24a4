"""What `RolloutController.status()` (and `act()`) report about one model's rollout.

A frozen snapshot of the controller's typed pieces, for the admin service (which turns
it into its protobuf by attribute access) and, through :meth:`RolloutStatus.to_dict`,
for JSON output and logs. Nothing here is re-described: the state, plan, step
statistics and gate verdicts are the routing layer's own classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.routing.arm_stats import StepStats
from gateway.routing.gates import GateResult
from gateway.routing.rollout import RolloutPlan, RolloutState

__all__ = ["RolloutStatus"]


@dataclass(frozen=True)
class RolloutStatus:
    """One model's rollout as one replica sees it.

    Either readable (``state``, ``plan`` and ``stats`` set, ``error`` empty) or
    unreadable (``error`` says why the stored state cannot be read; ``state``, ``plan``
    and ``stats`` are None, nothing else is set): see :meth:`unreadable`.

    * ``stats`` is a copy of the current step's statistics, taken when the status was;
      it does not change afterwards (do not mutate it).
    * ``gates`` are the enabled gates' verdicts on ``stats``, in evaluation order.
    * ``waiting_for`` says why a RUNNING rollout has not advanced yet ('' otherwise).
    * ``missing`` names the arm versions that are not available ('' when both are).
    """

    model: str
    replica: str = ""
    state: RolloutState | None = None
    plan: RolloutPlan | None = None
    stats: StepStats | None = None
    gates: tuple[GateResult, ...] = ()
    waiting_for: str = ""
    missing: str = ""
    error: str = ""
    replicas: tuple[tuple[str, StepStats], ...] = ()
    """Each replica's share of `stats` (which is the fleet's sum), by replica name."""
    store: str = "file"
    """The state store's kind."""
    store_up: bool = True
    """Whether the store's last call succeeded (false: the rollout holds)."""

    def __post_init__(self) -> None:
        parts = (self.state, self.plan, self.stats)
        if self.error:
            assert all(p is None for p in parts), "an unreadable rollout has no state"
        else:
            assert all(p is not None for p in parts), "a readable rollout needs state, plan, stats"

    @classmethod
    def unreadable(cls, model: str, error: str) -> RolloutStatus:
        """The status of a rollout whose stored state cannot be read."""
        assert error, "an unreadable rollout needs its error"
        return cls(model=model, error=error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: ``{model, error}`` when unreadable, else ``{model, replica,
        state, plan, stats, gates, waiting_for, missing}`` (each piece's own ``to_dict``)."""
        if self.error:
            return {"model": self.model, "error": self.error}
        assert self.state is not None and self.plan is not None and self.stats is not None
        return {
            "model": self.model,
            "replica": self.replica,
            "state": self.state.to_dict(),
            "plan": self.plan.to_dict(),
            "stats": self.stats.to_dict(),
            "gates": [g.to_dict() for g in self.gates],
            "waiting_for": self.waiting_for,
            "missing": self.missing,
            "replicas": {name: stats.to_dict() for name, stats in self.replicas},
            "store": self.store,
            "store_up": self.store_up,
        }
