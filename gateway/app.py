"""The gateway: lifecycle, serving and transport wired together on one gRPC port."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.analysis.skew import FeatureSkew
from gateway.bundle.attach import attach_bundle, verify_bundle
from gateway.config import GatewayConfig, ModelConfig, VersionPolicy, load_config
from gateway.core.errors import ConfigError, InvalidInput, NotFound
from gateway.core.model_view import ModelView
from gateway.core.servable import LoadedVersion
from gateway.lifecycle.loader import LoadHook
from gateway.lifecycle.manager import VersionManager
from gateway.lifecycle.monitor import StateMonitor
from gateway.routing.controller import RolloutController
from gateway.serving.checks import SkewMonitor, build_checks, mismatch_record
from gateway.serving.dataplane import DataPlane, RolloutStatistics
from gateway.serving.lane_summary import LaneSummary
from gateway.serving.mirror import Mirror
from gateway.serving.runner import VersionRunner
from gateway.sinks.metrics import Metrics
from gateway.transport.admin import AdminServicer
from gateway.transport.auth import AdminAuth, load_token
from gateway.transport.capture import PredictionLogCapture
from gateway.transport.model_service import ModelServicer
from gateway.transport.prediction import PredictionServicer
from gateway.transport.warmup import decode_warmup_record

log = structlog.get_logger("gateway")

OVERALL = ""  # the health service name for the whole server


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
    ) -> None:
        self.config = config
        self.config_path = config_path
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
        options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
        self._server = grpc.aio.server(options=options)
        self.rollouts = RolloutController(
            self.manager, self.metrics, self._canary_skew, replica=self.replica
        )
        self.mirror = self._make_mirror()
        self.plane = DataPlane(
            self.manager,
            router=self.rollouts,
            hooks=[RolloutStatistics(self.rollouts), self.mirror],
            on_mismatches=self._on_mismatches,
            check_method_names=cfg.signature_method_name_check,
        )
        servicers: list[Any] = [
            PredictionServicer(
                self.plane, self.metrics, typed_outputs=cfg.response_encoding == "typed"
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
        ]
        for servicer in servicers:
            servicer.replica = self.replica
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            servicers[0], self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicers[1], self._server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(servicers[2], self._server)
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [
                "tensorflow.serving.PredictionService",
                "tensorflow.serving.ModelService",
                admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        address = f"{cfg.host}:{cfg.port}"
        if cfg.tls is not None:
            self.port = self._server.add_secure_port(address, _server_credentials(cfg))
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind {cfg.host}:{cfg.port}")
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve(cfg.metrics_port, cfg.host)
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
            await self._server.start()
            await self._health.set(OVERALL, health_pb2.HealthCheckResponse.SERVING)
        else:
            await self._server.start()
            await self._health.set(OVERALL, health_pb2.HealthCheckResponse.SERVING)
            await self._start_models()
        self._on_table_change()
        self._skew_task = self._loop.create_task(self._skew_loop())
        log.info(
            "gateway_started",
            port=self.port,
            metrics_port=self.metrics_port,
            models=[m.name for m in self.config.models],
        )

    async def _start_models(self) -> None:
        assert self.manager is not None and self.mirror is not None
        assert self.rollouts is not None
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

    async def wait(self) -> None:
        """Block until the server stops."""
        await self._server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight RPCs finish (up to `grace` s), unload, close."""
        grace = self.config.server.grace_seconds if grace is None else grace
        if self._skew_task is not None:
            self._skew_task.cancel()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self.rollouts is not None:
            await self.rollouts.close()
        if self.mirror is not None:
            await self.mirror.close()
        if self.manager is not None:
            await self.manager.stop()
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
        return Mirror(
            self.manager,
            self.metrics,
            divergence_log,
            capture,
            on_canary=self.rollouts.on_canary_compared if self.rollouts is not None else None,
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
        """Re-read the config file and apply its model list (server settings need a restart)."""
        if self.config_path is None:
            raise InvalidInput("the gateway was not started from a config file")
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            raise InvalidInput(f"config reload rejected: {exc}") from exc
        return await self._apply(config)

    async def reload_tfs_config(self, server_config: Any) -> list[str]:
        """Apply a TF Serving ModelServerConfig (model_config_list only)."""
        if server_config.WhichOneof("config") != "model_config_list":
            raise InvalidInput("config: only model_config_list is supported")
        models = []
        for i, mc in enumerate(server_config.model_config_list.config):
            base_path = Path(mc.base_path)
            if not base_path.is_dir():
                raise InvalidInput(
                    f"config.model_config_list.config[{i}].base_path: directory does not exist: "
                    f"{mc.base_path}"
                )
            policy = mc.model_version_policy
            kind = policy.WhichOneof("policy_choice")
            if kind == "all":
                vp = VersionPolicy(all={})
            elif kind == "specific":
                vp = VersionPolicy(specific=list(policy.specific.versions))
            else:
                vp = VersionPolicy(latest=policy.latest.num_versions or 1)
            # TF Serving's config says where and which versions; everything else a model
            # had here (batching, checks, shadows, rollout, ...) is kept.
            old = self.config.model(mc.name)
            data: dict[str, Any] = old.model_dump() if old else {}
            data.update(
                name=mc.name,
                base_path=base_path.resolve(),
                version_policy=vp.model_dump(),
                version_labels=dict(mc.version_labels),
            )
            try:
                models.append(ModelConfig.model_validate(data))
            except ValidationError as exc:
                reason = str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
                raise InvalidInput(f"config.model_config_list.config[{i}]: {reason}") from exc
        return await self._apply(self.config.model_copy(update={"models": models}))

    async def _apply(self, config: GatewayConfig) -> list[str]:
        assert self.manager is not None
        changes = await self.manager.apply_config(config)
        self.config = config
        if self.mirror is not None:
            self.mirror.configure(config)
        if self.rollouts is not None:
            await self.rollouts.configure(config)
        log.info("config_reloaded", changes=changes)
        return changes


def _resolves(view: ModelView[VersionRunner]) -> bool:
    """A model is SERVING once a request naming no version would be answered: its
    primary (a version or a label, or the newest available) resolves."""
    try:
        view.resolve()
    except NotFound:
        return False
    return True


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
