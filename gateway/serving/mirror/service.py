"""`Mirror`: all lanes of all models, the data-plane hook that feeds them, and the
pipeline behind them (scheduler -> executor -> outcomes -> recorder chain)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Mapping

from gateway.analysis.divergence import NoiseFloor, OutputRule
from gateway.config import GatewayConfig
from gateway.core.model_view import VersionTable
from gateway.core.protocols import CaptureSink, DivergenceSink, MirrorMetrics
from gateway.routing.router import Arm, key_hash_hex
from gateway.serving.checks import mismatch_record
from gateway.serving.dataplane import Answer
from gateway.serving.lane_summary import LaneSummary
from gateway.serving.mirror.executor import GroupExecutor
from gateway.serving.mirror.lanes import Lane, lanes_of
from gateway.serving.mirror.outcomes import OutcomeBuilder
from gateway.serving.mirror.process import ShadowProcess
from gateway.serving.mirror.recorders import (
    CanaryCallback,
    CanaryGateRecorder,
    CaptureRecorder,
    DivergenceLogRecorder,
    LaneStatsRecorder,
    MetricsRecorder,
    NoiseFloorRecorder,
    Recorder,
    RecorderChain,
)
from gateway.serving.mirror.scheduler import LaneScheduler
from gateway.serving.mirror.task import CANARY, MirrorTask
from gateway.serving.runner import VersionRunner

DROP_REPORT_SECONDS = 10.0
"""How often dropped mirrored requests are summarised in the divergence log."""

RETIRE_SECONDS = 30.0
"""How long a replaced lane may take to finish what it has queued."""


class Mirror:
    """All lanes of all models, their workers, and their recorders."""

    def __init__(
        self,
        manager: VersionTable[VersionRunner],
        metrics: MirrorMetrics,
        divergence_log: DivergenceSink | None = None,
        capture: Mapping[str, CaptureSink] | None = None,
        rng: random.Random | None = None,
        on_canary: CanaryCallback | None = None,
        recorders: Iterable[Recorder] = (),
        process: ShadowProcess | None = None,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._log = divergence_log
        self._capture = dict(capture or {})
        self._rng = rng or random.Random()
        self._lanes: dict[str, list[Lane]] = {}
        self._rules: dict[str, dict[str, OutputRule]] = {}
        self._capture_rate: dict[str, float] = {}
        self._sensitive: dict[str, frozenset[str]] = {}
        self.noise: dict[str, NoiseFloor] = {}
        """Per model with a noise lane: the primary compared with itself."""
        self._drop_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._recorders = RecorderChain(self._default_recorders(on_canary))
        for recorder in recorders:
            self._recorders.append(recorder)
        self._executor = GroupExecutor(manager, self._rules, process)
        self.process = process
        """The idle-priority mirror process (`mirroring.executor: process`), or None."""
        self._outcomes = OutcomeBuilder(self.noise)

    @property
    def recorders(self) -> RecorderChain:
        """What happens to every outcome, in order; `append` a recorder to add a sink."""
        return self._recorders

    def _default_recorders(self, on_canary: CanaryCallback | None) -> list[Recorder]:
        chain: list[Recorder] = []
        if on_canary is not None:
            chain.append(CanaryGateRecorder(on_canary))
        chain += [
            NoiseFloorRecorder(self.noise, self._metrics),
            LaneStatsRecorder(),
            MetricsRecorder(self._metrics),
        ]
        if self._log is not None:
            chain.append(DivergenceLogRecorder(self._log, self._sensitive))
        if self._capture:
            chain.append(CaptureRecorder(self._capture, self._capture_rate, self._rng))
        return chain

    # -- configuration -------------------------------------------------------------

    def configure(self, config: GatewayConfig) -> None:
        """(Re)build lanes from the config; call on the event loop. Old lanes finish
        what they have queued and stop."""
        loop = asyncio.get_running_loop()
        mirroring = config.mirroring
        scheduler = LaneScheduler(
            self._executor,
            self._outcomes,
            self._recorders,
            bulk=mirroring.bulk,
            linger_s=mirroring.linger_ms / 1e3,
        )
        old = self._lanes
        self._lanes = {}
        for model in config.models:
            self._rules[model.name] = {
                alias: OutputRule.from_config(rule) for alias, rule in model.divergence.items()
            }
            self._capture_rate[model.name] = model.capture.sample_rate
            self._sensitive[model.name] = frozenset(model.feature_checks.sensitive_features)
            if model.noise_sample_rate > 0:
                self.noise.setdefault(model.name, NoiseFloor())
            lanes = lanes_of(model, mirroring.breaker)
            for lane in lanes:
                scheduler.start(lane)
            if lanes:
                self._lanes[model.name] = lanes
        for lanes in old.values():
            for lane in lanes:
                retiring = loop.create_task(self._retire(lane))
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
        if self._drop_task is None:
            self._drop_task = loop.create_task(self._report_drops())

    async def _retire(self, lane: Lane) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(lane.queue.join(), RETIRE_SECONDS)
        for worker in lane.workers:
            worker.cancel()

    async def start(self) -> None:
        """Start the mirror process, when there is one (call on the event loop)."""
        if self.process is not None:
            await self.process.start()

    def on_table_change(self) -> None:
        """The serving table changed: the mirror process keeps loaded exactly the
        available versions of the models that have lanes."""
        if self.process is None:
            return
        wanted = {}
        for model in self._lanes:
            view = self._manager.table.get(model)
            if view is not None:
                for version, runner in view.versions.items():
                    wanted[(model, version)] = runner.loaded.path
        self.process.retain(wanted)

    async def close(self) -> None:
        """Stop every worker (queued mirrored work is abandoned) and flush the sinks."""
        tasks = [w for lanes in self._lanes.values() for lane in lanes for w in lane.workers]
        if self._drop_task is not None:
            tasks.append(self._drop_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_drops()
        if self.process is not None:
            await self.process.close()
        if self._log is not None:
            await asyncio.to_thread(self._log.close)
        for writer in self._capture.values():
            await asyncio.to_thread(writer.close)

    def has_lanes(self, model: str) -> bool:
        """Whether requests of `model` are mirrored anywhere."""
        return model in self._lanes

    # -- the request path ----------------------------------------------------------

    def on_response(self, answer: Answer) -> None:
        """Data-plane response hook: mirror an answered request. Requests the primary
        answered go to the shadow and noise lanes; requests the canary answered in a
        rollout's split go to the canary lane, to be compared with the rollout's primary."""
        request = answer.request
        if answer.outputs is None or answer.code != "OK" or request.model not in self._lanes:
            return
        route = answer.route
        canary = route is not None and route.arm is Arm.CANARY and route.in_experiment
        primary = answer.primary_version
        if not (canary or primary is None or primary == answer.version):
            return
        task = MirrorTask(
            request_id=request.request_id,
            model=request.model,
            signature=answer.signature,
            inputs=dict(answer.features or {}),
            primary_version=answer.version,
            primary_outputs=answer.outputs,
            primary_latency_ms=answer.seconds * 1e3,
            primary_mismatches=[mismatch_record(m) for m in answer.mismatches],
            routing_key_hash=(
                key_hash_hex(request.model, route.key) if route is not None and route.key else None
            ),
            served_inputs=answer.served_inputs if request.examples is None else None,
            method=request.method,
            examples=request.examples,
            protocol=request.protocol,
        )
        if canary:
            assert route is not None
            task.compare_to = route.primary
            self.offer_canary(task)
        else:
            self.offer(task)

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
            admission = lane.enqueue(task, now)
            if admission != "queued":
                self._metrics.shadow_outcome(
                    task.model, task.primary_version, lane.target, lane.comparison, admission
                )

    # -- drops and the admin summary -----------------------------------------------

    async def _report_drops(self) -> None:
        while True:
            await asyncio.sleep(DROP_REPORT_SECONDS)
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

    def summary(self, model: str) -> list[LaneSummary]:
        """Live per-lane figures of `model` (admin service)."""
        out: list[LaneSummary] = []
        floor = self.noise.get(model)
        for lane in self._lanes.get(model, ()):
            s = lane.stats
            out.append(
                LaneSummary(
                    lane=lane.name,
                    comparison=lane.comparison,
                    target="" if lane.target is None else str(lane.target),
                    shadow_version=s.last_shadow_version or 0,
                    offered=s.offered,
                    compared=s.compared,
                    diverged=s.diverged,
                    divergence_rate=s.diverged / s.compared if s.compared else 0.0,
                    label_flips=s.label_flips,
                    within_noise=s.within_noise,
                    errors=s.errors,
                    timeouts=s.timeouts,
                    dropped=s.dropped,
                    suppressed=s.suppressed,
                    suspended=lane.breaker.suspended,
                    queued=lane.queue.qsize(),
                    mean_latency_ms=s.latency_ms_sum / s.compared if s.compared else 0.0,
                    max_abs=dict(s.max_abs),
                    noise_samples=floor.count if floor else 0,
                    deterministic=floor.deterministic if floor and floor.count else True,
                )
            )
        return out
