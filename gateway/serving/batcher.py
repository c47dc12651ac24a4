"""Dynamic batching: merge concurrent requests of one signature into one model call.

Contract: `submit(inputs, rows)` resolves with exactly the rows of `inputs`, equal
(within float tolerance) to an unbatched call. Requests are merged up to
`max_batch_size` rows; with `timeout_s == 0` a batch is formed from whatever is
queued when a batch slot frees up (no added latency at low load, natural
batching under load), otherwise the batcher waits up to `timeout_s` after the
first queued request for more. A request larger than `max_batch_size` is run in
chunks. When a merged call fails with `InvalidInput`, each request is re-run on
its own so one bad request cannot fail its neighbours.

Idle fast path: when nothing is queued or running, no other work is ready on the
event loop, and this signature's calls take at most `inline_max_s` (measured, a
moving average), the request's model call runs right away on the event-loop thread
instead of hopping to a model-call thread and back (two thread wake-ups, a few
hundred microseconds at low load). Under load the loop always has ready work, so
requests queue and are batched as usual; a slow model never runs inline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from gateway.core.errors import InternalError, InvalidInput, ResourceExhausted, Unavailable
from gateway.core.servable import Arrays, RunFn

BatchObserver = Callable[[int, int], None]
"""Called after each model call with (rows, requests merged)."""


@dataclass(eq=False)
class _Item:
    inputs: Arrays
    rows: int
    key: Hashable
    future: asyncio.Future[Arrays]
    enqueued: float = field(default_factory=time.monotonic)


def _shape_key(inputs: Arrays) -> Hashable:
    return tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(inputs.items()))


class Batcher:
    """Per-(version, signature) request merger running model calls on an executor."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch_size: int = 64,
        timeout_s: float = 0.0,
        max_enqueued: int = 10_000,
        num_threads: int = 1,
        observer: BatchObserver | None = None,
        inline_max_s: float = 0.002,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self._timeout = timeout_s
        self._max_enqueued = max_enqueued
        self._slots_total = num_threads
        self._observer = observer
        self._inline_max = inline_max_s
        self.call_seconds: float | None = None
        """Moving average of this signature's model call time (None before the first)."""
        self.inline_calls = 0
        self._queue: deque[_Item] = deque()
        self._rows_pending = 0
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, inputs: Arrays, rows: int, inline: bool = True) -> Arrays:
        """Queue one request (all arrays with `rows` rows) and await its outputs.

        `inline=False` never takes the idle fast path (background work, e.g. a shadow
        call, must not hold the event loop)."""
        if self._closed:
            raise Unavailable("model version is unloading; retry")
        if len(self._queue) >= self._max_enqueued:
            raise ResourceExhausted(
                f"batch queue full ({self._max_enqueued} requests waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        if inline and self._idle(loop, rows):
            self.inline_calls += 1
            result = self._call_one(inputs, rows)
            if isinstance(result, BaseException):
                raise result
            return result
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self._slots_total)
            self._task = loop.create_task(self._dispatch())
        item = _Item(inputs, rows, _shape_key(inputs), loop.create_future())
        self._queue.append(item)
        self._rows_pending += rows
        assert self._wakeup is not None
        self._wakeup.set()
        return await item.future

    def _idle(self, loop: asyncio.AbstractEventLoop, rows: int) -> bool:
        """Whether the idle fast path applies (see the module docstring)."""
        seconds = self.call_seconds
        return (
            seconds is not None
            and seconds <= self._inline_max
            and not self._queue
            and not self._running
            and rows <= self.max_batch_size
            and waiting_callbacks(loop) == 0
        )

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting; finish what is queued and running (up to `timeout` seconds;
        requests still queued then fail with UNAVAILABLE, so a close never hangs)."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._queue or self._running) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(Unavailable("model version was unloaded; retry"))

    async def _dispatch(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        wakeup, slots = self._wakeup, self._slots
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            await slots.acquire()
            if self._timeout > 0:
                deadline = self._queue[0].enqueued + self._timeout if self._queue else 0.0
                while self._queue and self._rows_pending < self.max_batch_size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    wakeup.clear()
                    try:
                        await asyncio.wait_for(wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            items = self._take()
            if not items:
                slots.release()
                continue
            task = loop.create_task(self._execute(items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Item]:
        """Take queued items sharing the first live item's shape key, up to max rows."""
        first = self._pop_live()
        if first is None:
            return []
        taken = [first]
        rows = first.rows
        self._rows_pending -= first.rows
        kept: deque[_Item] = deque()
        scan = 0
        while self._queue and rows < self.max_batch_size and scan <= 4 * self.max_batch_size:
            item = self._queue.popleft()
            if item.future.done():  # cancelled by the client
                self._rows_pending -= item.rows
                continue
            scan += 1
            if item.key == first.key and rows + item.rows <= self.max_batch_size:
                taken.append(item)
                rows += item.rows
                self._rows_pending -= item.rows
            else:
                kept.append(item)
        kept.extend(self._queue)
        self._queue = kept
        return taken

    def _pop_live(self) -> _Item | None:
        """The first queued item whose client is still waiting (cancelled ones dropped)."""
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                return item
            self._rows_pending -= item.rows
        return None

    async def _execute(self, items: list[_Item]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._call, items)
        except BaseException as exc:  # executor shut down or cancelled
            results = [exc] * len(items)
        finally:
            self._slots.release()
            if self._queue and self._wakeup is not None:
                self._wakeup.set()
        for item, result in zip(items, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    # -- runs on the executor thread ------------------------------------------------

    def _call(self, items: list[_Item]) -> list[Arrays | BaseException]:
        if len(items) == 1:
            return [self._call_one(items[0].inputs, items[0].rows)]
        rows = sum(i.rows for i in items)
        try:
            merged = {k: np.concatenate([i.inputs[k] for i in items]) for k in items[0].inputs}
            outputs = self._run_observed(merged, rows, len(items))
            offsets = np.cumsum([i.rows for i in items])[:-1]
            split = {k: np.split(_check_rows(k, v, rows), offsets) for k, v in outputs.items()}
            return [{k: parts[n] for k, parts in split.items()} for n in range(len(items))]
        except InvalidInput:
            return [self._call_one(i.inputs, i.rows) for i in items]
        except Exception as exc:
            return [exc] * len(items)

    def _call_one(self, inputs: Arrays, rows: int) -> Arrays | BaseException:
        try:
            if rows <= self.max_batch_size:
                return self._run_observed(inputs, rows, 1)
            parts: list[Arrays] = []
            for start in range(0, rows, self.max_batch_size):
                chunk = {k: v[start : start + self.max_batch_size] for k, v in inputs.items()}
                n = min(self.max_batch_size, rows - start)
                parts.append(
                    {k: _check_rows(k, v, n) for k, v in self._run_observed(chunk, n, 1).items()}
                )
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        except Exception as exc:
            return exc

    def _run_observed(self, inputs: Arrays, rows: int, requests: int) -> Arrays:
        started = time.perf_counter()
        outputs = self._run(inputs)
        took = time.perf_counter() - started
        last = self.call_seconds
        self.call_seconds = took if last is None else 0.8 * last + 0.2 * took
        if self._observer is not None:
            self._observer(rows, requests)
        return outputs


def waiting_callbacks(loop: asyncio.AbstractEventLoop) -> int | None:
    """How many callbacks wait to run on `loop` (asyncio's ready queue), or None for a
    loop that does not expose it (then neither the idle fast path nor spare-time
    scheduling assumes anything: no fast path, no waiting)."""
    ready = getattr(loop, "_ready", None)
    return None if ready is None else len(ready)


def _check_rows(alias: str, array: np.ndarray, rows: int) -> np.ndarray:
    if array.ndim == 0 or array.shape[0] != rows:
        raise InternalError(
            f"output '{alias}' has shape {list(array.shape)}, not batch-major for {rows} rows"
        )
    return array
