"""The live figures of one mirror lane (`Mirror.summary`), for the admin service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LaneSummary"]


@dataclass(frozen=True)
class LaneSummary:
    """One shadow, noise or canary lane of a model, as counted since the gateway started.

    ``comparison`` is the lane kind (``shadow``, ``noise`` or ``canary``); ``target``
    the configured version or label it mirrors to ('' when it follows the model's
    rollout); ``shadow_version`` the version that answered last (0 before any answer).
    ``divergence_rate`` and ``mean_latency_ms`` are 0 before the first comparison;
    ``max_abs`` is the largest absolute difference seen per output alias.
    ``noise_samples`` / ``deterministic`` describe the primary's noise floor (True
    until the noise replay has found it non-deterministic). ``suspended`` is True while
    the lane's circuit breaker is open; ``queued`` is its current queue length.
    """

    lane: str
    comparison: str
    target: str
    shadow_version: int
    offered: int
    compared: int
    diverged: int
    divergence_rate: float
    label_flips: int
    within_noise: int
    errors: int
    timeouts: int
    dropped: int
    suppressed: int
    suspended: bool
    queued: int
    mean_latency_ms: float
    max_abs: Mapping[str, float] = field(default_factory=dict)
    noise_samples: int = 0
    deterministic: bool = True
