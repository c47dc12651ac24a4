"""tensorflow.serving.ModelService: GetModelStatus (TF Serving states) and config reload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from gateway.core.errors import InvalidInput
from gateway.core.model_view import Servable
from gateway.core.protocols import ModelRegistry
from gateway.sinks.metrics import Metrics
from gateway.transport.auth import AdminAuth
from gateway.transport.calls import unary
from gateway.transport.tfs_common import model_status

ReloadFn = Callable[[Any], Awaitable[list[str]]]


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """GetModelStatus and HandleReloadConfigRequest, as TF Serving answers them."""

    protocol = "tfs_grpc"
    """The `protocol` label of its request metrics."""

    def __init__(
        self,
        manager: ModelRegistry[Servable],
        metrics: Metrics,
        reload: ReloadFn,
        auth: AdminAuth | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._reload = reload
        self._auth = auth or AdminAuth(None)

    @unary("GetModelStatus")
    async def GetModelStatus(self, request: Any, context: Any) -> Any:
        """Status of every known version (or of `model_spec.version` or `version_label`);
        FAILED is END + error."""
        spec = request.model_spec
        if not spec.name:
            raise InvalidInput("model_spec.name: expected a model name, got an empty string")
        version = spec.version.value if spec.HasField("version") else None
        return model_status(self.manager, spec.name, version, spec.version_label or None)

    @unary("HandleReloadConfigRequest")
    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
        """Apply a TF Serving ModelServerConfig (model_config_list) as the new model list."""
        self._auth.check(context, "HandleReloadConfigRequest")
        changes = await self._reload(request.config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        response.status.error_message = "; ".join(changes)
        return response
