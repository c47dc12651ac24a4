"""gateway.v1.AdminService: the gateway's own status and control API."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from gateway import __version__
from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.analysis.skew import FeatureSkew
from gateway.core.errors import InvalidInput, NotFound
from gateway.core.model_view import Servable
from gateway.core.protocols import ModelRegistry
from gateway.core.states import VersionState
from gateway.routing.arm_stats import ArmStats
from gateway.routing.status import RolloutStatus
from gateway.serving.lane_summary import LaneSummary
from gateway.sinks.metrics import Metrics
from gateway.transport.auth import AdminAuth
from gateway.transport.calls import unary

SkewReport = Callable[[str], Mapping[int, Mapping[str, FeatureSkew]]]
"""model -> {version: {feature: its current skew}}; NotFound for an unknown model."""

DivergenceSummary = Callable[[str], Sequence[LaneSummary]]
"""model -> the live figures of each of its mirror lanes; NotFound for an unknown model."""


class RolloutControls(Protocol):
    """What the admin service reads and does of rollouts
    (`routing.controller.RolloutController`)."""

    def status(self, name: str) -> RolloutStatus:
        """A snapshot of `name`'s rollout; NotFound without one."""

    async def act(
        self, name: str, action: str, weight: float | None = None, reason: str = ""
    ) -> RolloutStatus:
        """Apply a manual action (`routing.controller.ACTIONS`); the new status."""


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):  # type: ignore[misc]
    """Model status with explicit FAILED reasons, and config reload."""

    protocol = "admin"
    """The `protocol` label of its request metrics."""

    def __init__(
        self,
        manager: ModelRegistry[Servable],
        metrics: Metrics,
        reload: Callable[[], Awaitable[list[str]]],
        skew_report: SkewReport,
        divergence_summary: DivergenceSummary,
        rollouts: RolloutControls | None = None,
        auth: AdminAuth | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._reload = reload
        self._skew_report = skew_report
        self._divergence_summary = divergence_summary
        self._rollouts = rollouts
        self._auth = auth or AdminAuth(None)
        self._started = time.monotonic()

    @unary("admin.GetStatus")
    async def GetStatus(self, request: Any, context: Any) -> Any:
        """Every configured model (or `request.model`) with its versions and labels."""
        names = [request.model] if request.model else self.manager.model_names()
        response = admin_pb2.GetStatusResponse(
            uptime_seconds=time.monotonic() - self._started, gateway_version=__version__
        )
        for name in names:
            statuses = self.manager.statuses(name)
            labels = self.manager.labels(name)
            model = response.models.add(name=name, serving=bool(self.manager.view(name).versions))
            model.base_path = str(self.manager.base_path(name))
            for label, version in sorted(labels.items()):
                model.labels[label] = version
            for status in statuses:
                model.versions.add(
                    version=status.version,
                    state=status.state.value,
                    error=status.error if status.state is VersionState.FAILED else "",
                    failures=status.failures,
                    warmup_records=status.warmup_records,
                    labels=sorted(k for k, v in labels.items() if v == status.version),
                    runtime=status.runtime,
                )
        return response

    @unary("admin.ReloadConfig")
    async def ReloadConfig(self, request: Any, context: Any) -> Any:
        """Re-read the config file and apply it."""
        del request
        self._auth.check(context, "ReloadConfig")
        return admin_pb2.ReloadConfigResponse(changes=await self._reload())

    @unary("admin.GetFeatureSkew")
    async def GetFeatureSkew(self, request: Any, context: Any) -> Any:
        """Current skew per version and feature of one model."""
        if not request.model:
            raise InvalidInput("model: expected a model name")
        response = admin_pb2.GetFeatureSkewResponse(model=request.model)
        for version, features in sorted(self._skew_report(request.model).items()):
            for name, skew in sorted(features.items()):
                entry = response.features.add(
                    version=version,
                    feature=name,
                    categorical=skew.categorical,
                    num_values=skew.num_values,
                    js=skew.js,
                    linf=skew.linf,
                    psi=skew.psi,
                    crossed=list(skew.crossed),
                    drifted=skew.drifted,
                )
                for metric in ("js", "linf", "psi"):
                    threshold = getattr(skew.thresholds, metric)
                    if threshold is not None:
                        setattr(entry, f"{metric}_threshold", threshold)
        return response

    @unary("admin.GetDivergenceSummary")
    async def GetDivergenceSummary(self, request: Any, context: Any) -> Any:
        """Live divergence figures per shadow lane of one model."""
        if not request.model:
            raise InvalidInput("model: expected a model name")
        response = admin_pb2.GetDivergenceSummaryResponse(model=request.model)
        for lane in self._divergence_summary(request.model):
            lane_summary(response.lanes.add(), lane)
        return response

    @unary("admin.GetRollout")
    async def GetRollout(self, request: Any, context: Any) -> Any:
        """A model's rollout: state, per-arm step statistics, gates, history."""
        return rollout_status(self._controller(request.model).status(request.model))

    @unary("admin.UpdateRollout")
    async def UpdateRollout(self, request: Any, context: Any) -> Any:
        """A manual rollout action (needs the admin token when one is configured)."""
        self._auth.check(context, "UpdateRollout")
        controller = self._controller(request.model)
        if request.action == admin_pb2.UpdateRolloutRequest.ACTION_UNSPECIFIED:
            raise InvalidInput(
                "action: expected START, PAUSE, RESUME, SET_WEIGHT, PROMOTE, ROLLBACK or RELEASE"
            )
        try:
            action = admin_pb2.UpdateRolloutRequest.Action.Name(request.action).lower()
        except ValueError:
            raise InvalidInput(
                f"action: unknown action number {request.action}; expected START, PAUSE, "
                "RESUME, SET_WEIGHT, PROMOTE, ROLLBACK or RELEASE"
            ) from None
        weight = request.weight if action == "set_weight" else None
        status = await controller.act(request.model, action, weight, request.reason)
        return rollout_status(status)

    def _controller(self, model: str) -> RolloutControls:
        if not model:
            raise InvalidInput("model: expected a model name")
        if self._rollouts is None:
            raise NotFound(f"model '{model}' has no rollout configured")
        return self._rollouts


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _ms(seconds: float | None) -> float:
    return math.nan if seconds is None else seconds * 1e3


def _arm(target: Any, arm: ArmStats) -> None:
    target.requests = arm.requests
    target.errors = arm.errors
    target.client_errors = arm.client_errors
    target.error_rate = _nan(arm.error_rate)
    target.p50_ms = _ms(arm.p50())
    target.p99_ms = _ms(arm.p99())
    target.compared = arm.compared
    target.diverged = arm.diverged
    target.divergence_rate = _nan(arm.divergence_rate)
    target.max_feature_skew = _nan(arm.max_feature_skew)


HISTORY_LIMIT = 50
"""Most recent decisions a `RolloutStatus` message carries."""


def rollout_status(status: RolloutStatus) -> Any:
    """`RolloutController.status()` as a `RolloutStatus` message."""
    out = admin_pb2.RolloutStatus(model=status.model)
    if status.error:
        out.error = status.error
        return out
    st, plan, stats = status.state, status.plan, status.stats
    assert st is not None and plan is not None and stats is not None  # readable
    out.rollout_id = st.rollout_id
    out.status = st.status.value
    out.primary_version = st.primary
    out.candidate_version = st.candidate
    out.weight = st.weight
    out.steps.extend(plan.steps)
    out.step_index = st.step_index
    out.step_started_at = st.step_started_at or 0.0
    out.min_requests_per_step = plan.min_requests_per_step
    out.min_step_seconds = plan.min_step_seconds
    out.failed_gate = st.failed_gate or ""
    out.previous_primary = st.previous_primary or 0
    _arm(out.primary, stats.primary)
    _arm(out.canary, stats.canary)
    for gate in status.gates:
        value = gate.value
        out.gates.add(
            name=gate.name,
            value=math.nan if value is None or not math.isfinite(value) else value,
            threshold=gate.threshold,
            passed=gate.passed,
            judged=gate.judged,
            detail=gate.detail,
        )
    for d in st.history[-HISTORY_LIMIT:]:
        out.history.add(
            at=d.at,
            action=d.action,
            actor=d.actor,
            reason=d.reason,
            from_weight=d.from_weight,
            to_weight=d.to_weight,
        )
    out.waiting_for = status.waiting_for
    out.missing = status.missing
    key = plan.routing_key
    out.routing_key = f"{key.source}:{key.name}" if key is not None else ""
    out.replica = status.replica
    for name, part in status.replicas:
        share = out.replicas.add(replica=name)
        _arm(share.primary, part.primary)
        _arm(share.canary, part.canary)
    out.store = status.store
    out.store_up = status.store_up
    return out


def lane_summary(target: Any, lane: LaneSummary) -> None:
    """Fill a `LaneSummary` message from `Mirror.summary()`'s entry for one lane."""
    target.lane = lane.lane
    target.comparison = lane.comparison
    target.target = lane.target
    target.shadow_version = lane.shadow_version
    target.offered = lane.offered
    target.compared = lane.compared
    target.diverged = lane.diverged
    target.divergence_rate = lane.divergence_rate
    target.label_flips = lane.label_flips
    target.within_noise = lane.within_noise
    target.errors = lane.errors
    target.timeouts = lane.timeouts
    target.dropped = lane.dropped
    target.suppressed = lane.suppressed
    target.suspended = lane.suspended
    target.queued = lane.queued
    target.mean_latency_ms = lane.mean_latency_ms
    target.max_abs.update(lane.max_abs)
    target.noise_samples = lane.noise_samples
    target.deterministic = lane.deterministic
