"""The gateway: lifecycle, serving and transport wired together on one gRPC port."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import (
    model_service_pb2,
    prediction_service_pb2,
)

from gateway._proto.gateway.v1 import admin_pb2
from gateway.analysis.skew import FeatureSkew
from gateway.bundle.attach import attach_bundle, verify_bundle
from gateway.config import GatewayConfig, ModelConfig, ServerConfig, load_config
from gateway.core.errors import ConfigError, InvalidInput, NotFound
from gateway.core.model_view import ModelView
from gateway.core.servable import LoadedVersion
from gateway.lifecycle.loader import LoadHook
from gateway.lifecycle.manager import VersionManager
from gateway.lifecycle.monitor import StateMonitor
from gateway.routing.controller import RolloutController
from gateway.serving.admission import Admission
from gateway.serving.checks import SkewMonitor, build_checks, mismatch_record
from gateway.serving.dataplane import DataPlane, RolloutStatistics
from gateway.serving.lane_summary import LaneSummary
from gateway.serving.mirror import Mirror
from gateway.serving.mirror.process import ShadowProcess
from gateway.serving.runner import VersionRunner
from gateway.sinks.metrics import Metrics
from gateway.transport import oip_grpc, oip_rest
from gateway.transport.admin import AdminServicer
from gateway.transport.auth import AdminAuth, load_token
from gateway.transport.calls import add_servicer
from gateway.transport.capture import PredictionLogCapture
from gateway.transport.model_server_config import apply_model_server_config
from gateway.transport.model_service import ModelServicer
from gateway.transport.prediction import PredictionServicer
from gateway.transport.tfs_rest import RestServer, TfsRestApi, server_ssl_context
from gateway.transport.warmup import decode_warmup_record

log = structlog.get_logger("gateway")

OVERALL = ""  # the health service name for the whole server
UNIX_PATH_MAX = 107  # bytes of a Unix socket path (sun_path less its terminating NUL)


class ConfigSource(Protocol):
    """Where the config comes from when it is more than one YAML file: TF Serving's flags
    and config files (`gateway.tfserving.source.TfServingSource`). The gateway re-reads it
    on `reload`, polls it, and merges TF Serving reload requests through it."""

    @property
    def poll_seconds(self) -> float:
        """How often `poll` is called (0: never)."""

    @property
    def prometheus_path(self) -> str | None:
        """The HTTP path the Prometheus metrics are served at (TF Serving's monitoring
        config), or None."""

    def load(self) -> GatewayConfig:
        """Read everything again; `ConfigError` when something is invalid."""

    def poll(self, current: GatewayConfig) -> GatewayConfig | None:
        """The new config when a polled file changed, else None; `ConfigError` when it
        is invalid (the config in force is kept)."""

    def apply_model_server_config(
        self, current: GatewayConfig, server_config: Any
    ) -> GatewayConfig:
        """`current` with the model list of a TF Serving `ModelServerConfig`."""


def _configure_tf_threads(intra: int, inter: int) -> None:
    """Set TensorFlow's thread pools (0 = TF's default); only possible before TF's first op."""
    if not intra and not inter:
        return
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        log.warning("tf_threads_not_applied", detail="TensorFlow was already initialized")


class Gateway:
    """One gateway instance. `start()` binds the port and begins loading models;
    `stop()` drains in-flight requests, unloads versions and closes exporters."""

    def __init__(
        self,
        config: GatewayConfig,
        config_path: Path | None = None,
        hooks: list[LoadHook] | None = None,
        source: ConfigSource | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._source = source
        self._source_task: asyncio.Task[None] | None = None
        self._apply_lock = asyncio.Lock()
        self.rest_port: int | None = None
        self._rest: RestServer | None = None
        self.socket_path: Path | None = None
        self.metrics = Metrics()
        self.monitor = StateMonitor()
        self.monitor.add_listener(self.metrics.on_state)
        self._hooks = [attach_bundle] if hooks is None else hooks
        self._skew_monitor = SkewMonitor(self.metrics)
        self._skew_task: asyncio.Task[None] | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self._server: Any = None
        self._health: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.manager: VersionManager[VersionRunner] | None = None
        self.mirror: Mirror | None = None
        self.rollouts: RolloutController | None = None
        self.replica = config.logging.replica or f"{socket.gethostname()}:{os.getpid()}"

    def _make_runner(self, model: ModelConfig, loaded: LoadedVersion) -> VersionRunner:
        checker, skew = build_checks(model, loaded)
        return VersionRunner(
            loaded,
            model.batching,
            self.metrics.batch_observer,
            checker=checker,
            skew=skew,
        )

    def _on_mismatches(self, model: str, version: int, mismatches: list[Any]) -> None:
        self.metrics.on_mismatches(model, version, mismatches)
        log.info(
            "feature_mismatch",
            model=model,
            version=version,
            mismatches=[mismatch_record(m) for m in mismatches],
        )

    async def start(self) -> None:
        """Bind the port, start serving, and begin loading every configured model."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config.server
        tfs = self.config.tfserving
        if self._source is None and tfs != type(tfs)():
            raise ConfigError(
                "tfserving: TF Serving's files are read by the serve command line "
                "(`gateway serve`, `tensorflow_model_server`), or pass "
                "source=gateway.tfserving.source.TfServingSource(...)"
            )
        auth = AdminAuth(load_token(cfg))  # ConfigError before anything is bound
        if not auth.enabled:
            log.warning(
                "admin_unauthenticated",
                detail="no server.admin_token_file / admin_token_env: config reloads and "
                "rollout actions are open to every client that reaches the port",
            )
        _configure_tf_threads(cfg.tf_intra_op_threads, cfg.tf_inter_op_threads)
        self.manager = VersionManager(
            self.config,
            self._make_runner,
            monitor=self.monitor,
            hooks=self._hooks,
            pre_checks=[verify_bundle],
            on_change=self._on_table_change,
            on_load_failure=self.metrics.on_load_failure,
            decode_warmup=decode_warmup_record,
        )
        self._server = grpc.aio.server(options=list(cfg.channel_options().items()))
        self.rollouts = RolloutController(
            self.manager, self.metrics, self._canary_skew, replica=self.replica
        )
        self.mirror = self._make_mirror()
        admission = Admission(
            cfg.max_inflight_requests, cfg.max_inflight_bytes, on_shed=self.metrics.on_shed
        )
        self.metrics.watch_admission(admission)
        self.plane = DataPlane(
            self.manager,
            router=self.rollouts,
            hooks=[RolloutStatistics(self.rollouts), self.mirror],
            on_mismatches=self._on_mismatches,
            check_method_names=cfg.signature_method_name_check,
            admission=admission,
        )
        limits = cfg.decode_limits()
        servicers: list[Any] = [
            PredictionServicer(
                self.plane,
                self.metrics,
                typed_outputs=cfg.response_encoding == "typed",
                limits=limits,
            ),
            ModelServicer(self.manager, self.metrics, self.reload_tfs_config, auth),
            AdminServicer(
                self.manager,
                self.metrics,
                self.reload,
                self.skew_report,
                self.divergence_summary,
                self.rollouts,
                auth,
            ),
            oip_grpc.OipServicer(self.plane, self.manager, self.metrics, limits),
        ]
        for servicer in servicers:
            servicer.replica = self.replica
        self._health = health_aio.HealthServicer()
        services = (
            prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
            model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
            oip_grpc.SERVICE_DESCRIPTOR,
            health_pb2.DESCRIPTOR.services_by_name["Health"],
        )
        protocols = [s.protocol for s in servicers] + ["health"]
        for service, servicer, protocol in zip(
            services, [*servicers, self._health], protocols, strict=True
        ):
            add_servicer(self._server, service, servicer, self.metrics, protocol)
        reflection.enable_server_reflection(
            [
                prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
                model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
                admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                oip_grpc.SERVICE,
                reflection.SERVICE_NAME,
            ],
            self._server,
            pool=oip_grpc.ReflectionPool(),
        )
        credentials = _server_credentials(cfg) if cfg.tls is not None else None
        self.port = _add_port(self._server, f"{cfg.host}:{cfg.port}", credentials)
        if self.port == 0:
            raise OSError(f"could not bind {cfg.host}:{cfg.port}")
        # This process's name in the rollout store (evidence, lease): distinct per
        # process, stable across a restart on the same host and port.
        self.rollouts.identity = self.replica or f"{socket.gethostname()}:{self.port}"
        if cfg.grpc_socket_path is not None:
            _remove_stale_socket(cfg.grpc_socket_path)
            if not _add_port(self._server, f"unix:{cfg.grpc_socket_path}", credentials):
                raise OSError(f"could not listen on unix:{cfg.grpc_socket_path}")
            self.socket_path = cfg.grpc_socket_path
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve(cfg.metrics_port, cfg.host)
        self._serve_rest_port(cfg)
        lifecycle = self.config.lifecycle
        if lifecycle.load_before_serving:
            # As TF Serving: the port accepts calls once every configured model has had
            # its first load (available, or failed with a reason).
            await self._start_models()
            try:
                await self.manager.wait_loaded(lifecycle.startup_timeout_seconds)
            except TimeoutError:
                log.warning(
                    "startup_loads_pending",
                    detail="serving before every model finished loading "
                    f"(lifecycle.startup_timeout_seconds={lifecycle.startup_timeout_seconds})",
                )
            await self._open()
        else:
            await self._open()
            await self._start_models()
        self._on_table_change()
        self._skew_task = self._loop.create_task(self._skew_loop())
        if self._source is not None and self._source.poll_seconds > 0:
            self._source_task = self._loop.create_task(self._poll_source(self._source))
        log.info(
            "gateway_started",
            port=self.port,
            socket=str(self.socket_path) if self.socket_path else None,
            metrics_port=self.metrics_port,
            rest_port=self.rest_port,
            models=[m.name for m in self.config.models],
        )

    def _serve_rest_port(self, cfg: ServerConfig) -> None:
        """TF Serving's REST API on the REST port (bound now, served with the gRPC port),
        with the Prometheus metrics at TF Serving's monitoring path; without a REST port
        they are on the metrics port (which answers every path)."""
        path = self._source.prometheus_path if self._source is not None else None
        if cfg.rest_api_port is not None:
            assert self.manager is not None
            limits = cfg.decode_limits()
            api = TfsRestApi(
                self.plane,
                self.manager,
                self.metrics,
                cfg.max_message_bytes,
                self.replica,
                path,
                limits,
            )
            api.mounts[oip_rest.PREFIX] = oip_rest.OipRest(
                self.plane, self.manager, self.metrics, self.replica, cfg.max_message_bytes, limits
            ).handle
            tls = cfg.tls
            context = (
                server_ssl_context(tls.cert_file, tls.key_file, tls.client_ca_file)
                if tls is not None
                else None
            )
            self._rest = RestServer(
                api, cfg.host, cfg.rest_api_port, context, cfg.rest_keepalive_seconds
            )
            self.rest_port = self._rest.bind()
        elif path is not None and self.metrics_port is None:
            log.warning(
                "prometheus_not_served",
                detail="the monitoring config enables Prometheus, but there is neither a "
                "REST port (--rest_api_port) nor a metrics port (server.metrics_port)",
            )

    async def _open(self) -> None:
        """Start serving: the gRPC port, the REST port, the overall health SERVING."""
        await self._server.start()
        if self._rest is not None:
            await self._rest.start()
        await self._health.set(OVERALL, health_pb2.HealthCheckResponse.SERVING)

    async def _poll_source(self, source: ConfigSource) -> None:
        """Re-read the polled files (TF Serving's model_config_file) every period and apply
        what changed; an invalid file is logged (once per distinct error) and ignored."""
        last_error = ""
        while source.poll_seconds > 0:  # a reload may turn polling off
            await asyncio.sleep(source.poll_seconds)  # the polling period is the behaviour
            try:
                config = await asyncio.to_thread(source.poll, self.config)
            except ConfigError as exc:
                if str(exc) != last_error:
                    log.warning("model_config_file_invalid", error=str(exc), detail="config kept")
                last_error = str(exc)
                continue
            except Exception:
                log.exception("model_config_file_poll_failed")
                continue
            last_error = ""
            if config is not None:
                changes = await self._apply(config)
                log.info("model_config_file_applied", changes=changes)

    async def _start_models(self) -> None:
        assert self.manager is not None and self.mirror is not None
        assert self.rollouts is not None
        await self.mirror.start()
        await self.manager.start()
        self.mirror.configure(self.config)
        await self.rollouts.configure(self.config)

    def _on_table_change(self) -> None:
        if self._health is None or self.manager is None or self._loop is None:
            return
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for name, view in self.manager.table.items():
            status = serving if _resolves(view) else not_serving
            self._loop.create_task(self._health.set(name, status))
        if self.mirror is not None:
            self.mirror.on_table_change()

    async def wait(self) -> None:
        """Block until the server stops."""
        await self._server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight RPCs finish (up to `grace` s), unload, close."""
        grace = self.config.server.grace_seconds if grace is None else grace
        if self._skew_task is not None:
            self._skew_task.cancel()
        if self._source_task is not None:
            self._source_task.cancel()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            rest = self._rest.stop(grace) if self._rest is not None else asyncio.sleep(0)
            await _bounded("servers", asyncio.gather(self._server.stop(grace), rest), grace + 10)
        if self.socket_path is not None and self.socket_path.is_socket():
            self.socket_path.unlink(missing_ok=True)
        if self.rollouts is not None:
            await _bounded("rollouts", self.rollouts.close(), 10)
        if self.mirror is not None:
            await _bounded("mirror", self.mirror.close(), 20)
        if self.manager is not None:
            await _bounded("versions", self.manager.stop(), 40)
        self.metrics.close()
        log.info("gateway_stopped")

    async def _skew_loop(self) -> None:
        while True:
            interval = min(
                (m.skew.check_interval_seconds for m in self.config.models), default=10.0
            )
            await asyncio.sleep(interval)
            if self.manager is not None:
                try:
                    self._skew_monitor.check(self.manager.table)
                except Exception:
                    log.exception("skew_check_failed")

    def _make_mirror(self) -> Mirror:
        logging = self.config.logging
        divergence_log = None
        if logging.divergence_log is not None:
            from gateway.sinks.divergence_log import DivergenceLog

            sensitive = {f for m in self.config.models for f in m.feature_checks.sensitive_features}
            divergence_log = DivergenceLog(
                logging.divergence_log,
                rotate_mb=logging.rotate_mb,
                keep=logging.keep,
                sensitive_features=sensitive,
                replica=self.replica,
                on_drop=lambda reason: self.metrics.log_drops.labels(reason).inc(),
            )
        capture = {}
        for model in self.config.models:
            if model.capture.path is not None:
                from gateway.sinks.capture import CaptureWriter

                capture[model.name] = PredictionLogCapture(
                    CaptureWriter(
                        model.capture.path,
                        rotate_mb=model.capture.rotate_mb,
                        keep=model.capture.keep,
                    )
                )
        assert self.manager is not None
        process = None
        if self.config.mirroring.executor == "process":
            process = ShadowProcess(hooks=_hook_specs(self._hooks))
        return Mirror(
            self.manager,
            self.metrics,
            divergence_log,
            capture,
            on_canary=self.rollouts.on_canary_compared if self.rollouts is not None else None,
            process=process,
        )

    def _canary_skew(self, model: str, version: int) -> float | None:
        """The largest current feature skew of a version (JS for numeric, L-inf for
        categorical features with enough values), for the rollout skew gate."""
        assert self.manager is not None
        view = self.manager.table.get(model)
        runner = view.versions.get(version) if view is not None else None
        if runner is None or runner.skew is None:
            return None
        values = [
            f.linf if f.categorical else f.js
            for f in runner.skew.report().values()
            if f.num_values >= runner.skew.config.min_values
        ]
        return max(values, default=None)

    def divergence_summary(self, model: str) -> list[LaneSummary]:
        """Live per-shadow divergence figures of `model` (for the admin service)."""
        assert self.manager is not None
        self.manager.view(model)  # NotFound for unknown models
        return self.mirror.summary(model) if self.mirror is not None else []

    def skew_report(self, model: str) -> dict[int, dict[str, FeatureSkew]]:
        """Current skew per version and feature of `model` (for the admin service)."""
        assert self.manager is not None
        return self._skew_monitor.report(self.manager.view(model))

    async def reload(self) -> list[str]:
        """Re-read the config file (and TF Serving's files and flags, with a config source)
        and apply its model list (server settings need a restart)."""
        if self.config_path is None and self._source is None:
            raise InvalidInput("the gateway was not started from a config file")
        try:
            if self._source is not None:
                config = await asyncio.to_thread(self._source.load)
            else:
                assert self.config_path is not None
                config = load_config(self.config_path)
        except ConfigError as exc:
            raise InvalidInput(f"config reload rejected: {exc}") from exc
        return await self._apply(config)

    async def reload_tfs_config(self, server_config: Any) -> list[str]:
        """Apply a TF Serving ModelServerConfig (model_config_list only): TF Serving's config
        says which models, where and which versions; everything else a model had here
        (batching, checks, shadows, rollout, ...) is kept."""
        try:
            if self._source is not None:
                config = self._source.apply_model_server_config(self.config, server_config)
            else:
                config = apply_model_server_config(self.config, server_config)
        except ConfigError as exc:
            raise InvalidInput(str(exc)) from exc
        return await self._apply(config)

    async def _apply(self, config: GatewayConfig) -> list[str]:
        assert self.manager is not None
        async with self._apply_lock:  # reloads, TF Serving reloads and polls, one at a time
            changes = await self.manager.apply_config(config)
            self.config = config
            if self.mirror is not None:
                self.mirror.configure(config)
            if self.rollouts is not None:
                await self.rollouts.configure(config)
        log.info("config_reloaded", changes=changes)
        return changes


async def _bounded(step: str, work: Awaitable[Any], seconds: float) -> None:
    """One shutdown step, given at most `seconds`: a stop always finishes (a step that
    overruns is logged by name and abandoned; the process is exiting anyway)."""
    try:
        await asyncio.wait_for(work, seconds)
    except TimeoutError:
        log.error("stop_step_timeout", step=step, seconds=seconds)


def _hook_specs(hooks: Sequence[LoadHook]) -> list[str]:
    """The load hooks as `module:name` for the mirror process; a hook it cannot import
    (a closure, a lambda) is left out, with a warning."""
    specs = []
    for hook in hooks:
        name = getattr(hook, "__qualname__", "")
        if not name or "<" in name:
            log.warning(
                "shadow_process_hook_skipped",
                hook=repr(hook),
                detail="the mirror process loads versions without this hook (not importable)",
            )
            continue
        specs.append(f"{hook.__module__}:{name}")
    return specs


def _resolves(view: ModelView[VersionRunner]) -> bool:
    """A model is SERVING once every request the config promises would be answered: its
    primary (a version or a label, or the newest available) and each of its version
    labels resolve. Until then a client that waits for SERVING would get NOT_FOUND (e.g.
    a restart loading the newest version before the configured primary)."""
    try:
        view.resolve()
        for label in view.labels:
            view.resolve(None, label)
    except NotFound:
        return False
    return True


def _add_port(server: Any, address: str, credentials: Any) -> int:
    """Listen on `address` (plaintext, or TLS with `credentials`); the bound port, 0 if not."""
    if credentials is not None:
        return int(server.add_secure_port(address, credentials))
    return int(server.add_insecure_port(address))


def _remove_stale_socket(path: Path) -> None:
    """Remove a Unix socket file left by an earlier run; refuse to touch anything else."""
    where = "server.grpc_socket_path"
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ConfigError(
            f"{where}: {path} is too long for a Unix socket "
            f"({len(os.fsencode(path))} bytes, at most {UNIX_PATH_MAX})"
        )
    if not path.parent.is_dir():
        raise ConfigError(f"{where}: directory does not exist: {path.parent}")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{where}: {path} exists and is not a socket (not removed)")
    path.unlink(missing_ok=True)


def _server_credentials(cfg: Any) -> Any:
    """TLS credentials of `server.tls`; with a client CA, clients must present a
    certificate signed by it (mTLS)."""
    tls = cfg.tls
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
