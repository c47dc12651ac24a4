"""The pure version policy: given what should exist and what does, what to do next.

Availability preserving (TF Serving's AvailabilityPreservingPolicy): new versions
are loaded before old ones are unloaded, and a non-aspired version is unloaded
only once some aspired version is AVAILABLE. So a failed or still-loading new
version never takes the old one out of service.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from gateway.core.states import VersionState


@dataclass(frozen=True)
class Load:
    """Load this version."""

    version: int


@dataclass(frozen=True)
class Unload:
    """Unload this version."""

    version: int


Action = Load | Unload


def plan(
    aspired: Set[int],
    states: Mapping[int, VersionState],
    retry_allowed: Set[int] = frozenset(),
) -> list[Action]:
    """Return the actions to take now, loads (newest first) before unloads.

    `states` holds the versions the manager knows about; `retry_allowed` holds
    FAILED versions whose files changed and whose backoff has elapsed.
    """
    actions: list[Action] = []
    for version in sorted(aspired, reverse=True):
        state = states.get(version)
        fresh = state is None or state in (VersionState.START, VersionState.END)
        if fresh or (state is VersionState.FAILED and version in retry_allowed):
            actions.append(Load(version))
    aspired_available = any(states.get(v) is VersionState.AVAILABLE for v in aspired)
    if aspired_available:
        for version, state in sorted(states.items()):
            if version not in aspired and state is VersionState.AVAILABLE:
                actions.append(Unload(version))
    return actions
