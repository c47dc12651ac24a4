"""Admission: a per-process bound on the requests being worked on and on the bytes of
their decoded inputs, so a flood is refused at the door instead of queueing without end.

Every protocol's requests pass through `DataPlane.infer`, which admits each one for its
whole stay (routing, checks, the batcher's queue, the model call). Over either limit the
request is refused with RESOURCE_EXHAUSTED and a retry hint (gRPC trailing metadata
`grpc-retry-pushback-ms`, HTTP `Retry-After`); nothing already admitted is affected.
Single event loop: plain integer counters, no lock.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.core.errors import ResourceExhausted

RETRY_AFTER_MS = 100
"""The retry hint a refused request carries: the queue drains in model-call time."""


class Overloaded(ResourceExhausted):
    """Refused by an in-flight limit; `retry_after_ms` is the hint for the client."""

    retry_after_ms = RETRY_AFTER_MS


class Admission:
    """Counts admitted requests and their input bytes against the two limits."""

    def __init__(
        self, max_requests: int, max_bytes: int, on_shed: Callable[[str], None] | None = None
    ) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self._on_shed = on_shed
        """Told the limit's name ("requests", "bytes") at each refusal (the metrics)."""

    def _refuse(self, limit: str) -> None:
        if self._on_shed is not None:
            self._on_shed(limit)

    def admit(self, nbytes: int) -> None:
        """Take a place for a request holding `nbytes` of inputs, or raise `Overloaded`
        naming the limit. Pair with `release(nbytes)`."""
        if self.requests >= self.max_requests:
            self._refuse("requests")
            raise Overloaded(
                f"server overloaded: {self.requests} requests in flight, the limit "
                f"(server.max_inflight_requests); retry after {RETRY_AFTER_MS} ms"
            )
        if self.bytes + nbytes > self.max_bytes and self.requests:
            # One request alone is always admitted: its size is bounded by the decode
            # limits, and refusing it forever would be worse than serving it alone.
            self._refuse("bytes")
            raise Overloaded(
                f"server overloaded: {self.bytes} bytes of request inputs in flight, and "
                f"this request holds {nbytes} more than server.max_inflight_bytes "
                f"({self.max_bytes}) allows; retry after {RETRY_AFTER_MS} ms"
            )
        self.requests += 1
        self.bytes += nbytes

    def release(self, nbytes: int) -> None:
        """Give back what `admit(nbytes)` took."""
        self.requests -= 1
        self.bytes -= nbytes
