"""What a mirrored request came to: one typed outcome per request, `Compared` or
`Failed`, built from a lane's group call (`GroupCall`) and handed to the recorders.

The canary lane calls the rollout's primary for a request the canary answered; its
records still put the rollout's primary first. That orientation is decided here, once
(`orient`), for the comparison itself (which side is the reference) and for every
outcome: an outcome's `primary_version`, `shadow_version`, `latency_ms` and
`mismatches` are already the right way round, and recorders never swap sides.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.analysis.divergence import Comparison, NoiseFloor
from gateway.config import VersionRef
from gateway.serving.mirror.lanes import Lane
from gateway.serving.mirror.task import CANARY, NOISE, MirrorTask

MIN_NOISE_SAMPLES = 10
"""Noise-floor samples needed before shadow comparisons get a `within_noise` verdict."""

T = TypeVar("T")

Mismatches = list[dict[str, Any]]
"""Feature-check mismatch records of one request on one side."""


def orient(comparison: str, answered: T, mirrored: T) -> tuple[T, T]:
    """`(primary side, shadow side)` of a comparison, given the side that answered the
    client and the side the lane called. Shadow and noise lanes mirror the primary's
    answer, so the answer is the primary side; the canary lane mirrors the canary's
    answer to the rollout's primary, so its mirrored call is the primary side."""
    if comparison == CANARY:
        return mirrored, answered
    return answered, mirrored


@dataclass(frozen=True)
class GroupCall:
    """One lane call for a group of mirrored requests that shared it."""

    tasks: list[MirrorTask]
    version: int | None
    """The version the lane called (None when it could not be resolved)."""
    latency_ms: float
    """How long the lane's call took (resolve, checks, model call)."""
    mismatches: list[Mismatches]
    """The called version's feature-check findings, per task."""
    comparisons: list[Comparison] | None
    """Per task, primary side first (see `orient`); None when the call failed."""
    code: str = "OK"
    """Status name of a failed call (e.g. "DEADLINE_EXCEEDED")."""
    message: str = ""


@dataclass(frozen=True)
class _Side:
    version: int | None
    latency_ms: float
    mismatches: Mismatches


@dataclass(frozen=True)
class Compared:
    """A mirrored request whose two answers were compared."""

    lane: Lane
    task: MirrorTask
    result: Comparison
    primary_version: int
    shadow_version: int
    latency_ms: Mapping[str, float]
    """`{"primary": ms, "shadow": ms}`."""
    mismatches: Mapping[str, Mismatches]
    """`{"primary": [...], "shadow": [...]}` feature-check mismatch records."""
    call_latency_ms: float
    """How long the lane's own call took (whichever side it was)."""
    within_noise: bool | None
    """No worse than the primary disagrees with itself; None without a noise floor
    (and always for the noise lane itself)."""

    @property
    def model(self) -> str:
        """The model name."""
        return self.task.model

    @property
    def comparison(self) -> str:
        """`shadow`, `noise` or `canary`."""
        return self.lane.comparison

    @property
    def answered_version(self) -> int:
        """The version whose answer the client got (what a capture records)."""
        return self.task.primary_version


@dataclass(frozen=True)
class Failed:
    """A mirrored request the lane's call did not answer (error or timeout)."""

    lane: Lane
    task: MirrorTask
    primary_version: int | None
    shadow_version: int | None
    """None when the called side's version could not be resolved."""
    code: str
    message: str

    @property
    def model(self) -> str:
        """The model name."""
        return self.task.model

    @property
    def comparison(self) -> str:
        """`shadow`, `noise` or `canary`."""
        return self.lane.comparison

    @property
    def shadow_target(self) -> VersionRef | None:
        """The lane's configured shadow (version or label; None for noise and canary)."""
        return self.lane.target

    @property
    def outcome(self) -> str:
        """`timeout` or `error` (the metric's outcome label)."""
        return "timeout" if self.code == "DEADLINE_EXCEEDED" else "error"


Outcome = Compared | Failed


class OutcomeBuilder:
    """Turns a lane's `GroupCall` into one outcome per request, oriented (`orient`) and,
    for shadow and canary comparisons, judged against the model's noise floor."""

    def __init__(self, noise: Mapping[str, NoiseFloor]) -> None:
        self._noise = noise

    def outcomes(self, lane: Lane, call: GroupCall) -> Iterator[Outcome]:
        """One outcome per task of `call`, built lazily: the noise-floor verdict of each
        is taken when the consumer asks for it."""
        if call.comparisons is None:
            for task in call.tasks:
                called = call.version if call.version is not None else task.compare_to
                primary_v, shadow_v = orient(lane.comparison, task.primary_version, called)
                yield Failed(lane, task, primary_v, shadow_v, call.code, call.message)
            return
        assert call.version is not None
        for task, result, mismatches in zip(
            call.tasks, call.comparisons, call.mismatches, strict=True
        ):
            primary, shadow = orient(
                lane.comparison,
                _Side(task.primary_version, task.primary_latency_ms, task.primary_mismatches),
                _Side(call.version, call.latency_ms, mismatches),
            )
            assert primary.version is not None and shadow.version is not None
            yield Compared(
                lane=lane,
                task=task,
                result=result,
                primary_version=primary.version,
                shadow_version=shadow.version,
                latency_ms={"primary": primary.latency_ms, "shadow": shadow.latency_ms},
                mismatches={"primary": primary.mismatches, "shadow": shadow.mismatches},
                call_latency_ms=call.latency_ms,
                within_noise=self._within_noise(lane, task, result),
            )

    def _within_noise(self, lane: Lane, task: MirrorTask, result: Comparison) -> bool | None:
        floor = self._noise.get(task.model)
        if lane.comparison == NOISE or floor is None or floor.count < MIN_NOISE_SAMPLES:
            return None
        return result.within_noise(floor)
