"""State monitor: the latest status of every version, with blocking waits for tests/tools.

Updates come from the event loop thread; waiters may be on any thread (a sync
test client), so this uses a `threading.Condition`, never `sleep` polling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from gateway.core.states import VersionState, VersionStatus

Listener = Callable[[VersionStatus], None]


class StateMonitor:
    """Holds the last `VersionStatus` per (model, version) and notifies listeners."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._states: dict[tuple[str, int], VersionStatus] = {}
        self._listeners: list[Listener] = []
        self._events = 0

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` on every state change (on the thread that reports it)."""
        self._listeners.append(listener)

    def publish(self, status: VersionStatus) -> None:
        """Record a state change."""
        with self._cond:
            self._states[(status.model, status.version)] = status
            self._events += 1
            self._cond.notify_all()
        for listener in self._listeners:
            listener(status)

    def forget(self, model: str) -> None:
        """Drop every status of `model` (it was removed from the config)."""
        with self._cond:
            for key in [k for k in self._states if k[0] == model]:
                del self._states[key]
            self._cond.notify_all()

    def get(self, model: str, version: int) -> VersionStatus | None:
        """The latest status of one version, or None if never seen."""
        with self._cond:
            return self._states.get((model, version))

    def versions(self, model: str) -> list[VersionStatus]:
        """Every known version of `model`, ordered by version."""
        with self._cond:
            return sorted(
                (s for (m, _), s in self._states.items() if m == model), key=lambda s: s.version
            )

    def wait_for(
        self,
        model: str,
        version: int,
        states: Iterable[VersionState],
        timeout: float = 60.0,
        min_failures: int = 0,
    ) -> VersionStatus:
        """Block until the version is in one of `states` (and has failed at least
        `min_failures` times); raise TimeoutError with the last status otherwise."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                status = self._states.get((model, version))
                if status and status.state in wanted and status.failures >= min_failures:
                    return status
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{model} v{version}: waited {timeout}s for "
                        f"{sorted(s.value for s in wanted)},"
                        f" last status {status}"
                    )
                self._cond.wait(remaining)
