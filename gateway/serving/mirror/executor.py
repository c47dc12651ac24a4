"""The executor of one group of mirrored requests that can share a model call: resolve
the other version through the serving table, run its own feature checks, make one
batched call (with the lane's timeout, never on the event loop's thread), feed the
lane's breaker, and compare the whole group in one vectorised pass."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np

from gateway.analysis.divergence import Comparison, OutputRule, compare_batch
from gateway.core.errors import GatewayError
from gateway.core.model_view import ModelView, VersionTable
from gateway.core.servable import Arrays, Signature
from gateway.serving.checks import checked_inputs, mismatch_record
from gateway.serving.dataplane import example_alias
from gateway.serving.mirror.lanes import Lane
from gateway.serving.mirror.outcomes import GroupCall, Mismatches, orient
from gateway.serving.mirror.process import ShadowProcess
from gateway.serving.mirror.task import CANARY, MirrorTask, concat, rows_of
from gateway.serving.runner import VersionRunner


class GroupExecutor:
    """Runs groups of mirrored requests against the serving table."""

    def __init__(
        self,
        table: VersionTable[VersionRunner],
        rules: Mapping[str, Mapping[str, OutputRule]],
        process: ShadowProcess | None = None,
    ) -> None:
        self._table = table
        self._rules = rules
        """Per model: the divergence rule of each output alias."""
        self.process = process
        """Where the model calls run: the idle-priority mirror process, or (None) this
        process's model-call threads."""

    async def execute(self, lane: Lane, tasks: list[MirrorTask]) -> GroupCall:
        """One call of the other version for all `tasks` (same model, signature, input
        shapes and outputs) and, when it answered, one comparison per task."""
        first = tasks[0]
        view = self._table.table.get(first.model)
        version: int | None = None
        code, message = "OK", ""
        outputs: Arrays | None = None
        mismatches: list[Mismatches] = [[] for _ in tasks]
        started = time.perf_counter()
        runner = None
        try:
            if view is None:
                raise GatewayError(f"model '{first.model}' is no longer served")
            runner = _resolve(view, lane, first)
            version = runner.version
            runner.acquire()
            sig = runner.loaded.signature(first.signature)
            merged = _inputs(runner, sig, tasks, mismatches)
            rows = sig.validate(merged)
            process = self.process
            if process is not None:
                if runner.skew is not None and sig.prepare is not None:
                    runner.skew.add(merged)  # what the runner's model call would feed
                call = process.run(
                    runner.loaded.model, version, runner.loaded.path, sig.name, merged
                )
            else:
                call = runner.run(sig, merged, rows, background=True)
            outputs = await asyncio.wait_for(call, lane.timeout_s)
        except TimeoutError:
            code, message = "DEADLINE_EXCEEDED", f"no answer within {lane.timeout_s * 1e3:.0f} ms"
        except GatewayError as exc:
            code, message = exc.kind.status_name, exc.message
        except Exception as exc:
            code, message = "INTERNAL", f"{type(exc).__name__}: {exc}"[:300]
        finally:
            if runner is not None:
                runner.release()
        latency_ms = (time.perf_counter() - started) * 1e3
        lane.after_call(outputs is not None, len(tasks), f"{code}: {message}")
        comparisons = None
        if outputs is not None:
            comparisons = self._compare(lane, tasks, outputs)
        return GroupCall(tasks, version, latency_ms, mismatches, comparisons, code, message)

    def _compare(self, lane: Lane, tasks: list[MirrorTask], outputs: Arrays) -> list[Comparison]:
        """Each task's answer compared with its rows of the lane's call, primary first."""
        keys = list(tasks[0].primary_outputs)
        called = {k: v for k, v in outputs.items() if k in keys}
        answered = concat([task.primary_outputs for task in tasks])
        primary, shadow = orient(lane.comparison, answered, called)
        counts = [rows_of(task.primary_outputs) for task in tasks]
        return compare_batch(primary, shadow, counts, self._rules.get(tasks[0].model))


def _resolve(view: ModelView[VersionRunner], lane: Lane, task: MirrorTask) -> VersionRunner:
    """The runner the lane calls: the rollout's primary (canary), the answering version
    itself (noise), or the shadow's version or label."""
    target = lane.target
    if lane.comparison == CANARY:
        return view.resolve(task.compare_to)
    if target is None:
        return view.resolve(task.primary_version)
    if isinstance(target, int):
        return view.resolve(target)
    return view.resolve(None, target)


def _inputs(
    runner: VersionRunner, sig: Signature, tasks: list[MirrorTask], mismatches: list[Mismatches]
) -> Arrays:
    """The group's merged input for `sig`, checked against this version's training
    statistics when it has them (findings into `mismatches`, per task)."""
    if tasks[0].examples is not None:
        return _example_inputs(runner, sig, tasks, mismatches)
    inputs = [task.inputs for task in tasks]
    if runner.checker is not None and sig.prepare is not None:
        for i, task in enumerate(tasks):
            inputs[i], found = checked_inputs(runner.checker, task.inputs)
            mismatches[i] = [mismatch_record(m) for m in found]
    return concat(inputs)


def _example_inputs(
    runner: VersionRunner, sig: Signature, tasks: list[MirrorTask], mismatches: list[Mismatches]
) -> Arrays:
    """The tf.Example batches of `tasks` as the input of this version's own
    classify/regress signature; checked against its statistics when it has them."""
    batches = [task.examples for task in tasks if task.examples is not None]
    if runner.checker is not None:
        for i, batch in enumerate(batches):
            features = batch.features(runner.checker.features | batch.feature_names())
            mismatches[i] = [mismatch_record(m) for m in runner.checker.check(features)]
    alias = example_alias(sig, tasks[0].method)
    return {alias: np.concatenate([b.serialized for b in batches])}
