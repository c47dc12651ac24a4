"""Mirror lanes: one destination of one model's mirrored requests (a shadow version, the
noise replay, or the canary comparison), with its bounded queue, live counters and
circuit breaker. Lanes are built from the config by `lanes_of`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import structlog

from gateway.config import BreakerConfig, ModelConfig, VersionRef
from gateway.serving.mirror.task import CANARY, NOISE, SHADOW, MirrorTask

log = structlog.get_logger("gateway.shadow")

BreakerChange = Literal["opened", "closed"]
Admission = Literal["queued", "suppressed", "dropped"]


class Breaker:
    """A lane's circuit breaker: a shadow that fails every call teaches nothing and costs
    CPU. After `failures` consecutive failures the lane is suspended for a cool-down,
    then lets one probe through; the cool-down doubles (up to `max_cooldown`) while
    probes keep failing, and one success closes the breaker."""

    def __init__(self, failures: int, cooldown: float, max_cooldown: float) -> None:
        self.failures = failures
        self.first_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.cooldown = cooldown
        self.probing = False

    @classmethod
    def from_config(cls, config: BreakerConfig) -> Breaker:
        """A closed breaker with the config's threshold and cool-downs."""
        return cls(config.failures, config.cooldown_seconds, config.max_cooldown_seconds)

    @property
    def suspended(self) -> bool:
        """Whether the breaker is open (mirroring paused or probing)."""
        return self.consecutive_failures >= self.failures

    def admit(self, now: float) -> bool:
        """False while the breaker is open; lets one probe through after the cool-down."""
        if self.consecutive_failures < self.failures:
            return True
        if now < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def record(self, ok: bool, now: float) -> BreakerChange | None:
        """Count one mirrored request's result; "opened" or "closed" on a state change."""
        was_open = self.suspended
        self.probing = False
        if ok:
            self.consecutive_failures = 0
            self.cooldown = self.first_cooldown
            return "closed" if was_open else None
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failures:
            self.open_until = now + self.cooldown
            if was_open:
                self.cooldown = min(self.cooldown * 2, self.max_cooldown)
                return None
            return "opened"
        return None


@dataclass
class LaneStats:
    """Live counters of one lane (for the admin summary)."""

    offered: int = 0
    compared: int = 0
    diverged: int = 0
    label_flips: int = 0
    within_noise: int = 0
    errors: int = 0
    timeouts: int = 0
    dropped: int = 0
    suppressed: int = 0
    reported_drops: int = 0
    max_abs: dict[str, float] = field(default_factory=dict)
    latency_ms_sum: float = 0.0
    last_shadow_version: int | None = None


class Lane:
    """One mirror destination of a model: a shadow version, the noise replay, or the
    canary comparison."""

    def __init__(
        self,
        model: str,
        comparison: str,
        target: VersionRef | None,
        sample_rate: float,
        timeout_s: float,
        queue_size: int,
        concurrency: int,
        breaker: Breaker,
    ) -> None:
        self.model = model
        self.comparison = comparison
        self.target = target
        """The shadow's version or label; None = the answering request's own (noise) or
        the rollout's primary (canary)."""
        self.sample_rate = sample_rate
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[MirrorTask] = asyncio.Queue(maxsize=queue_size)
        self.concurrency = concurrency
        self.stats = LaneStats()
        self.breaker = breaker
        self.workers: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        """e.g. `shadow:canary` or `noise`."""
        return self.comparison if self.target is None else f"{self.comparison}:{self.target}"

    def enqueue(self, task: MirrorTask, now: float) -> Admission:
        """Offer a sampled task (never blocks): counted as offered, then queued, or
        suppressed (breaker open) or dropped (queue full), each counted."""
        self.stats.offered += 1
        if not self.breaker.admit(now):
            self.stats.suppressed += 1
            return "suppressed"
        try:
            self.queue.put_nowait(task)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            return "dropped"
        return "queued"

    def after_call(self, ok: bool, requests: int, error: str) -> None:
        """Feed one model call's result (for `requests` mirrored requests) to the
        breaker; log when it opens or closes."""
        now = time.monotonic()
        breaker = self.breaker
        for _ in range(requests):
            change = breaker.record(ok, now)
            if change == "opened":
                log.warning(
                    "shadow_suspended",
                    model=self.model,
                    lane=self.name,
                    consecutive_failures=breaker.consecutive_failures,
                    last_error=error,
                    detail=(
                        f"mirroring paused; probing again after {breaker.cooldown:.0f}s (doubling)"
                    ),
                )
            elif change == "closed":
                log.info("shadow_resumed", model=self.model, lane=self.name)


def lanes_of(model: ModelConfig, breaker: BreakerConfig) -> list[Lane]:
    """The lanes of one model's config: one per shadow, the noise replay (with
    `noise_sample_rate`), and the canary comparison (with a rollout that compares)."""
    lanes = [
        Lane(
            model.name,
            SHADOW,
            s.version,
            s.sample_rate,
            s.timeout_ms / 1e3,
            s.queue_size,
            s.concurrency,
            Breaker.from_config(breaker),
        )
        for s in model.shadows
    ]
    if model.noise_sample_rate > 0:
        lanes.append(
            Lane(
                model.name,
                NOISE,
                None,
                model.noise_sample_rate,
                model.noise_timeout() / 1e3,
                model.noise_queue_size,
                1,
                Breaker.from_config(breaker),
            )
        )
    r = model.rollout
    if r is not None and r.compare_sample_rate > 0:
        lanes.append(
            Lane(
                model.name,
                CANARY,
                None,
                r.compare_sample_rate,
                r.compare_timeout_ms / 1e3,
                r.compare_queue_size,
                1,
                Breaker.from_config(breaker),
            )
        )
    return lanes
