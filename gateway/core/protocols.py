"""The seams between the gateway's layers, as small Protocols.

Each layer depends on these, not on the class that implements them: the data plane
and the mirror on a `VersionTable`, the rollout controller on `ServingControls`, and
all of them on narrow metric and log sinks. Tests substitute plain fakes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.core.model_view import Servable, VersionTable
from gateway.core.servable import Arrays
from gateway.core.states import VersionStatus

S_co = TypeVar("S_co", bound=Servable, covariant=True)


class ServingControls(VersionTable[S_co], Protocol[S_co]):
    """What may change how a model is served at run time (a rollout's effects)."""

    def pin(self, name: str, versions: frozenset[int]) -> None:
        """Keep `versions` of `name` loaded on top of its version policy."""

    def set_primary(self, name: str, primary: int | str | None) -> None:
        """Point the primary of `name` at a version or label (None: the config's)."""

    def set_label(self, name: str, label: str, version: int | None) -> None:
        """Point `label` of `name` at `version` (None removes the run-time override)."""

    def statuses(self, name: str) -> list[VersionStatus]:
        """The lifecycle state of every known version of `name`."""


class RequestMetrics(Protocol):
    """Per-request metrics of the data plane."""

    def arm_request(self, model: str, arm: str, version: int, code: str, seconds: float) -> None:
        """Count one request a rollout split assigned (its status name and latency)."""

    def on_mismatches(self, model: str, version: int, mismatches: Iterable[Any]) -> None:
        """Count a request's feature-check mismatches (`analysis.feature_checks.Mismatch`;
        typed Any so the core needs no analysis import)."""


class RolloutMetrics(Protocol):
    """Metrics of the rollout controller."""

    def arm_request(self, model: str, arm: str, version: int, code: str, seconds: float) -> None:
        """Count one request a rollout split assigned."""

    def rollout_decision(self, model: str, action: str, actor: str) -> None:
        """Count one rollout decision."""

    def rollout_state(
        self, model: str, primary: int, candidate: int, weight: float, status: str
    ) -> None:
        """Export a rollout's current weight and status."""

    def rollout_store(self, kind: str, up: bool) -> None:
        """Export whether the rollout state store's last call succeeded."""


class MirrorMetrics(Protocol):
    """Metrics of shadow, noise and canary comparisons."""

    def shadow_outcome(
        self, model: str, primary: int, shadow: int | str | None, comparison: str, outcome: str
    ) -> None:
        """Count one mirrored request's outcome (dropped, suppressed, error, timeout)."""

    def divergence(
        self,
        model: str,
        comparison: str,
        primary: int,
        shadow: int,
        result: Any,
        latency_ms: float,
    ) -> None:
        """Record one comparison (`result` is an `analysis.divergence.Comparison`; typed
        Any so the core needs no analysis import)."""

    def noise_floor(self, model: str, version: int, floor: Any) -> None:
        """Export whether the primary is deterministic (`floor`: an
        `analysis.divergence.NoiseFloor`)."""


class DivergenceSink(Protocol):
    """Where divergence records go (the divergence log). Records are JSON-able keyword
    fields whose names and types are fixed by `sinks.divergence_schema`, hence Any.
    Every method is non-blocking, never raises, and returns False for a dropped record."""

    def divergence(self, **fields: Any) -> bool:
        """One compared request."""

    def shadow_error(self, **fields: Any) -> bool:
        """One mirrored request that the other side did not answer."""

    def drops(self, model: str, shadow_version: int | None, count: int, **fields: Any) -> bool:
        """Mirrored requests dropped since the last report."""

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush and close."""


class CaptureSink(Protocol):
    """Where captured requests go (a PredictionLog TFRecord file, for replay and warmup)."""

    def capture(
        self, model: str, signature: str, version: int, inputs: Arrays, outputs: Arrays
    ) -> bool:
        """Queue one Predict request and its answer; False when dropped. Never blocks."""

    def close(self) -> None:
        """Flush and close."""


class ModelRegistry(VersionTable[S_co], Protocol[S_co]):
    """What status APIs read of the lifecycle: configured models and version states."""

    def model_names(self) -> list[str]:
        """Configured model names."""

    def statuses(self, name: str) -> list[VersionStatus]:
        """The lifecycle state of every known version of `name`; NotFound when unknown."""

    def labels(self, name: str) -> dict[str, int]:
        """Effective version labels of `name` (config plus run-time overrides)."""

    def base_path(self, name: str) -> Path:
        """The repository directory of `name`."""
