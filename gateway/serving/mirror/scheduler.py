"""Lane workers: when and in what portions mirrored requests are executed.

A worker waits for a mirrored request, lets more gather for `linger_s`, waits for the
event loop's spare time, takes up to `bulk` queued requests, and splits them into
groups that can share one model call. Each group goes to the executor; the outcomes
go to the recorder chain one request at a time, each in the loop's spare time (while
requests are waiting to run, a worker waits, and its bounded queue fills and drops
instead of slowing clients down).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from gateway.serving.batcher import waiting_callbacks
from gateway.serving.mirror.executor import GroupExecutor
from gateway.serving.mirror.lanes import Lane
from gateway.serving.mirror.outcomes import Compared, OutcomeBuilder
from gateway.serving.mirror.recorders import RecorderChain
from gateway.serving.mirror.task import MirrorTask

log = structlog.get_logger("gateway.shadow")

YIELD_SECONDS = 0.0005
"""How long a lane worker waits before looking again while the event loop is busy."""


class LaneScheduler:
    """Runs the workers of lanes: gather, take, group, execute, record."""

    def __init__(
        self,
        executor: GroupExecutor,
        outcomes: OutcomeBuilder,
        recorders: RecorderChain,
        bulk: int,
        linger_s: float,
    ) -> None:
        self._executor = executor
        self._outcomes = outcomes
        self._recorders = recorders
        self.bulk = bulk
        """Most queued mirrored requests one worker takes at once."""
        self.linger_s = linger_s
        """How long a worker lets mirrored requests gather before it runs them."""

    def start(self, lane: Lane) -> None:
        """Start the lane's `concurrency` workers (on the running loop)."""
        loop = asyncio.get_running_loop()
        for _ in range(lane.concurrency):
            lane.workers.append(loop.create_task(self.work(lane)))

    async def work(self, lane: Lane) -> None:
        """One worker of `lane`, until cancelled."""
        while True:
            tasks = [await lane.queue.get()]
            # Let more mirrored requests gather: one model call, one comparison pass and
            # one GIL-holding TensorFlow dispatch serve them all.
            await asyncio.sleep(self.linger_s)
            await spare_time()
            while len(tasks) < self.bulk and not lane.queue.empty():
                tasks.append(lane.queue.get_nowait())
            try:
                for group in groups(tasks):
                    await self._mirror(lane, group)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mirror_failed", model=lane.model, lane=lane.name)
            finally:
                for _ in tasks:
                    lane.queue.task_done()

    async def _mirror(self, lane: Lane, group: list[MirrorTask]) -> None:
        """One call for the group, then one outcome per request to the recorders."""
        call = await self._executor.execute(lane, group)
        for outcome in self._outcomes.outcomes(lane, call):
            self._recorders.record(outcome)
            if isinstance(outcome, Compared):
                await spare_time()  # one request's bookkeeping at a time


async def spare_time() -> None:
    """Return once no other callback (a request being served) is waiting to run on the
    event loop: mirroring only ever uses the loop's spare time."""
    loop = asyncio.get_running_loop()
    while waiting_callbacks(loop):
        await asyncio.sleep(YIELD_SECONDS)


def group_key(task: MirrorTask) -> tuple[Any, ...]:
    """Requests with equal keys can share one model call and one comparison pass."""
    return (
        task.model,
        task.signature,
        task.primary_version,
        task.compare_to,
        task.method,
        task.examples is None,
        tuple((k, v.shape[1:], v.dtype.str) for k, v in task.inputs.items()),
        tuple((k, v.shape[1:], v.dtype.str) for k, v in task.primary_outputs.items()),
    )


def groups(tasks: list[MirrorTask]) -> list[list[MirrorTask]]:
    """`tasks` split into groups of equal `group_key`, in order of first appearance."""
    if len(tasks) == 1:
        return [tasks]
    out: dict[tuple[Any, ...], list[MirrorTask]] = {}
    for task in tasks:
        out.setdefault(group_key(task), []).append(task)
    return list(out.values())
