"""Recorders: what happens to each mirrored request's outcome, one job per recorder.

Every recorder implements `Recorder.record(outcome)` for a `Compared` or `Failed`
outcome (already oriented; recorders never swap sides) and ignores the outcomes it
has nothing to do with. `RecorderChain` calls them in order; a new sink joins by
appending one object. The mirror's default chain, in order:

1. `CanaryGateRecorder`: canary comparisons, to the rollout gates (`on_canary`);
2. `NoiseFloorRecorder`: noise-lane comparisons into the model's noise floor, and a
   non-deterministic primary reported once;
3. `LaneStatsRecorder`: the lane's live counters (the admin summary);
4. `MetricsRecorder`: Prometheus;
5. `DivergenceLogRecorder`: one divergence-log record per request;
6. `CaptureRecorder`: diverged (and sampled) Predict requests as PredictionLogs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, cast

import structlog

from gateway.analysis.divergence import NoiseFloor
from gateway.core.protocols import CaptureSink, DivergenceSink, MirrorMetrics
from gateway.serving.mirror.outcomes import MIN_NOISE_SAMPLES, Compared, Failed, Outcome
from gateway.serving.mirror.task import CANARY, NOISE
from gateway.sinks.divergence_log import first_row_features, input_digest

log = structlog.get_logger("gateway.shadow")

CanaryCallback = Callable[[str, int, int, bool], None]
"""(model, primary version, canary version, diverged) of one canary comparison."""


class Recorder(Protocol):
    """Takes note of one mirrored request's outcome; must not block."""

    def record(self, outcome: Outcome) -> None:
        """Record `outcome` (or ignore it)."""


class RecorderChain:
    """Recorders called in order for every outcome. One that raises is logged and
    skipped; the others still see the outcome."""

    def __init__(self, recorders: Iterable[Recorder] = ()) -> None:
        self._recorders = list(recorders)

    def append(self, recorder: Recorder) -> None:
        """Add a recorder at the end of the chain."""
        self._recorders.append(recorder)

    def __iter__(self) -> Iterator[Recorder]:
        return iter(self._recorders)

    def __len__(self) -> int:
        return len(self._recorders)

    def record(self, outcome: Outcome) -> None:
        """Give `outcome` to every recorder."""
        for recorder in self._recorders:
            try:
                recorder.record(outcome)
            except Exception:
                log.exception(
                    "recorder_failed",
                    recorder=type(recorder).__name__,
                    model=outcome.model,
                    lane=outcome.lane.name,
                )


class CanaryGateRecorder:
    """Canary comparisons, to the rollout gates' evidence."""

    def __init__(self, on_canary: CanaryCallback) -> None:
        self._on_canary = on_canary

    def record(self, outcome: Outcome) -> None:
        """Report a compared canary answer (primary = the rollout's primary)."""
        if isinstance(outcome, Compared) and outcome.comparison == CANARY:
            self._on_canary(
                outcome.model,
                outcome.primary_version,
                outcome.shadow_version,
                outcome.result.diverged,
            )


class NoiseFloorRecorder:
    """Noise-lane comparisons into the model's noise floor; exports whether the primary
    is deterministic and reports a non-deterministic one once."""

    def __init__(self, noise: Mapping[str, NoiseFloor], metrics: MirrorMetrics) -> None:
        self._noise = noise
        self._metrics = metrics
        self._reported: set[str] = set()

    def record(self, outcome: Outcome) -> None:
        """Add a noise comparison to its model's floor."""
        if not isinstance(outcome, Compared) or outcome.comparison != NOISE:
            return
        floor = self._noise.get(outcome.model)
        if floor is None:
            return
        floor.add(outcome.result)
        model, version = outcome.model, outcome.primary_version
        self._metrics.noise_floor(model, version, floor)
        if (
            floor.count >= MIN_NOISE_SAMPLES
            and not floor.deterministic
            and model not in self._reported
        ):
            self._reported.add(model)
            log.warning(
                "primary_nondeterministic",
                model=model,
                version=version,
                samples=floor.count,
                floor=floor.summary(),
                detail="the primary answers the same request differently (dropout active "
                "at inference? a stateful op?); shadow divergence is judged against this "
                "noise floor",
            )


class LaneStatsRecorder:
    """The lane's live counters (compared, diverged, flips, max |Δ|, errors, ...)."""

    def record(self, outcome: Outcome) -> None:
        """Count `outcome` in its lane's stats."""
        stats = outcome.lane.stats
        if isinstance(outcome, Failed):
            if outcome.outcome == "timeout":
                stats.timeouts += 1
            else:
                stats.errors += 1
            return
        result = outcome.result
        stats.compared += 1
        stats.latency_ms_sum += outcome.call_latency_ms
        stats.last_shadow_version = outcome.shadow_version
        if result.diverged:
            stats.diverged += 1
        if outcome.within_noise:
            stats.within_noise += 1
        if any(m.label_flip for m in result.outputs.values()):
            stats.label_flips += 1
        for alias, m in result.outputs.items():
            if m.max_abs is not None and math.isfinite(m.max_abs):
                stats.max_abs[alias] = max(stats.max_abs.get(alias, 0.0), m.max_abs)


class MetricsRecorder:
    """Prometheus: comparisons (by model, comparison, primary and shadow version) and
    failed mirrored requests."""

    def __init__(self, metrics: MirrorMetrics) -> None:
        self._metrics = metrics

    def record(self, outcome: Outcome) -> None:
        """Export `outcome`."""
        if isinstance(outcome, Compared):
            self._metrics.divergence(
                outcome.model,
                outcome.comparison,
                outcome.primary_version,
                outcome.shadow_version,
                outcome.result,
                outcome.call_latency_ms,
            )
            return
        shadow = outcome.shadow_version
        self._metrics.shadow_outcome(
            outcome.model,
            # None only for a canary task that named no primary and whose model is gone
            cast(int, outcome.primary_version),
            shadow if shadow is not None else outcome.shadow_target,
            outcome.comparison,
            outcome.outcome,
        )


class DivergenceLogRecorder:
    """One divergence-log record per mirrored request (`divergence` or `shadow_error`)."""

    def __init__(self, sink: DivergenceSink, sensitive: Mapping[str, frozenset[str]]) -> None:
        self._sink = sink
        self._sensitive = sensitive
        """Per model: features whose values are never logged."""

    def record(self, outcome: Outcome) -> None:
        """Write `outcome`'s record."""
        task = outcome.task
        if isinstance(outcome, Failed):
            self._sink.shadow_error(
                request_id=task.request_id,
                model=task.model,
                comparison=outcome.comparison,
                primary_version=outcome.primary_version,
                shadow_version=outcome.shadow_version,
                shadow_target=outcome.shadow_target,
                error=outcome.code,
                message=outcome.message,
            )
            return
        result = outcome.result
        self._sink.divergence(
            request_id=task.request_id,
            model=task.model,
            comparison=outcome.comparison,
            primary_version=outcome.primary_version,
            shadow_version=outcome.shadow_version,
            routing_key_hash=task.routing_key_hash,
            rows=task.rows,
            latency_ms={k: round(v, 3) for k, v in outcome.latency_ms.items()},
            outputs=result.to_json(),
            diverged=result.diverged,
            within_noise=outcome.within_noise,
            feature_mismatches=dict(outcome.mismatches),
            features=first_row_features(
                task.raw_features(), self._sensitive.get(task.model, frozenset())
            ),
            input_digest=input_digest(task.digest_inputs()),
            protocol=task.protocol,
        )


class CaptureRecorder:
    """Diverged Predict requests (and a `capture.sample_rate` fraction of the others) as
    PredictionLogs of the answer the client got, for replay and warmup."""

    def __init__(
        self,
        sinks: Mapping[str, CaptureSink],
        sample_rates: Mapping[str, float],
        rng: random.Random,
    ) -> None:
        self._sinks = sinks
        self._rates = sample_rates
        self._rng = rng

    def record(self, outcome: Outcome) -> None:
        """Capture a compared request when it diverged or is sampled."""
        if not isinstance(outcome, Compared):
            return
        task = outcome.task
        sink = self._sinks.get(task.model)
        if (
            sink is not None
            and task.examples is None
            and (outcome.result.diverged or self._rng.random() < self._rates.get(task.model, 0.0))
        ):
            inputs = task.served_inputs if task.served_inputs is not None else task.inputs
            sink.capture(
                task.model, task.signature, outcome.answered_version, inputs, task.primary_outputs
            )
