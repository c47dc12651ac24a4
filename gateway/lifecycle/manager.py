"""The version manager: polls repositories, loads, swaps and unloads versions.

Runs on the event loop; loading happens on a dedicated thread pool so the
request path never waits on it. The request path reads only `table`, an
immutable mapping replaced as a whole on every change (atomic swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Generic, TypeVar

import structlog

from gateway.config import GatewayConfig, LifecycleConfig, ModelConfig
from gateway.core.errors import NotFound, VersionLoadError
from gateway.core.model_view import ModelView, Servable, view_of
from gateway.core.servable import LoadedVersion
from gateway.core.states import VersionState, VersionStatus
from gateway.lifecycle.loader import LoadHook, PreCheck, WarmupDecoder, load_version
from gateway.lifecycle.monitor import StateMonitor
from gateway.lifecycle.policy import Load, Unload, plan
from gateway.lifecycle.repository import Fingerprint, fingerprint, scan

log = structlog.get_logger("gateway.lifecycle")

R = TypeVar("R", bound=Servable)

Loader = Callable[[str, int, Path], tuple[LoadedVersion, int]]
"""Loads one version directory on a loader thread: (model, version, path) -> (the loaded
version, warmup records replayed); raises `VersionLoadError` with the reason. The default
is the SavedModel pipeline (`lifecycle.loader.load_version` with the manager's hooks);
tests pass a fake runtime's."""

RunnerFactory = Callable[[ModelConfig, LoadedVersion], R]
"""Builds the serving layer's runner of a loaded version (batchers, checks)."""


@dataclass
class _Record(Generic[R]):
    path: Path
    state: VersionState = VersionState.START
    runner: R | None = None
    error: str = ""
    failures: int = 0
    fingerprint: Fingerprint | None = None
    retry_at: float = 0.0
    same_files_failures: int = 0
    """Failed loads of the current files (`lifecycle.max_load_retries` counts these)."""
    warmup_records: int = 0
    runtime: str = ""


@dataclass
class _Model(Generic[R]):
    config: ModelConfig
    records: dict[int, _Record[R]] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    loading: int | None = None
    missing_warned: bool = False
    label_overrides: dict[str, int] = field(default_factory=dict)
    primary_override: int | str | None = None
    pinned: frozenset[int] = frozenset()


class VersionManager(Generic[R]):
    """Owns every model's versions; see the module docstring for the threading contract."""

    def __init__(
        self,
        config: GatewayConfig,
        make_runner: RunnerFactory[R],
        monitor: StateMonitor | None = None,
        hooks: Sequence[LoadHook] = (),
        pre_checks: Sequence[PreCheck] = (),
        on_change: Callable[[], None] | None = None,
        on_load_failure: Callable[[str, int, str], None] | None = None,
        decode_warmup: WarmupDecoder | None = None,
        load: Loader | None = None,
    ) -> None:
        self._lifecycle: LifecycleConfig = config.lifecycle
        self._load_version: Loader = load or self._load_saved_model
        self._make_runner = make_runner
        self.monitor = monitor or StateMonitor()
        self._hooks = list(hooks)
        self._pre_checks = list(pre_checks)
        self._on_change = on_change
        self._on_load_failure = on_load_failure
        self._decode_warmup = decode_warmup
        self._models: dict[str, _Model[R]] = {m.name: _Model(m) for m in config.models}
        self._pool = ThreadPoolExecutor(
            max_workers=config.lifecycle.load_threads, thread_name_prefix="load"
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self.polls = 0
        self._polled = asyncio.Condition()
        self.table: Mapping[str, ModelView[R]] = MappingProxyType({})
        self._publish()

    # -- public API ------------------------------------------------------------------

    def view(self, name: str) -> ModelView[R]:
        """The current snapshot of model `name`; NotFound naming the served models."""
        return view_of(self.table, name)

    def model_names(self) -> list[str]:
        """Configured model names."""
        return sorted(self._models)

    def statuses(self, name: str) -> list[VersionStatus]:
        """Status of every known version of `name`."""
        if name not in self._models:
            raise NotFound(
                f"model '{name}' not found; served models: {', '.join(self.model_names())}"
            )
        return self.monitor.versions(name)

    def base_path(self, name: str) -> Path:
        """The repository directory of model `name`."""
        return self._models[name].config.base_path

    def labels(self, name: str) -> dict[str, int]:
        """Effective labels of model `name` (config plus runtime overrides)."""
        model = self._models[name]
        return {**model.config.version_labels, **model.label_overrides}

    def set_label(self, name: str, label: str, version: int | None) -> None:
        """Point `label` at `version` at runtime (None removes the override)."""
        model = self._models[name]
        if version is None:
            model.label_overrides.pop(label, None)
        else:
            model.label_overrides[label] = version
        self._publish()

    def set_primary(self, name: str, primary: int | str | None) -> None:
        """Override the config's `primary` at runtime (None restores the config's)."""
        self._models[name].primary_override = primary
        self._publish()

    def pin(self, name: str, versions: frozenset[int]) -> None:
        """Keep `versions` of `name` aspired on top of the version policy (e.g. both arms
        of a rollout); takes effect at the next poll. Replaces the previous pins."""
        model = self._models.get(name)
        if model is not None and model.pinned != versions:
            model.pinned = versions
            self.kick()

    async def start(self) -> None:
        """Scan every model once, start loading, and start the poll loop."""
        for name in self._models:
            await self._reconcile(name)
        self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def wait_loaded(self, timeout: float = 120.0) -> None:
        """Wait until no model has a load in progress or pending, including loads that a
        requested poll (`kick`, e.g. after `pin`) has yet to start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._kick.is_set() and self._poller is not None:
                await asyncio.wait_for(self.wait_polls(1), max(deadline - loop.time(), 0.01))
                continue
            busy = [m for m in self._models.values() if m.loading is not None]
            pending = [
                m
                for m in self._models.values()
                for v in m.aspired
                if m.records.get(v) is not None and m.records[v].state is VersionState.START
            ]
            if not busy and not pending:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("models still loading")

    async def apply_config(self, config: GatewayConfig) -> list[str]:
        """Adopt a new config: add/remove models, update policies, labels and batching
        (batching changes apply to versions loaded afterwards). Returns a change summary."""
        changes: list[str] = []
        new = {m.name: m for m in config.models}
        for name in list(self._models):
            if name not in new:
                model = self._models.pop(name)
                for version, rec in list(model.records.items()):
                    if rec.runner is not None:
                        await self._unload(name, model, version)
                self.monitor.forget(name)
                changes.append(f"removed model {name}")
        for name, cfg in new.items():
            if name not in self._models:
                self._models[name] = _Model(cfg)
                changes.append(f"added model {name}")
            elif self._models[name].config != cfg:
                self._models[name].config = cfg
                changes.append(f"updated model {name}")
        self._publish()
        for name in list(self._models):
            await self._reconcile(name)
        return changes

    async def stop(self) -> None:
        """Stop polling and unload every version (waits for requests in flight)."""
        pending = [t for t in [self._poller, *self._tasks] if t is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # every version at once: each waits (bounded) for its own requests in flight
        await asyncio.gather(
            *(
                self._unload(name, model, version)
                for name, model in list(self._models.items())
                for version, rec in list(model.records.items())
                if rec.runner is not None
            )
        )
        self._pool.shutdown(wait=False, cancel_futures=True)

    def kick(self) -> None:
        """Poll now instead of waiting for the interval."""
        self._kick.set()

    # -- internals -------------------------------------------------------------------

    def _load_saved_model(self, name: str, version: int, path: Path) -> tuple[LoadedVersion, int]:
        return load_version(
            name,
            version,
            path,
            self._hooks,
            self._lifecycle.warmup,
            self._pre_checks,
            self._decode_warmup,
        )

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._lifecycle.poll_interval_seconds)
            self._kick.clear()
            for name in list(self._models):
                try:
                    await self._reconcile(name)
                except Exception:
                    log.exception("reconcile_failed", model=name)
            async with self._polled:
                self.polls += 1
                self._polled.notify_all()

    async def wait_polls(self, count: int) -> None:
        """Wait until `count` more poll cycles have completed (tests, tools)."""
        async with self._polled:
            target = self.polls + count
            await self._polled.wait_for(lambda: self.polls >= target)

    async def _reconcile(self, name: str) -> None:
        model = self._models.get(name)
        if model is None:
            return
        cfg = model.config
        found = await asyncio.to_thread(scan, cfg.base_path)
        if not found:
            # An empty or vanished base_path never unloads what is serving.
            if not model.missing_warned:
                log.warning(
                    "base_path_empty",
                    model=name,
                    base_path=str(cfg.base_path),
                    detail="missing or no version directories; keeping loaded versions",
                )
                model.missing_warned = True
            found = {}
            aspired = model.aspired
        else:
            model.missing_warned = False
            aspired = cfg.version_policy.select(sorted(found)) | (model.pinned & set(found))
        model.aspired = set(aspired)
        for version in aspired:
            if version not in model.records and version in found:
                model.records[version] = _Record(found[version])
                self._report(name, version, model.records[version])
        # forget failed/ended versions whose directory is gone
        for version in [v for v, r in model.records.items() if r.runner is None and v not in found]:
            if model.loading != version and found:
                del model.records[version]
        now = time.monotonic()
        retry: set[int] = set()
        for version, rec in model.records.items():
            if rec.state is VersionState.FAILED and version in found and now >= rec.retry_at:
                current = await asyncio.to_thread(fingerprint, found[version])
                budget = self._lifecycle.max_load_retries
                if current != rec.fingerprint or (
                    budget is not None and rec.same_files_failures <= budget
                ):
                    retry.add(version)
        states = {v: r.state for v, r in model.records.items()}
        for action in plan(model.aspired, states, retry):
            if isinstance(action, Load):
                if model.loading is None and action.version in found:
                    model.records[action.version].path = found[action.version]
                    self._start_load(name, model, action.version)
            elif isinstance(action, Unload):
                await self._unload(name, model, action.version)

    def _start_load(self, name: str, model: _Model[R], version: int) -> None:
        model.loading = version
        task = asyncio.get_running_loop().create_task(self._load(name, model, version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, name: str, model: _Model[R], version: int) -> None:
        rec = model.records[version]
        rec.state = VersionState.LOADING
        rec.error = ""
        self._report(name, version, rec)
        log.info("version_loading", model=name, version=version, path=str(rec.path))
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            files = await asyncio.to_thread(fingerprint, rec.path)
            if files != rec.fingerprint:
                rec.same_files_failures = 0
            rec.fingerprint = files
            loaded, warmed = await loop.run_in_executor(
                self._pool, self._load_version, name, version, rec.path
            )
            runner = self._make_runner(model.config, loaded)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = (
                str(exc) if isinstance(exc, VersionLoadError) else f"{type(exc).__name__}: {exc}"
            )
            rec.failures += 1
            rec.same_files_failures += 1
            rec.state = VersionState.FAILED
            rec.error = reason
            backoff = min(
                self._lifecycle.retry_initial_seconds * 2 ** (rec.failures - 1),
                self._lifecycle.retry_max_seconds,
            )
            rec.retry_at = time.monotonic() + backoff
            model.loading = None
            log.error(
                "version_failed",
                model=name,
                version=version,
                reason=reason,
                failures=rec.failures,
                retry_after_seconds=backoff,
            )
            if self._on_load_failure is not None:
                self._on_load_failure(name, version, reason)
            self._report(name, version, rec)
            self.kick()
            return
        rec.runner = runner
        rec.state = VersionState.AVAILABLE
        rec.warmup_records = warmed
        rec.runtime = str(loaded.extensions.get("runtime", ""))
        rec.failures = 0
        model.loading = None
        self._publish()
        log.info(
            "version_available",
            model=name,
            version=version,
            load_seconds=round(time.monotonic() - started, 3),
            warmup_records=warmed,
        )
        self._report(name, version, rec)
        await self._reconcile(name)

    async def _unload(self, name: str, model: _Model[R], version: int) -> None:
        rec = model.records.get(version)
        if rec is None or rec.runner is None:
            return
        runner = rec.runner
        rec.runner = None
        rec.state = VersionState.UNLOADING
        self._publish()  # new requests can no longer resolve it
        self._report(name, version, rec)
        await runner.close()
        rec.state = VersionState.END
        self._report(name, version, rec)
        log.info("version_unloaded", model=name, version=version)

    def _report(self, name: str, version: int, rec: _Record[R]) -> None:
        self.monitor.publish(
            VersionStatus(
                name,
                version,
                rec.state,
                rec.error,
                rec.failures,
                rec.warmup_records,
                rec.runtime,
            )
        )

    def _publish(self) -> None:
        views = {}
        for name, model in self._models.items():
            versions = {
                v: r.runner
                for v, r in model.records.items()
                if r.runner is not None and r.state is VersionState.AVAILABLE
            }
            labels = {**model.config.version_labels, **model.label_overrides}
            primary = (
                model.primary_override
                if model.primary_override is not None
                else model.config.primary
            )
            views[name] = ModelView(
                name, MappingProxyType(versions), MappingProxyType(labels), primary
            )
        self.table = MappingProxyType(views)
        if self._on_change is not None:
            self._on_change()
