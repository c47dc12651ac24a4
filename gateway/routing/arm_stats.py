"""Per-arm statistics of the current rollout step: O(1) recording, no I/O.

* Requests are counted by gRPC status name (the same strings as the ``code``
  metric label: ``"OK"``, ``"INTERNAL"``...). Only server-side failures
  (:data:`SERVER_ERROR_CODES`) count as errors; client mistakes
  (INVALID_ARGUMENT, NOT_FOUND, ...) are counted in ``client_errors`` and never
  held against an arm. RESOURCE_EXHAUSTED is a server error here (a full batch
  queue); an oversized message also maps to it, which is the same for both arms.
* Latency is kept for successful (``OK``) requests only: fast client errors
  would pull the percentiles down and server errors are judged by the error
  gate. The histogram has fixed log-spaced buckets (16 per doubling, from 10 us
  to about 1300 s; slower requests share the last bucket), so a percentile is
  within about 2.2 % of the true value (geometric bucket midpoint, clamped to
  the exact min and max seen).
* ``compared`` / ``diverged`` count answers of this arm that were compared with
  the other arm (normally only the canary's are), ``max_feature_skew`` is the
  largest skew value reported during the step.

Not thread-safe by design: everything runs on one event loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.routing.router import Arm

__all__ = [
    "SERVER_ERROR_CODES",
    "ArmStats",
    "LatencyHistogram",
    "StepStats",
    "is_server_error",
]

SERVER_ERROR_CODES: Final = frozenset(
    {"INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN"}
)
"""gRPC status names that count as an arm's fault."""

OK: Final = "OK"

_LOW: Final = 1e-5  # seconds; everything at or below lands in bucket 0
_SUB: Final = 16  # buckets per doubling
_OCTAVES: Final = 27  # 1e-5 * 2**27 ~= 1342 s
_N_BUCKETS: Final = 1 + _SUB * _OCTAVES
_HIGH: Final = _LOW * 2.0**_OCTAVES


def is_server_error(code: str) -> bool:
    """True if a gRPC status name counts as a server-side failure (see module doc)."""
    return code in SERVER_ERROR_CODES


def _bucket_of(seconds: float) -> int:
    if seconds <= _LOW:
        return 0
    if seconds >= _HIGH:
        return _N_BUCKETS - 1
    index = 1 + int(math.log2(seconds / _LOW) * _SUB)
    return min(index, _N_BUCKETS - 1)


def _bucket_mid(index: int) -> float:
    if index == 0:
        return _LOW
    # bucket i >= 1 covers [LOW * 2**((i-1)/SUB), LOW * 2**(i/SUB)); geometric midpoint
    return float(_LOW * 2.0 ** ((index - 0.5) / _SUB))


class LatencyHistogram:
    """Fixed log-bucket latency histogram (seconds): O(1) record, O(buckets) percentile."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts = [0] * _N_BUCKETS
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        """Add one latency; raises ValueError for a negative or NaN value."""
        if not seconds >= 0.0:
            raise ValueError(f"latency must be a number >= 0, got {seconds!r}")
        self._counts[_bucket_of(seconds)] += 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def percentile(self, q: float) -> float | None:
        """The ``q``-quantile (``q`` in [0, 1]) or None when empty.

        Nearest-rank: the bucket holding the ``ceil(q * count)``-th smallest
        value, reported as its geometric midpoint clamped to [min, max]; the
        largest rank and the overflow bucket (beyond ~1300 s) report the exact max.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank == self.count:
            return self.max
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if index == _N_BUCKETS - 1:  # open-ended overflow bucket
                    return self.max
                return min(max(_bucket_mid(index), self.min), self.max)
        return self.max  # pragma: no cover - unreachable: counts sum to count

    def to_evidence(self) -> dict[str, Any]:
        """Lossless and JSON-friendly: the non-empty buckets, count, total, min, max."""
        return {
            "buckets": {str(i): n for i, n in enumerate(self._counts) if n},
            "count": self.count,
            "total": self.total,
            "min": self.min if self.count else None,
            "max": self.max,
        }

    @classmethod
    def from_evidence(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """The histogram `to_evidence` wrote; ValueError for a malformed one."""
        hist = cls()
        for index, n in data.get("buckets", {}).items():
            i = int(index)
            if not 0 <= i < _N_BUCKETS or int(n) < 0:
                raise ValueError(f"latency bucket {index}: {n} is out of range")
            hist._counts[i] = int(n)
        hist.count = int(data.get("count", 0))
        hist.total = float(data.get("total", 0.0))
        low = data.get("min")
        hist.min = math.inf if low is None else float(low)
        hist.max = float(data.get("max", 0.0))
        return hist

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of ``other`` into this histogram."""
        for index, n in enumerate(other._counts):
            self._counts[index] += n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


@dataclass
class ArmStats:
    """What one arm did during the current step (see the module doc for what counts)."""

    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    compared: int = 0
    diverged: int = 0
    max_feature_skew: float | None = None

    def record(self, code: str, latency_seconds: float) -> None:
        """Count one finished request with its gRPC status name and server-side latency.

        Every request counts in ``requests``; ``code`` in
        :data:`SERVER_ERROR_CODES` adds to ``errors`` (and ``errors_by_code``),
        any other non-``OK`` code to ``client_errors``; only ``OK`` requests
        add their latency to the histogram.
        """
        if code == OK:
            self.latency.record(latency_seconds)  # raises before anything is counted
        elif code in SERVER_ERROR_CODES:
            self.errors += 1
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
        else:
            self.client_errors += 1
        self.requests += 1

    def record_comparison(self, diverged: bool) -> None:
        """Count one answer of this arm compared with the other arm's answer."""
        self.compared += 1
        if diverged:
            self.diverged += 1

    def record_skew(self, value: float) -> None:
        """Remember the largest feature skew (JS / L-inf) seen; NaN is ignored."""
        if math.isnan(value):
            return
        if self.max_feature_skew is None or value > self.max_feature_skew:
            self.max_feature_skew = float(value)

    @property
    def error_rate(self) -> float | None:
        """``errors / requests``, or None without requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def divergence_rate(self) -> float | None:
        """``diverged / compared``, or None without comparisons."""
        return self.diverged / self.compared if self.compared else None

    def p50(self) -> float | None:
        """Median latency of successful requests (seconds) or None."""
        return self.latency.percentile(0.50)

    def p99(self) -> float | None:
        """99th percentile latency of successful requests (seconds) or None."""
        return self.latency.percentile(0.99)

    def merge(self, other: ArmStats) -> None:
        """Add ``other`` into this one (e.g. to combine worker processes)."""
        self.requests += other.requests
        self.errors += other.errors
        self.client_errors += other.client_errors
        for code, n in other.errors_by_code.items():
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + n
        self.latency.merge(other.latency)
        self.compared += other.compared
        self.diverged += other.diverged
        if other.max_feature_skew is not None:
            self.record_skew(other.max_feature_skew)

    def to_evidence(self) -> dict[str, Any]:
        """Everything needed to merge this arm into a fleet's (lossless, JSON-friendly)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "errors_by_code": dict(self.errors_by_code),
            "latency": self.latency.to_evidence(),
            "compared": self.compared,
            "diverged": self.diverged,
            "max_feature_skew": self.max_feature_skew,
        }

    @classmethod
    def from_evidence(cls, data: Mapping[str, Any]) -> ArmStats:
        """The arm `to_evidence` wrote; ValueError (or KeyError/TypeError) when malformed."""
        skew = data.get("max_feature_skew")
        return cls(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            client_errors=int(data["client_errors"]),
            errors_by_code={str(k): int(v) for k, v in data.get("errors_by_code", {}).items()},
            latency=LatencyHistogram.from_evidence(data.get("latency", {})),
            compared=int(data.get("compared", 0)),
            diverged=int(data.get("diverged", 0)),
            max_feature_skew=None if skew is None else float(skew),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (for status pages and logs)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "errors_by_code": dict(sorted(self.errors_by_code.items())),
            "error_rate": self.error_rate,
            "latency_count": self.latency.count,
            "p50_seconds": self.p50(),
            "p99_seconds": self.p99(),
            "compared": self.compared,
            "diverged": self.diverged,
            "divergence_rate": self.divergence_rate,
            "max_feature_skew": self.max_feature_skew,
        }


@dataclass
class StepStats:
    """Both arms' statistics for the current rollout step.

    ``step`` identifies the step the statistics belong to: pass
    ``RolloutState.step_token`` to the constructor and to :meth:`reset`, and
    ``rollout.tick`` refuses to judge statistics of another step (so forgetting
    a reset after an advance, or a replica that has not noticed another
    replica's advance yet, can never advance a step on stale numbers). An
    empty ``step`` disables that check.

    ``previous_primary`` keeps the last step's primary statistics across
    :meth:`reset`: at 100 % the primary gets no split traffic, so the gates
    compare the canary with that reference instead.
    """

    started_at: float
    step: str = ""
    primary: ArmStats = field(default_factory=ArmStats)
    canary: ArmStats = field(default_factory=ArmStats)
    previous_primary: ArmStats | None = None

    def arm(self, arm: Arm) -> ArmStats:
        """The statistics of one arm."""
        return self.canary if arm is Arm.CANARY else self.primary

    def record(self, arm: Arm, code: str, latency_seconds: float) -> None:
        """Shorthand for ``self.arm(arm).record(code, latency_seconds)``."""
        (self.canary if arm is Arm.CANARY else self.primary).record(code, latency_seconds)

    def reset(self, now: float, step: str = "") -> None:
        """Start a new step at ``now`` (Unix seconds) for the step ``step``.

        Both arms start from zero; the primary's statistics become
        ``previous_primary`` if it had any requests (an empty primary keeps
        the older reference).
        """
        if self.primary.requests > 0:
            self.previous_primary = self.primary
        self.primary = ArmStats()
        self.canary = ArmStats()
        self.started_at = now
        self.step = step

    def elapsed(self, now: float) -> float:
        """Seconds since the statistics were started or reset."""
        return now - self.started_at

    def to_evidence(self) -> dict[str, Any]:
        """This replica's step evidence for the state store (lossless, JSON-friendly)."""
        return {
            "step": self.step,
            "started_at": self.started_at,
            "primary": self.primary.to_evidence(),
            "canary": self.canary.to_evidence(),
            "previous_primary": (
                None if self.previous_primary is None else self.previous_primary.to_evidence()
            ),
        }

    @classmethod
    def from_evidence(cls, data: Mapping[str, Any]) -> StepStats:
        """The statistics `to_evidence` wrote; ValueError/KeyError/TypeError if malformed."""
        previous = data.get("previous_primary")
        return cls(
            started_at=float(data["started_at"]),
            step=str(data.get("step", "")),
            primary=ArmStats.from_evidence(data["primary"]),
            canary=ArmStats.from_evidence(data["canary"]),
            previous_primary=None if previous is None else ArmStats.from_evidence(previous),
        )

    @classmethod
    def fleet(cls, parts: Sequence[StepStats], started_at: float, step: str) -> StepStats:
        """The sum of several replicas' statistics of one step (`started_at`: when the
        step began, the earliest a replica saw it)."""
        total = cls(started_at=started_at, step=step)
        for part in parts:
            total.primary.merge(part.primary)
            total.canary.merge(part.canary)
            if part.previous_primary is not None:
                if total.previous_primary is None:
                    total.previous_primary = ArmStats()
                total.previous_primary.merge(part.previous_primary)
        return total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary of both arms."""
        return {
            "started_at": self.started_at,
            "step": self.step,
            "primary": self.primary.to_dict(),
            "canary": self.canary.to_dict(),
            "previous_primary": (
                None if self.previous_primary is None else self.previous_primary.to_dict()
            ),
        }
