"""inference.GRPCInferenceService, the Open Inference Protocol (KServe v2) over gRPC:
protobuf in, one data-plane call, protobuf out (what Triton's and KServe's clients speak).

ModelInfer becomes an `InferenceRequest(protocol="oip_grpc")` on the same data plane as
TF Serving's Predict: routing, feature checks, batching (v2 and Predict requests merge
into the same model calls), shadows, canary comparison and the divergence log apply
unchanged. Extensions of the protocol: `model_version` may also be a version label; the
request parameter `signature_name` (string) picks a signature other than
`serving_default`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from gateway import __version__
from gateway._proto.inference import grpc_service_pb2 as pb
from gateway._proto.inference import grpc_service_pb2_grpc as pb_grpc
from gateway.core.errors import InvalidInput, NotFound, Unimplemented
from gateway.core.inference import InferenceRequest
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.core.model_view import ModelView, VersionTable
from gateway.core.servable import Signature
from gateway.serving.dataplane import DataPlane
from gateway.serving.runner import VersionRunner
from gateway.sinks.metrics import Metrics
from gateway.transport.calls import current_request_id, unary
from gateway.transport.oip_tensors import (
    bf16_refusal,
    datatype_of,
    decode_inputs,
    fill_output,
    needs_raw,
    shape_of,
)

PROTOCOL = "oip_grpc"
SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE = SERVICE_DESCRIPTOR.full_name
"""`inference.GRPCInferenceService`."""
SERVER_NAME = "tf-gateway"
PLATFORM = "tensorflow_savedmodel"
SIGNATURE_PARAMETER = "signature_name"
BINARY_OUTPUT = "binary_data_output"
"""Request parameter (bool): answer in raw_output_contents (Triton's name)."""
BINARY_DATA = "binary_data"
"""Requested-output parameter (bool): the same, asked per output."""
_UNSUPPORTED_OUTPUT_PARAMETERS = ("classification", "shared_memory_region")


def _infer_model(message: Any) -> tuple[str, str]:
    return message.model_name, message.model_version


def _named_model(message: Any) -> tuple[str, str]:
    """ModelReady/ModelMetadata requests name the model (their responses: none, or no
    single version, so the request's labels stay)."""
    if isinstance(message, pb.ModelMetadataResponse | pb.ModelReadyResponse):
        return "", ""
    return message.name, message.version


def _own_id(message: Any) -> str:
    return str(message.id)


def _version_choice(model_version: str) -> tuple[int | None, str | None]:
    """`model_version` as (version, label): empty = neither (the primary or the rollout's
    split), digits = a version number, anything else = a version label."""
    text = model_version.strip()
    if not text:
        return None, None
    if text.isdigit():
        return int(text), None
    return None, text


def _flag(parameters: Any, key: str) -> bool:
    return key in parameters and bool(parameters[key].bool_param)


def _headers(context: Any) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _ready(view: ModelView[VersionRunner], version: int | None, label: str | None) -> bool:
    try:
        view.resolve(version, label)
    except NotFound:
        return False
    return True


def _tensors(out: Any, sig: Signature, inputs: bool) -> None:
    specs = sig.inputs if inputs else sig.outputs
    target = out.inputs if inputs else out.outputs
    for name, spec in specs.items():
        target.add(name=name, datatype=datatype_of(spec.dtype), shape=shape_of(spec))


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer
    over the `DataPlane` and the serving table."""

    protocol = PROTOCOL
    """The `protocol` label of its request metrics."""

    def __init__(
        self,
        plane: DataPlane,
        table: VersionTable[VersionRunner],
        metrics: Metrics,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.plane = plane
        self.table = table
        self.metrics = metrics
        self.limits = limits
        """What a request may ask the decoders to allocate."""

    @unary("ServerLive")
    async def ServerLive(self, request: Any, context: Any) -> Any:
        """Live whenever the server answers."""
        return pb.ServerLiveResponse(live=True)

    @unary("ServerReady")
    async def ServerReady(self, request: Any, context: Any) -> Any:
        """Ready when every configured model's primary resolves to an available version."""
        views = self.table.table.values()
        return pb.ServerReadyResponse(ready=all(_ready(v, None, None) for v in views))

    @unary("ModelReady", model_of=_named_model)
    async def ModelReady(self, request: Any, context: Any) -> Any:
        """Whether the version (or label, or the primary) would answer; NOT_FOUND for a
        model that is not configured."""
        view = self._view(request.name)
        return pb.ModelReadyResponse(ready=_ready(view, *_version_choice(request.version)))

    @unary("ServerMetadata")
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        """Name and version; none of the protocol's optional extensions."""
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__)

    @unary("ModelMetadata", model_of=_named_model)
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        """Available versions, and the serving_default signature's inputs and outputs of
        the resolved version (for a version with a bundle: the raw-feature signature
        requests are checked against)."""
        view = self._view(request.name)
        runner = view.resolve(*_version_choice(request.version))
        sig = runner.loaded.signature("")
        response = pb.ModelMetadataResponse(
            name=view.name, versions=[str(v) for v in sorted(view.versions)], platform=PLATFORM
        )
        _tensors(response, sig, inputs=True)
        _tensors(response, sig, inputs=False)
        return response

    @unary("ModelInfer", model_of=_infer_model, id_of=_own_id)
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """Decode, run on the data plane, encode: typed contents by default, raw when the
        request came raw or asks for it (`binary_data_output`, per-output `binary_data`)."""
        if not request.model_name:
            raise InvalidInput("model_name: expected a model name, got an empty string")
        version, label = _version_choice(request.model_version)
        signature = ""
        if SIGNATURE_PARAMETER in request.parameters:
            signature = request.parameters[SIGNATURE_PARAMETER].string_param
        requested = tuple(o.name for o in request.outputs)
        for output in request.outputs:
            for key in _UNSUPPORTED_OUTPUT_PARAMETERS:
                if key in output.parameters:
                    raise Unimplemented(
                        f"output '{output.name}': parameter '{key}' is not supported"
                    )
        inference = InferenceRequest(
            model=request.model_name,
            version=version,
            label=label,
            signature=signature,
            output_filter=requested,
            headers=_headers(context),
            request_id=current_request_id(),
            protocol=PROTOCOL,
        )
        self._refuse_bf16(inference, request.inputs)
        inputs = decode_inputs(request.inputs, request.raw_input_contents, self.limits)
        result = await self.plane.infer(replace(inference, inputs=inputs))
        raw = (
            bool(request.raw_input_contents)
            or _flag(request.parameters, BINARY_OUTPUT)
            or any(_flag(o.parameters, BINARY_DATA) for o in request.outputs)
            or needs_raw(result.outputs)
        )
        response = pb.ModelInferResponse(
            model_name=result.model, model_version=str(result.version), id=request.id
        )
        for alias, array in result.outputs.items():
            content = fill_output(response.outputs.add(), alias, array, raw)
            if content is not None:
                response.raw_output_contents.append(content)
        return response

    def _view(self, name: str) -> ModelView[VersionRunner]:
        if not name:
            raise InvalidInput("name: expected a model name, got an empty string")
        return self.table.view(name)

    def _refuse_bf16(self, inference: InferenceRequest, inputs: Any) -> None:
        """BF16 inputs are refused, naming what the answering signature takes instead."""
        names = [t.name for t in inputs if t.datatype == "BF16"]
        if not names:
            return
        sig = self.plane.resolve(inference).loaded.signature(inference.signature)
        raise bf16_refusal(names[0], sig.inputs.get(names[0]))


class ReflectionPool:
    """Descriptor look-ups for server reflection: the v2 protocol's own descriptor pool
    first (see scripts/genproto.py for why it has one), then protobuf's default pool."""

    def __init__(self, *pools: Any) -> None:
        self._pools = pools or (pb.POOL, _default_pool())

    def _first(self, method: str, *args: Any) -> Any:
        *others, last = self._pools
        for pool in others:
            try:
                return getattr(pool, method)(*args)
            except (KeyError, TypeError):
                continue
        return getattr(last, method)(*args)

    def FindFileByName(self, name: str) -> Any:  # DescriptorPool's method names
        """The file descriptor of `name`."""
        return self._first("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        """The file descriptor defining `symbol`."""
        return self._first("FindFileContainingSymbol", symbol)

    def FindMessageTypeByName(self, name: str) -> Any:
        """The message descriptor of `name`."""
        return self._first("FindMessageTypeByName", name)

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:
        """An extension of `message` by number."""
        return self._first("FindExtensionByNumber", message, number)

    def FindAllExtensions(self, message: Any) -> Iterator[Any]:
        """Every extension of `message`."""
        extensions: Iterator[Any] = self._first("FindAllExtensions", message)
        return extensions


def _default_pool() -> Any:
    from google.protobuf import descriptor_pool

    return descriptor_pool.Default()


__all__ = ["PROTOCOL", "SERVICE", "SERVICE_DESCRIPTOR", "OipServicer", "ReflectionPool"]
