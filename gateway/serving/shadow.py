"""Shadow traffic: mirror primary requests to other versions, off the critical path.

Contract: `Mirror.offer(...)` is called after the primary has answered; it is
O(1) per lane (a random draw and `put_nowait` on a bounded queue) and never
blocks or raises. A full queue drops the work and counts it. Worker tasks
(`concurrency` per lane, 1 by default) let mirrored requests gather for
`LINGER_SECONDS`, take up to `BULK` of them, and run each group that can share a
call (same signature, shapes, outputs) as one call of the shadow version through
its own runner (batched like primary calls, on the shadow version's own threads,
never on the event loop's), with a timeout, then compare the whole group in one
vectorised pass (`compare_batch`). They only work in the event loop's spare time
(`_spare_time`: while requests are waiting to run, they wait, and the queue fills
and drops instead). Errors and timeouts are counted and logged and never reach the
client. Each comparison becomes one divergence-log record, metrics, an entry in the
live summary, and possibly a captured PredictionLog.

A `noise` lane replays a sample of requests to the primary itself: a
deterministic primary shows zero divergence; a non-deterministic one (dropout
left on, stateful ops) is reported once, and shadow divergence is judged
against that noise floor.

A `canary` lane exists while a model has a rollout: requests that the canary
answered (`offer_canary`) are sent to the rollout's primary as the "shadow",
and the comparison is recorded the right way round (primary = the rollout's
primary, shadow = the canary) and reported to `on_canary` for the rollout gates.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from gateway.analysis.divergence import Comparison, NoiseFloor, OutputRule, compare_batch
from gateway.config import GatewayConfig, VersionRef
from gateway.errors import GatewayError
from gateway.serving.batcher import waiting_callbacks
from gateway.serving.checks import checked_inputs, mismatch_record
from gateway.serving.servable import Arrays
from gateway.sinks.divergence_log import first_row_features, input_digest

log = structlog.get_logger("gateway.shadow")

BREAKER_FAILURES = 20
"""Consecutive errors/timeouts after which a lane stops mirroring for a cool-down."""
BREAKER_COOLDOWN = (1.0, 60.0)
"""First and longest cool-down (seconds); doubles while probes keep failing."""

BULK = 64
"""Most queued mirrored requests one lane worker takes at once (one model call per group)."""

LINGER_SECONDS = 0.01
"""How long a lane worker lets mirrored requests gather before it runs them."""
YIELD_SECONDS = 0.0005
"""How long a lane worker waits before looking again while the event loop is busy."""

NOISE = "noise"
SHADOW = "shadow"
CANARY = "canary"
MIN_NOISE_SAMPLES = 10


@dataclass(eq=False)
class MirrorTask:
    """One mirrored request: the raw inputs and what the primary answered."""

    request_id: str
    model: str
    signature: str
    inputs: Arrays
    primary_version: int
    primary_outputs: Arrays
    primary_latency_ms: float
    primary_mismatches: list[dict[str, Any]]
    routing_key_hash: str | None
    compare_to: int | None = None
    """For canary tasks: the rollout's primary version, called as the "shadow"."""
    served_inputs: Arrays | None = None
    """The inputs the answering version used (without features its checks dropped); what
    a capture records, so that a capture is a valid warmup file. None = `inputs`."""
    enqueued: float = field(default_factory=time.monotonic)


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
    """One mirror destination of a model: a shadow version, or the noise replay."""

    def __init__(
        self,
        model: str,
        comparison: str,
        target: VersionRef | None,
        sample_rate: float,
        timeout_s: float,
        queue_size: int,
        concurrency: int,
    ) -> None:
        self.model = model
        self.comparison = comparison
        self.target = target  # None = the primary version itself (noise)
        self.sample_rate = sample_rate
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[MirrorTask] = asyncio.Queue(maxsize=queue_size)
        self.concurrency = concurrency
        self.stats = LaneStats()
        self.workers: list[asyncio.Task[None]] = []
        # circuit breaker: a shadow that fails every call teaches nothing and costs CPU
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.cooldown = BREAKER_COOLDOWN[0]
        self.probing = False

    def admit(self, now: float) -> bool:
        """False while the breaker is open; lets one probe through after the cool-down."""
        if self.consecutive_failures < BREAKER_FAILURES:
            return True
        if now < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def record(self, ok: bool, now: float) -> str | None:
        """Update the breaker; returns "opened" or "closed" on a state change."""
        was_open = self.consecutive_failures >= BREAKER_FAILURES
        self.probing = False
        if ok:
            self.consecutive_failures = 0
            self.cooldown = BREAKER_COOLDOWN[0]
            return "closed" if was_open else None
        self.consecutive_failures += 1
        if self.consecutive_failures >= BREAKER_FAILURES:
            self.open_until = now + self.cooldown
            if was_open:
                self.cooldown = min(self.cooldown * 2, BREAKER_COOLDOWN[1])
                return None
            return "opened"
        return None

    @property
    def name(self) -> str:
        """e.g. `shadow:canary` or `noise`."""
        return self.comparison if self.target is None else f"{self.comparison}:{self.target}"


class Mirror:
    """All lanes of all models, their workers, and their sinks."""

    def __init__(
        self,
        manager: Any,
        metrics: Any,
        divergence_log: Any | None = None,
        capture: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
        on_canary: Callable[[str, int, int, bool], None] | None = None,
    ) -> None:
        self._manager = manager
        self._on_canary = on_canary
        """Called with (model, primary version, canary version, diverged) per comparison."""
        self._metrics = metrics
        self._log = divergence_log
        self._capture = dict(capture or {})
        self._rng = rng or random.Random()
        self._lanes: dict[str, list[Lane]] = {}
        self._rules: dict[str, dict[str, OutputRule]] = {}
        self._capture_rate: dict[str, float] = {}
        self._sensitive: dict[str, frozenset[str]] = {}
        self.noise: dict[str, NoiseFloor] = {}
        self._nondeterministic_reported: set[str] = set()
        self._drop_task: asyncio.Task[None] | None = None

    # -- configuration -------------------------------------------------------------

    def configure(self, config: GatewayConfig) -> None:
        """(Re)build lanes from the config; call on the event loop. Old lanes finish
        what they have queued and stop."""
        old = self._lanes
        self._lanes = {}
        for model in config.models:
            self._rules[model.name] = {
                alias: OutputRule.from_dict(rule.model_dump())
                for alias, rule in model.divergence.items()
            }
            self._capture_rate[model.name] = model.capture.sample_rate
            self._sensitive[model.name] = frozenset(model.feature_checks.sensitive_features)
            lanes = [
                Lane(
                    model.name,
                    SHADOW,
                    s.version,
                    s.sample_rate,
                    s.timeout_ms / 1e3,
                    s.queue_size,
                    s.concurrency,
                )
                for s in model.shadows
            ]
            if model.noise_sample_rate > 0:
                timeout = max((s.timeout_ms for s in model.shadows), default=1000)
                lanes.append(
                    Lane(model.name, NOISE, None, model.noise_sample_rate, timeout / 1e3, 10_000, 1)
                )
                self.noise.setdefault(model.name, NoiseFloor())
            if model.rollout is not None and model.rollout.compare_sample_rate > 0:
                r = model.rollout
                lanes.append(
                    Lane(
                        model.name,
                        CANARY,
                        None,
                        r.compare_sample_rate,
                        r.compare_timeout_ms / 1e3,
                        10_000,
                        1,
                    )
                )
            for lane in lanes:
                for _ in range(lane.concurrency):
                    lane.workers.append(asyncio.get_running_loop().create_task(self._work(lane)))
            if lanes:
                self._lanes[model.name] = lanes
        for lanes in old.values():
            for lane in lanes:
                asyncio.get_running_loop().create_task(self._retire(lane))
        if self._drop_task is None:
            self._drop_task = asyncio.get_running_loop().create_task(self._report_drops())

    async def _retire(self, lane: Lane) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(lane.queue.join(), 30)
        for worker in lane.workers:
            worker.cancel()

    async def close(self) -> None:
        """Stop every worker (queued mirrored work is abandoned) and flush the sinks."""
        tasks = [w for lanes in self._lanes.values() for lane in lanes for w in lane.workers]
        if self._drop_task is not None:
            tasks.append(self._drop_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_drops()
        if self._log is not None:
            await asyncio.to_thread(self._log.close)
        for writer in self._capture.values():
            await asyncio.to_thread(writer.close)

    def has_lanes(self, model: str) -> bool:
        """Whether requests of `model` are mirrored anywhere."""
        return model in self._lanes

    # -- the request path ----------------------------------------------------------

    def offer(self, task: MirrorTask) -> None:
        """Queue a primary answer on every shadow/noise lane of its model that samples it
        (never blocks)."""
        self._offer(task, canary=False)

    def offer_canary(self, task: MirrorTask) -> None:
        """Queue a canary answer (with `task.compare_to` = the rollout's primary) on the
        model's canary lane, if sampled (never blocks)."""
        self._offer(task, canary=True)

    def _offer(self, task: MirrorTask, canary: bool) -> None:
        now = time.monotonic()
        for lane in self._lanes.get(task.model, ()):
            if (lane.comparison == CANARY) != canary:
                continue
            if lane.sample_rate < 1.0 and self._rng.random() >= lane.sample_rate:
                continue
            lane.stats.offered += 1
            if not lane.admit(now):
                lane.stats.suppressed += 1
                self._metrics.shadow_outcome(
                    task.model, task.primary_version, lane.target, lane.comparison, "suppressed"
                )
                continue
            try:
                lane.queue.put_nowait(task)
            except asyncio.QueueFull:
                lane.stats.dropped += 1
                self._metrics.shadow_outcome(
                    task.model, task.primary_version, lane.target, lane.comparison, "dropped"
                )

    # -- workers -------------------------------------------------------------------

    async def _work(self, lane: Lane) -> None:
        while True:
            tasks = [await lane.queue.get()]
            # Let more mirrored requests gather: one model call, one comparison pass and
            # one GIL-holding TensorFlow dispatch serve them all.
            await asyncio.sleep(LINGER_SECONDS)
            await _spare_time()
            while len(tasks) < BULK and not lane.queue.empty():
                tasks.append(lane.queue.get_nowait())
            try:
                for group in _groups(tasks):
                    await self._mirror_group(lane, group)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mirror_failed", model=lane.model, lane=lane.name)
            finally:
                for _ in tasks:
                    lane.queue.task_done()

    async def _mirror_group(self, lane: Lane, tasks: list[MirrorTask]) -> None:
        """Mirror requests that can share one model call (same model, signature, input
        shapes and outputs): one shadow call for all of them, one vectorised comparison,
        then one record per request."""
        first = tasks[0]
        view = self._manager.table.get(first.model)
        target = lane.target
        shadow_version: int | None = None
        code = "OK"
        message = ""
        outputs: Arrays | None = None
        shadow_mismatches: list[list[dict[str, Any]]] = [[] for _ in tasks]
        started = time.perf_counter()
        runner = None
        try:
            if view is None:
                raise GatewayError(f"model '{first.model}' is no longer served")
            if lane.comparison == CANARY:
                runner = view.resolve(first.compare_to)
            elif target is None:
                runner = view.resolve(first.primary_version)
            elif isinstance(target, int):
                runner = view.resolve(target)
            else:
                runner = view.resolve(None, target)
            shadow_version = runner.version
            runner.acquire()
            sig = runner.loaded.signature(first.signature)
            inputs = [task.inputs for task in tasks]
            if runner.checker is not None and sig.prepare is not None:
                for i, task in enumerate(tasks):
                    inputs[i], found = checked_inputs(runner.checker, task.inputs)
                    shadow_mismatches[i] = [mismatch_record(m) for m in found]
            merged = _concat(inputs)
            rows = sig.validate(merged)
            outputs = await asyncio.wait_for(
                runner.run(sig, merged, rows, background=True), lane.timeout_s
            )
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
        now = time.monotonic()
        for _ in tasks:
            change = lane.record(outputs is not None, now)
            if change == "opened":
                log.warning(
                    "shadow_suspended",
                    model=first.model,
                    lane=lane.name,
                    consecutive_failures=lane.consecutive_failures,
                    last_error=f"{code}: {message}",
                    detail=f"mirroring paused; probing again after {lane.cooldown:.0f}s (doubling)",
                )
            elif change == "closed":
                log.info("shadow_resumed", model=first.model, lane=lane.name)
        if outputs is None:
            for task in tasks:
                self._failed(lane, task, shadow_version, code, message)
            return
        assert shadow_version is not None
        keys = list(first.primary_outputs)
        shadow_outputs = {k: v for k, v in outputs.items() if k in keys}
        primary_outputs = _concat([task.primary_outputs for task in tasks])
        counts = [_rows(task.primary_outputs) for task in tasks]
        rules = self._rules.get(first.model)
        if lane.comparison == CANARY:
            # the mirrored call answered for the primary; the client's answers came from
            # the canary: compare (and log) them the right way round
            comparisons = compare_batch(shadow_outputs, primary_outputs, counts, rules)
        else:
            comparisons = compare_batch(primary_outputs, shadow_outputs, counts, rules)
        for task, comparison, mismatches in zip(tasks, comparisons, shadow_mismatches, strict=True):
            self._compared(lane, task, comparison, shadow_version, latency_ms, mismatches)
            await _spare_time()  # one request's bookkeeping at a time

    def _failed(
        self, lane: Lane, task: MirrorTask, shadow_version: int | None, code: str, message: str
    ) -> None:
        """Count and log one mirrored request the shadow did not answer."""
        if code == "DEADLINE_EXCEEDED":
            lane.stats.timeouts += 1
            outcome = "timeout"
        else:
            lane.stats.errors += 1
            outcome = "error"
        target = lane.target
        self._metrics.shadow_outcome(
            task.model, task.primary_version, shadow_version or target, lane.comparison, outcome
        )
        if self._log is not None:
            primary: int | None = task.primary_version
            shadow = shadow_version
            if lane.comparison == CANARY:  # the mirrored call was the primary's
                primary = shadow_version if shadow_version is not None else task.compare_to
                shadow = task.primary_version
            self._log.shadow_error(
                request_id=task.request_id,
                model=task.model,
                comparison=lane.comparison,
                primary_version=primary,
                shadow_version=shadow,
                shadow_target=target,
                error=code,
                message=message,
            )

    def _compared(
        self,
        lane: Lane,
        task: MirrorTask,
        comparison: Comparison,
        shadow_version: int,
        latency_ms: float,
        shadow_mismatches: list[dict[str, Any]],
    ) -> None:
        """Count, export, log (and maybe capture) one compared request."""
        stats = lane.stats
        primary_version = task.primary_version
        latencies = {"primary": task.primary_latency_ms, "shadow": latency_ms}
        mismatches = {"primary": task.primary_mismatches, "shadow": shadow_mismatches}
        if lane.comparison == CANARY:
            primary_version, shadow_version = shadow_version, task.primary_version
            latencies = {"primary": latency_ms, "shadow": task.primary_latency_ms}
            mismatches = {"primary": shadow_mismatches, "shadow": task.primary_mismatches}
            if self._on_canary is not None:
                self._on_canary(task.model, primary_version, shadow_version, comparison.diverged)
        floor = self.noise.get(task.model)
        within_noise: bool | None = None
        if lane.comparison == NOISE and floor is not None:
            floor.add(comparison)
            self._check_determinism(task.model, task.primary_version, floor)
        elif floor is not None and floor.count >= MIN_NOISE_SAMPLES:
            within_noise = comparison.within_noise(floor)
        stats.compared += 1
        stats.latency_ms_sum += latency_ms
        stats.last_shadow_version = shadow_version
        if comparison.diverged:
            stats.diverged += 1
        if within_noise:
            stats.within_noise += 1
        flips = any(m.label_flip for m in comparison.outputs.values())
        if flips:
            stats.label_flips += 1
        for alias, m in comparison.outputs.items():
            if m.max_abs is not None and math.isfinite(m.max_abs):
                stats.max_abs[alias] = max(stats.max_abs.get(alias, 0.0), m.max_abs)
        self._metrics.divergence(
            task.model,
            lane.comparison,
            primary_version,
            shadow_version,
            comparison,
            latency_ms,
        )
        if self._log is not None:
            self._log.divergence(
                request_id=task.request_id,
                model=task.model,
                comparison=lane.comparison,
                primary_version=primary_version,
                shadow_version=shadow_version,
                routing_key_hash=task.routing_key_hash,
                rows=_rows(task.inputs),
                latency_ms={k: round(v, 3) for k, v in latencies.items()},
                outputs=comparison.to_json(),
                diverged=comparison.diverged,
                within_noise=within_noise,
                feature_mismatches=mismatches,
                features=first_row_features(
                    task.inputs, self._sensitive.get(task.model, frozenset())
                ),
                input_digest=input_digest(task.inputs),
            )
        writer = self._capture.get(task.model)
        if writer is not None and (
            comparison.diverged or self._rng.random() < self._capture_rate.get(task.model, 0.0)
        ):
            writer.write(*_prediction_log(task))

    def _check_determinism(self, model: str, version: int, floor: NoiseFloor) -> None:
        self._metrics.noise_floor(model, version, floor)
        if (
            floor.count >= MIN_NOISE_SAMPLES
            and not floor.deterministic
            and model not in self._nondeterministic_reported
        ):
            self._nondeterministic_reported.add(model)
            log.warning(
                "primary_nondeterministic",
                model=model,
                version=version,
                samples=floor.count,
                floor=floor.summary(),
                detail="the primary answers the same request differently (dropout active "
                "at inference? a stateful op?); shadow divergence is judged against this "
                "noise floor",
            )

    # -- drops and the admin summary -----------------------------------------------

    async def _report_drops(self) -> None:
        while True:
            await asyncio.sleep(10)
            self._flush_drops()

    def _flush_drops(self) -> None:
        for lanes in self._lanes.values():
            for lane in lanes:
                new = lane.stats.dropped - lane.stats.reported_drops
                if new > 0 and self._log is not None:
                    self._log.drops(
                        model=lane.model,
                        shadow_version=lane.stats.last_shadow_version,
                        count=new,
                        comparison=lane.comparison,
                        shadow_target=lane.target,
                    )
                lane.stats.reported_drops = lane.stats.dropped

    def summary(self, model: str) -> list[dict[str, Any]]:
        """Live per-lane figures of `model` (admin service)."""
        out = []
        floor = self.noise.get(model)
        for lane in self._lanes.get(model, ()):
            s = lane.stats
            out.append(
                {
                    "lane": lane.name,
                    "comparison": lane.comparison,
                    "target": "" if lane.target is None else str(lane.target),
                    "shadow_version": s.last_shadow_version or 0,
                    "offered": s.offered,
                    "compared": s.compared,
                    "diverged": s.diverged,
                    "divergence_rate": s.diverged / s.compared if s.compared else 0.0,
                    "label_flips": s.label_flips,
                    "within_noise": s.within_noise,
                    "errors": s.errors,
                    "timeouts": s.timeouts,
                    "dropped": s.dropped,
                    "suppressed": s.suppressed,
                    "suspended": lane.consecutive_failures >= BREAKER_FAILURES,
                    "queued": lane.queue.qsize(),
                    "mean_latency_ms": s.latency_ms_sum / s.compared if s.compared else 0.0,
                    "max_abs": dict(s.max_abs),
                    "noise_samples": floor.count if floor else 0,
                    "deterministic": floor.deterministic if floor and floor.count else True,
                }
            )
        return out


async def _spare_time() -> None:
    """Return once no other callback (a request being served) is waiting to run on the
    event loop: mirroring only ever uses the loop's spare time; meanwhile the bounded
    queues fill and drop instead of slowing clients down."""
    loop = asyncio.get_running_loop()
    while waiting_callbacks(loop):
        await asyncio.sleep(YIELD_SECONDS)


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    """Batch size of a request (first dimension of its first array; 0 without arrays)."""
    first = next(iter(arrays.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0


def _concat(parts: list[Arrays]) -> Arrays:
    """Requests' arrays concatenated along the batch dimension (one part: as is)."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _group_key(task: MirrorTask) -> tuple[Any, ...]:
    """Requests with equal keys can share one model call and one comparison pass."""
    return (
        task.model,
        task.signature,
        task.primary_version,
        task.compare_to,
        tuple((k, v.shape[1:], v.dtype.str) for k, v in task.inputs.items()),
        tuple((k, v.shape[1:], v.dtype.str) for k, v in task.primary_outputs.items()),
    )


def _groups(tasks: list[MirrorTask]) -> list[list[MirrorTask]]:
    """`tasks` split into groups of equal `_group_key`, in order of first appearance."""
    if len(tasks) == 1:
        return [tasks]
    groups: dict[tuple[Any, ...], list[MirrorTask]] = {}
    for task in tasks:
        groups.setdefault(_group_key(task), []).append(task)
    return list(groups.values())


def _prediction_log(task: MirrorTask) -> tuple[Any, Any]:
    """TF Serving PredictRequest/Response protos of a mirrored request, for capture."""
    from tensorflow_serving.apis import predict_pb2

    from gateway.transport.tensors import fill_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = task.model
    request.model_spec.signature_name = task.signature
    inputs = task.served_inputs if task.served_inputs is not None else task.inputs
    for name, value in inputs.items():
        fill_proto(request.inputs[name], value)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = task.model
    response.model_spec.version.value = task.primary_version
    response.model_spec.signature_name = task.signature
    for name, value in task.primary_outputs.items():
        fill_proto(response.outputs[name], value)
    return request, response


__all__ = ["CANARY", "NOISE", "SHADOW", "Comparison", "Mirror", "MirrorTask"]
