"""A servable version plus its batchers: what a request is executed against.

Tracks requests in flight so that an unloading version is only closed after the
requests that resolved it have finished (swaps never fail requests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from gateway.config import BatchingConfig
from gateway.core.errors import InternalError, Unavailable
from gateway.core.servable import Arrays, LoadedVersion, RunFn, Signature
from gateway.serving.batcher import Batcher, BatchObserver

if TYPE_CHECKING:
    from gateway.analysis.feature_checks import FeatureChecker
    from gateway.analysis.skew import SkewWindow

ObserverFactory = Callable[[str, int], BatchObserver]


def _counting(skew: SkewWindow, run: RunFn) -> RunFn:
    """Feed each model call's raw batch to the skew window (on the model-call thread)."""

    def counted(inputs: Mapping[str, np.ndarray]) -> Arrays:
        skew.add(inputs)
        return run(inputs)

    return counted


GROUP_ROWS = 4096
"""A batched request of more rows than this is submitted in groups of whole batches of
about this many rows (see `_run_groups`)."""


async def _run_groups(
    batcher: Batcher, inputs: Arrays, rows: int, group: int, inline: bool
) -> Arrays:
    """A request of many batches, as groups of whole batches (the model calls, the same
    batches, are the batcher's), each group's outputs copied into the request's output
    arrays as they come: a large request's outputs are held once, not once per batch
    and again concatenated."""
    out: Arrays = {}
    for start in range(0, rows, group):
        n = min(group, rows - start)
        part = await batcher.submit({k: v[start : start + n] for k, v in inputs.items()}, n, inline)
        for alias, value in part.items():
            if alias not in out:
                if start:
                    raise InternalError(f"output '{alias}' missing from earlier batches")
                out[alias] = np.empty((rows, *value.shape[1:]), dtype=value.dtype)
            whole = out[alias]
            if value.shape != (n, *whole.shape[1:]) or value.dtype != whole.dtype:
                raise InternalError(
                    f"output '{alias}': batches disagree (shape {list(value.shape)} "
                    f"{value.dtype}, expected {[n, *whole.shape[1:]]} {whole.dtype})"
                )
            whole[start : start + n] = value
        if len(part) != len(out):
            raise InternalError("outputs differ between batches of one request")
    return out


class VersionRunner:
    """Runs requests for one `LoadedVersion`, batched per signature when possible."""

    def __init__(
        self,
        loaded: LoadedVersion,
        batching: BatchingConfig,
        observer_factory: ObserverFactory | None = None,
        checker: FeatureChecker | None = None,
        skew: SkewWindow | None = None,
    ) -> None:
        self.loaded = loaded
        self.checker = checker
        """Per-request raw-feature checks against training statistics (None = off)."""
        self.skew = skew
        """Serving-distribution window of raw features, fed per model call (None = off)."""
        self.version = loaded.version
        # Each version has its own model-call threads: a slow or hung version (say a
        # shadow) can only ever block itself, never the primary.
        self._executor: Executor = ThreadPoolExecutor(
            max_workers=batching.num_batch_threads + 1,
            thread_name_prefix=f"{loaded.model}-v{loaded.version}",
        )
        executor = self._executor
        self.inflight = 0
        self._closing = False
        observer = observer_factory(loaded.model, loaded.version) if observer_factory else None
        self._observer = observer
        self._batchers: dict[str, Batcher] = {}
        self._runs: dict[str, RunFn] = {}
        for name, sig in loaded.signatures.items():
            run = sig.run
            if skew is not None and sig.prepare is not None:
                run = _counting(skew, sig.run)
            self._runs[name] = run
            if batching.enabled and sig.batchable:
                self._batchers[name] = Batcher(
                    run,
                    executor,
                    max_batch_size=batching.max_batch_size,
                    timeout_s=batching.batch_timeout_micros / 1e6,
                    max_enqueued=batching.max_enqueued_requests,
                    num_threads=batching.num_batch_threads,
                    observer=observer,
                    inline_max_s=batching.inline_max_micros / 1e6,
                )

    def acquire(self) -> None:
        """Count a request in flight (call synchronously right after resolving this runner)."""
        self.inflight += 1

    def release(self) -> None:
        """The request that called `acquire` is done."""
        self.inflight -= 1

    async def run(
        self, signature: Signature, inputs: Arrays, rows: int, background: bool = False
    ) -> Arrays:
        """Execute one validated request; batched when the signature allows it.
        `background` work (mirrored calls) never runs on the event loop's thread."""
        batcher = self._batchers.get(signature.name)
        if batcher is not None and (signature.strict_shapes or signature.conforms(inputs)):
            group = max(1, GROUP_ROWS // batcher.max_batch_size) * batcher.max_batch_size
            if rows > group:
                return await _run_groups(batcher, inputs, rows, group, not background)
            return await batcher.submit(inputs, rows, inline=not background)
        if self._closing and self.inflight <= 0:
            raise Unavailable("model version is unloading; retry")
        loop = asyncio.get_running_loop()
        run = self._runs.get(signature.name, signature.run)
        outputs = await loop.run_in_executor(self._executor, run, inputs)
        if self._observer is not None:
            self._observer(rows, 1)
        return outputs

    async def close(self, timeout: float = 30.0) -> None:
        """Wait for requests in flight (up to `timeout`), then stop the batchers."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        remaining = max(deadline - loop.time(), 0.1)
        await asyncio.gather(*(b.close(remaining) for b in self._batchers.values()))
        self._executor.shutdown(wait=False, cancel_futures=True)
