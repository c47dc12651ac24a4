"""Rollout gates: is the canary doing as well as the primary during this step?

Pure functions over :class:`~gateway.routing.arm_stats.StepStats`. Each enabled
gate gives one :class:`GateResult`. A result is *judged* when there are enough
samples to decide; an unjudged result has ``value=None``, ``passed=True`` (it
did not fail) and a ``detail`` saying what it waits for. ``rollout.tick``
acts on failed judged results and holds while any enabled gate is unjudged.

Gates (every threshold is a maximum: a gate passes iff ``value <= threshold``):

``divergence_rate``
    ``canary.diverged / canary.compared``; judged from
    ``MinSamples.compared`` compared answers.

``error_rate_ratio``
    ``canary_rate / max(primary_rate, 1 / canary_requests)`` where
    ``rate = server errors / requests``. The floor ``1 / canary_requests`` is
    the smallest non-zero rate the canary can show: a primary with 0 (or very
    few) errors is never a denominator the canary cannot be told apart from.
    Consequences: a canary with 0 errors always passes (value 0, judged at
    once); with a threshold >= 1 a single canary error never fails the gate;
    when the primary had no errors the value is simply the canary's error
    count. A canary with errors is judged from ``MinSamples.error_requests``
    canary requests, and needs a primary reference (below).

``p99_latency_ratio``
    ``canary.p99 / primary.p99`` over successful requests; judged when both
    the canary and the reference have ``MinSamples.latency`` latency samples.

``feature_skew``
    the largest feature skew reported for the canary during the step
    (absolute, not a ratio); unjudged until one is reported.

Primary reference: the current step's primary when it has at least
``MinSamples.primary_requests`` requests (for the latency gate: latency
samples), else the previous step's primary (``StepStats.previous_primary``,
kept across resets: at 100 % the primary gets no split traffic), else none and
the ratio gates stay unjudged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from gateway.config import GatesConfig, MinSamplesConfig
from gateway.routing.arm_stats import ArmStats, StepStats

__all__ = [
    "GATE_NAMES",
    "GateResult",
    "Gates",
    "MinSamples",
    "evaluate",
]

DIVERGENCE_RATE: Final = "divergence_rate"
ERROR_RATE_RATIO: Final = "error_rate_ratio"
P99_LATENCY_RATIO: Final = "p99_latency_ratio"
FEATURE_SKEW: Final = "feature_skew"
GATE_NAMES: Final = (DIVERGENCE_RATE, ERROR_RATE_RATIO, P99_LATENCY_RATIO, FEATURE_SKEW)
"""Gate names, in evaluation order."""

LATENCY_FLOOR_SECONDS: Final = 1e-6
"""Denominator floor of the p99 ratio (a primary p99 of 0 is a clock artefact)."""


@dataclass(frozen=True)
class Gates:
    """Gate thresholds; ``None`` turns a gate off (see the module doc for each gate).

    Built from the validated config with :meth:`from_config` (which guarantees finite
    thresholds, >= 0 for the rate and the skew, > 0 for the two ratios); the config's
    :class:`~gateway.config.GatesConfig` holds the defaults.
    """

    max_divergence_rate: float | None
    max_error_rate_ratio: float | None
    max_p99_latency_ratio: float | None
    max_feature_skew: float | None

    @classmethod
    def from_config(cls, cfg: GatesConfig) -> Gates:
        """The ``rollout.gates`` block."""
        return cls(
            max_divergence_rate=cfg.max_divergence_rate,
            max_error_rate_ratio=cfg.max_error_rate_ratio,
            max_p99_latency_ratio=cfg.max_p99_latency_ratio,
            max_feature_skew=cfg.max_feature_skew,
        )

    def to_dict(self) -> dict[str, float | None]:
        """The thresholds as a plain dict (the ``gates:`` block)."""
        return asdict(self)

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the gates that are on, in evaluation order."""
        return tuple(
            name
            for name, threshold in zip(GATE_NAMES, _thresholds(self), strict=True)
            if threshold is not None
        )


def _thresholds(gates: Gates) -> tuple[float | None, ...]:
    return (
        gates.max_divergence_rate,
        gates.max_error_rate_ratio,
        gates.max_p99_latency_ratio,
        gates.max_feature_skew,
    )


@dataclass(frozen=True)
class MinSamples:
    """How much evidence each gate needs before it is judged (see the module doc).

    * ``compared``: canary answers compared with the primary (divergence);
    * ``error_requests``: canary requests before a non-zero error count is judged;
    * ``primary_requests``: requests for a primary arm to be the error reference;
    * ``latency``: successful requests per arm for the p99 ratio.

    Built with :meth:`from_config` (every count an integer >= 1); the config's
    :class:`~gateway.config.MinSamplesConfig` holds the defaults.
    """

    compared: int
    error_requests: int
    primary_requests: int
    latency: int

    @classmethod
    def from_config(cls, cfg: MinSamplesConfig) -> MinSamples:
        """The ``rollout.min_samples`` block."""
        return cls(
            compared=cfg.compared,
            error_requests=cfg.error_requests,
            primary_requests=cfg.primary_requests,
            latency=cfg.latency,
        )


DEFAULT_MIN_SAMPLES: Final = MinSamples.from_config(MinSamplesConfig())
"""What :func:`evaluate` uses when given no ``min_samples`` (the config's defaults)."""


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict.

    ``value`` is the measured number (``None`` when not judged), ``threshold``
    the configured maximum, ``passed`` is False only for a judged failure,
    ``detail`` gives the figures behind the value (or what is missing), and
    ``judged`` says whether there was enough evidence.
    """

    name: str
    value: float | None
    threshold: float
    passed: bool
    detail: str
    judged: bool = True

    @property
    def failed(self) -> bool:
        """True for a judged failure."""
        return self.judged and not self.passed

    def describe(self) -> str:
        """One line for logs and ``failed_gate``: ``name=value > threshold (detail)``."""
        if not self.judged or self.value is None:
            return f"{self.name}: not judged ({self.detail})"
        op = "<=" if self.passed else ">"
        return f"{self.name}={self.value:.4g} {op} {self.threshold:g} ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``value`` None when not judged or not finite)."""
        value = self.value if self.value is None or math.isfinite(self.value) else None
        return {
            "name": self.name,
            "value": value,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
            "judged": self.judged,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        """Inverse of :meth:`to_dict`; ValueError on a malformed dict."""
        try:
            value = data["value"]
            return cls(
                name=str(data["name"]),
                value=None if value is None else float(value),
                threshold=float(data["threshold"]),
                passed=bool(data["passed"]),
                detail=str(data["detail"]),
                judged=bool(data.get("judged", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed gate result {dict(data)!r}: {exc}") from exc


def _pct(x: float) -> str:
    return f"{x:.3%}"


def _unjudged(name: str, threshold: float, detail: str) -> GateResult:
    return GateResult(name, None, threshold, True, detail, judged=False)


def _reference(stats: StepStats, enough: int, *, latency: bool) -> tuple[ArmStats | None, str]:
    def count(arm: ArmStats) -> int:
        return arm.latency.count if latency else arm.requests

    if count(stats.primary) >= enough:
        return stats.primary, "primary"
    previous = stats.previous_primary
    if previous is not None and count(previous) >= enough:
        return previous, "previous-step primary"
    return None, ""


def _divergence(threshold: float, canary: ArmStats, mins: MinSamples) -> GateResult:
    if canary.compared < mins.compared:
        return _unjudged(
            DIVERGENCE_RATE,
            threshold,
            f"{canary.compared}/{mins.compared} compared canary answers",
        )
    rate = canary.diverged / canary.compared
    detail = f"{canary.diverged}/{canary.compared} canary answers diverged"
    return GateResult(DIVERGENCE_RATE, rate, threshold, rate <= threshold, detail)


def _error_ratio(threshold: float, stats: StepStats, mins: MinSamples) -> GateResult:
    canary = stats.canary
    if canary.errors == 0:
        detail = f"canary 0/{canary.requests} server errors"
        return GateResult(ERROR_RATE_RATIO, 0.0, threshold, True, detail)
    if canary.requests < mins.error_requests:
        return _unjudged(
            ERROR_RATE_RATIO,
            threshold,
            f"canary {canary.errors} server errors in {canary.requests}/"
            f"{mins.error_requests} requests",
        )
    ref, ref_name = _reference(stats, mins.primary_requests, latency=False)
    if ref is None:
        return _unjudged(
            ERROR_RATE_RATIO,
            threshold,
            f"no primary reference with {mins.primary_requests} requests",
        )
    canary_rate = canary.errors / canary.requests
    ref_rate = ref.errors / ref.requests
    floor = 1.0 / canary.requests
    ratio = canary_rate / max(ref_rate, floor)
    detail = (
        f"canary {canary.errors}/{canary.requests} = {_pct(canary_rate)}, "
        f"{ref_name} {ref.errors}/{ref.requests} = {_pct(ref_rate)}, "
        f"floor 1/{canary.requests} = {_pct(floor)}"
    )
    return GateResult(ERROR_RATE_RATIO, ratio, threshold, ratio <= threshold, detail)


def _latency_ratio(threshold: float, stats: StepStats, mins: MinSamples) -> GateResult:
    canary = stats.canary
    if canary.latency.count < mins.latency:
        return _unjudged(
            P99_LATENCY_RATIO,
            threshold,
            f"{canary.latency.count}/{mins.latency} successful canary requests",
        )
    ref, ref_name = _reference(stats, mins.latency, latency=True)
    if ref is None:
        return _unjudged(
            P99_LATENCY_RATIO,
            threshold,
            f"no primary reference with {mins.latency} successful requests",
        )
    canary_p99 = canary.p99()
    ref_p99 = ref.p99()
    assert canary_p99 is not None and ref_p99 is not None  # counts >= 1 checked above
    ratio = canary_p99 / max(ref_p99, LATENCY_FLOOR_SECONDS)
    detail = (
        f"canary p99 {canary_p99 * 1000:.2f} ms ({canary.latency.count} requests), "
        f"{ref_name} p99 {ref_p99 * 1000:.2f} ms ({ref.latency.count} requests)"
    )
    return GateResult(P99_LATENCY_RATIO, ratio, threshold, ratio <= threshold, detail)


def _skew(threshold: float, canary: ArmStats) -> GateResult:
    if canary.max_feature_skew is None:
        return _unjudged(FEATURE_SKEW, threshold, "no feature skew reported for the canary")
    value = canary.max_feature_skew
    detail = "largest feature skew reported for the canary this step"
    return GateResult(FEATURE_SKEW, value, threshold, value <= threshold, detail)


def evaluate(
    gates: Gates, stats: StepStats, min_samples: MinSamples | None = None
) -> list[GateResult]:
    """Judge every enabled gate on one step's statistics (order: :data:`GATE_NAMES`).

    Pure; never raises for small or empty statistics (those give unjudged
    results). Disabled gates give no result.
    """
    mins = min_samples if min_samples is not None else DEFAULT_MIN_SAMPLES
    results: list[GateResult] = []
    if gates.max_divergence_rate is not None:
        results.append(_divergence(gates.max_divergence_rate, stats.canary, mins))
    if gates.max_error_rate_ratio is not None:
        results.append(_error_ratio(gates.max_error_rate_ratio, stats, mins))
    if gates.max_p99_latency_ratio is not None:
        results.append(_latency_ratio(gates.max_p99_latency_ratio, stats, mins))
    if gates.max_feature_skew is not None:
        results.append(_skew(gates.max_feature_skew, stats.canary))
    return results
