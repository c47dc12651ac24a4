"""Batcher logic with a fake model function (pure logic; the real model is tested end to end)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.core.errors import InvalidInput, ResourceExhausted
from gateway.serving.batcher import Batcher, waiting_callbacks
from tests.support import wait_until_async


class FakeModel:
    """Doubles its input; records batch sizes; can block until released (`gate`);
    `entered` counts calls that started (a call blocked on the gate is in flight)."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.calls: list[int] = []
        self.entered = 0
        self._lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on = fail_on

    def __call__(self, inputs):
        with self._lock:
            self.entered += 1
        if not self.gate.wait(10):
            raise AssertionError("FakeModel: the test never released the gate")
        x = inputs["x"]
        self.calls.append(len(x))
        if self.fail_on is not None and (x == self.fail_on).any():
            raise InvalidInput("bad value")
        return {"y": x * 2, "n": np.full(len(x), len(x))}


def run(coro):
    return asyncio.run(coro)


def make(model, **kw):
    return Batcher(model, ThreadPoolExecutor(2), **kw)


def rows(value: float, n: int = 1):
    return {"x": np.full((n, 3), value, np.float32)}


async def in_flight(model: FakeModel, calls: int = 1) -> None:
    """Wait until `calls` model calls have started (and are held by the gate)."""
    await wait_until_async(
        lambda: model.entered >= calls,
        5,
        f"{calls} model call(s) in flight",
        seen=lambda: f"{model.entered} started",
    )


async def queued(b: Batcher, n: int) -> None:
    """Wait until `n` requests wait in the batcher's queue (behind the running call)."""
    await wait_until_async(
        lambda: len(b._queue) == n,
        5,
        f"{n} queued requests",
        seen=lambda: f"{len(b._queue)} queued",
    )


def test_concurrent_requests_are_merged_and_split_back():
    model = FakeModel()
    observed = []

    async def main():
        b = make(
            model, max_batch_size=64, num_threads=1, observer=lambda r, q: observed.append((r, q))
        )
        model.gate.clear()  # hold the first call so the rest queue up
        first = asyncio.ensure_future(b.submit(rows(0), 1))
        await in_flight(model)
        rest = [asyncio.ensure_future(b.submit(rows(i, 2), 2)) for i in range(1, 11)]
        await queued(b, 10)
        model.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = run(main())
    assert model.calls == [1, 20]
    assert observed == [(1, 1), (20, 10)]
    for i, out in enumerate(rest, start=1):
        np.testing.assert_array_equal(out["y"], np.full((2, 3), 2.0 * i))
        assert out["y"].shape == (2, 3)


def test_max_batch_size_is_respected_and_large_request_is_chunked():
    model = FakeModel()

    async def main():
        b = make(model, max_batch_size=8, num_threads=1)
        model.gate.clear()
        futs = [asyncio.ensure_future(b.submit(rows(i, 3), 3)) for i in range(6)]
        big = asyncio.ensure_future(
            b.submit({"x": np.arange(60, dtype=np.float32).reshape(20, 3)}, 20)
        )
        await in_flight(model)  # the first batch runs (held); every request was queued before
        model.gate.set()
        return await asyncio.gather(*futs), await big

    small, big = run(main())
    assert max(model.calls) <= 8
    np.testing.assert_array_equal(big["y"], np.arange(60, dtype=np.float32).reshape(20, 3) * 2)
    assert sorted(model.calls).count(8) >= 2  # the 20-row request ran as 8 + 8 + 4
    for i, out in enumerate(small):
        np.testing.assert_array_equal(out["y"], np.full((3, 3), 2.0 * i))


def test_timeout_zero_does_not_wait_and_timeout_collects():
    model = FakeModel()

    async def main(timeout):
        b = make(model, max_batch_size=64, timeout_s=timeout, num_threads=1)
        a = asyncio.ensure_future(b.submit(rows(1), 1))
        # time is the behaviour: a second request 20 ms later must not join with
        # timeout 0 (no waiting) and must join within a 0.5 s window
        await asyncio.sleep(0.02)
        c = asyncio.ensure_future(b.submit(rows(2), 1))
        await asyncio.gather(a, c)

    run(main(0.0))
    assert model.calls == [1, 1]
    model.calls.clear()
    run(main(0.5))
    assert model.calls == [2]


def test_bad_request_in_a_batch_fails_alone():
    model = FakeModel(fail_on=-1.0)

    async def main():
        b = make(model, max_batch_size=64, num_threads=1)
        model.gate.clear()
        blocker = asyncio.ensure_future(b.submit(rows(0), 1))
        await in_flight(model)
        futs = [asyncio.ensure_future(b.submit(rows(-1.0 if i == 3 else i), 1)) for i in range(8)]
        await queued(b, 8)
        model.gate.set()
        await blocker
        return await asyncio.gather(*futs, return_exceptions=True)

    results = run(main())
    assert isinstance(results[3], InvalidInput)
    for i, r in enumerate(results):
        if i != 3:
            np.testing.assert_array_equal(r["y"], np.full((1, 3), 2.0 * i))


def test_different_trailing_shapes_are_not_merged():
    model = FakeModel()

    async def main():
        b = make(model, max_batch_size=64, num_threads=1)
        model.gate.clear()
        blocker = asyncio.ensure_future(b.submit(rows(0), 1))
        await in_flight(model)
        a = asyncio.ensure_future(b.submit({"x": np.ones((1, 3), np.float32)}, 1))
        c = asyncio.ensure_future(b.submit({"x": np.ones((1, 5), np.float32)}, 1))
        d = asyncio.ensure_future(b.submit({"x": np.ones((1, 3), np.float32)}, 1))
        await queued(b, 3)
        model.gate.set()
        await blocker
        return await asyncio.gather(a, c, d)

    a, c, d = run(main())
    assert c["y"].shape == (1, 5) and a["y"].shape == (1, 3)
    assert model.calls == [1, 2, 1]


def test_queue_full_is_resource_exhausted():
    model = FakeModel()

    async def main():
        b = make(model, max_batch_size=1, max_enqueued=2, num_threads=1)
        model.gate.clear()
        futs = [asyncio.ensure_future(b.submit(rows(0), 1))]
        await in_flight(model)  # the first is running (blocked); two more fill the queue
        futs += [asyncio.ensure_future(b.submit(rows(i), 1)) for i in (1, 2)]
        await queued(b, 2)
        assert not any(f.done() for f in futs)
        with pytest.raises(ResourceExhausted, match="queue full"):
            await b.submit(rows(9), 1)
        model.gate.set()
        await asyncio.gather(*futs)

    run(main())


def test_idle_fast_path_runs_a_lone_fast_call_on_the_loop_and_never_a_slow_one():
    async def main(delay: float, inline_max_s: float):
        calls: list[str] = []

        def model(inputs):
            calls.append(threading.current_thread().name)
            if delay:
                threading.Event().wait(delay)
            return {"y": inputs["x"] * 2}

        b = Batcher(
            model, ThreadPoolExecutor(1, thread_name_prefix="model"), inline_max_s=inline_max_s
        )
        first = await b.submit(rows(1), 1)  # no measurement yet: through the thread
        loop = asyncio.get_running_loop()
        # the client's round trip: the loop goes idle (the first call's task is done and
        # nothing else is ready to run)
        await wait_until_async(
            lambda: not b._running and waiting_callbacks(loop) == 0,
            5,
            "an idle batcher and event loop",
            seen=lambda: f"{len(b._running)} running, {waiting_callbacks(loop)} ready callbacks",
        )
        second = await b.submit(rows(2), 1)  # lone, fast: on the loop's own thread
        np.testing.assert_array_equal(second["y"], rows(4)["x"])
        np.testing.assert_array_equal(first["y"], rows(2)["x"])
        # concurrent requests are still queued and batched, never inline
        both = await asyncio.gather(b.submit(rows(3), 1), b.submit(rows(5), 1))
        await b.close()
        return calls, b.inline_calls, both

    loop_thread = threading.current_thread().name
    calls, inline, both = run(main(0.0, 0.002))
    assert calls[0].startswith("model") and calls[1] == loop_thread and inline >= 1
    assert [float(r["y"][0, 0]) for r in both] == [6.0, 10.0]
    # a model slower than inline_max_s never blocks the event loop
    calls, inline, _ = run(main(0.01, 0.002))
    assert inline == 0 and all(c.startswith("model") for c in calls)
    # inline_max_s = 0 turns the fast path off
    calls, inline, _ = run(main(0.0, 0.0))
    assert inline == 0
