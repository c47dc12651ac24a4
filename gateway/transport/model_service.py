"""tensorflow.serving.ModelService: GetModelStatus (TF Serving states) and config reload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    status_pb2,
)

from gateway.core.errors import InvalidInput, NotFound
from gateway.core.model_view import Servable
from gateway.core.protocols import ModelRegistry
from gateway.core.states import VersionState
from gateway.sinks.metrics import Metrics
from gateway.transport.auth import AdminAuth
from gateway.transport.calls import unary

_TFS_STATE = {
    VersionState.START: get_model_status_pb2.ModelVersionStatus.START,
    VersionState.LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
    VersionState.AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    VersionState.UNLOADING: get_model_status_pb2.ModelVersionStatus.UNLOADING,
    VersionState.END: get_model_status_pb2.ModelVersionStatus.END,
    VersionState.FAILED: get_model_status_pb2.ModelVersionStatus.END,
}
UNKNOWN_ERROR = 2  # tensorflow.error.Code.UNKNOWN, what TF Serving reports for failed loads

ReloadFn = Callable[[Any], Awaitable[list[str]]]


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """GetModelStatus and HandleReloadConfigRequest, as TF Serving answers them."""

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
        """Status of every known version (or of `model_spec.version`); FAILED is END + error."""
        spec = request.model_spec
        if not spec.name:
            raise InvalidInput("model_spec.name: expected a model name, got an empty string")
        statuses = self.manager.statuses(spec.name)
        if spec.HasField("version"):
            statuses = [s for s in statuses if s.version == spec.version.value]
            if not statuses:
                raise NotFound(f"model '{spec.name}' has no version {spec.version.value}")
        elif spec.version_label:
            version = self.manager.labels(spec.name).get(spec.version_label)
            statuses = [s for s in statuses if s.version == version]
            if not statuses:
                raise NotFound(f"model '{spec.name}' has no version label '{spec.version_label}'")
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = _TFS_STATE[status.state]
            if status.state is VersionState.FAILED:
                entry.status.CopyFrom(
                    status_pb2.StatusProto(error_code=UNKNOWN_ERROR, error_message=status.error)
                )
        return response

    @unary("HandleReloadConfigRequest")
    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
        """Apply a TF Serving ModelServerConfig (model_config_list) as the new model list."""
        self._auth.check(context, "HandleReloadConfigRequest")
        changes = await self._reload(request.config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        response.status.error_message = "; ".join(changes)
        return response
