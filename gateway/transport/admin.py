"""gateway.v1.AdminService: the gateway's own status and control API."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import __version__
from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.errors import InvalidInput
from gateway.lifecycle.manager import VersionManager
from gateway.lifecycle.states import VersionState
from gateway.sinks.metrics import Metrics
from gateway.transport.calls import unary


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):  # type: ignore[misc]
    """Model status with explicit FAILED reasons, and config reload."""

    def __init__(
        self,
        manager: VersionManager,
        metrics: Metrics,
        reload: Callable[[], Awaitable[list[str]]],
        skew_report: Callable[[str], dict[int, dict[str, Any]]],
        divergence_summary: Callable[[str], list[dict[str, Any]]],
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._reload = reload
        self._skew_report = skew_report
        self._divergence_summary = divergence_summary
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
                )
        return response

    @unary("admin.ReloadConfig")
    async def ReloadConfig(self, request: Any, context: Any) -> Any:
        """Re-read the config file and apply it."""
        del request
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
            entry = response.lanes.add(**{k: v for k, v in lane.items() if k != "max_abs"})
            entry.max_abs.update(lane["max_abs"])
        return response
