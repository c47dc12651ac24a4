"""tensorflow.serving.PredictionService: protobuf in, one data-plane call, protobuf out.

Classify, Regress and MultiInference answer with messages that are wire-identical to
TF Serving's responses but carry each ClassificationResult / RegressionResult as the
bytes `tfs_common` encodes with numpy (a `bytes` field with the result's field number):
a response of 175k examples costs its few MiB once, not a protobuf message (and, to
build it, a Python object) per class. gRPC serializes them like any message.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from gateway.core.errors import InvalidInput, Unimplemented
from gateway.core.inference import InferenceRequest, Method
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.serving.dataplane import DataPlane
from gateway.sinks.metrics import Metrics
from gateway.transport.calls import unary
from gateway.transport.examples import example_batch
from gateway.transport.tensors import fill_proto, to_numpy_inputs
from gateway.transport.tfs_common import (
    SIGNATURE_DEF,
    classification_result_wire,
    fill_spec,
    model_metadata,
    regression_result_wire,
    tfs_request,
)

PROTOCOL = "tfs_grpc"

_ENCODED_FILE = "gateway/internal/encoded_responses.proto"
_ENCODED_PACKAGE = "gateway.internal"


def _encoded_types() -> tuple[Any, Any]:
    """The message classes of (ClassificationResponse or RegressionResponse,
    MultiInferenceResponse) with their results as pre-encoded bytes (same field numbers
    and wire types: a client parses them as TF Serving's)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_ENCODED_FILE)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(
            name=_ENCODED_FILE,
            package=_ENCODED_PACKAGE,
            syntax="proto3",
            dependency=[model_pb2.DESCRIPTOR.name],
        )
        optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        raw = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        msg = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
        spec = ".tensorflow.serving.ModelSpec"
        response = fdp.message_type.add(name="EncodedResultResponse")
        response.field.add(name="result", number=1, type=raw, label=optional)
        response.field.add(name="model_spec", number=2, type=msg, label=optional, type_name=spec)
        result = fdp.message_type.add(name="EncodedInferenceResult")
        result.field.add(name="model_spec", number=1, type=msg, label=optional, type_name=spec)
        result.field.add(name="classification_result", number=2, type=raw, label=optional)
        result.field.add(name="regression_result", number=3, type=raw, label=optional)
        multi = fdp.message_type.add(name="EncodedMultiInferenceResponse")
        multi.field.add(
            name="results",
            number=1,
            type=msg,
            label=repeated,
            type_name=f".{_ENCODED_PACKAGE}.EncodedInferenceResult",
        )
        pool.Add(fdp)

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{_ENCODED_PACKAGE}.{name}")
        )

    return cls("EncodedResultResponse"), cls("EncodedMultiInferenceResponse")


EncodedResultResponse, EncodedMultiInferenceResponse = _encoded_types()
"""Wire-compatible with ClassificationResponse / RegressionResponse (`result` = 1,
`model_spec` = 2) and MultiInferenceResponse (`results` = 1: `model_spec` = 1,
`classification_result` = 2, `regression_result` = 3)."""


def request_of(
    spec: Any, context: Any, method: Method = Method.PREDICT, **fields: Any
) -> InferenceRequest:
    """A data-plane request from a ModelSpec (version and version_label are a oneof) and the
    call's metadata; `fields` (InferenceRequest fields: the method's inputs, ...) are set on
    top."""
    if not spec.name:
        raise InvalidInput("model_spec.name: expected a model name, got an empty string")
    choice = spec.WhichOneof("version_choice")
    values: dict[str, Any] = {
        "version": spec.version.value if choice == "version" else None,
        "label": spec.version_label if choice == "version_label" else None,
        "signature": spec.signature_name,
        "headers": {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)},
        "protocol": PROTOCOL,
    }
    values.update(fields)
    return tfs_request(spec.name, method, **values)


_TASK_METHODS = {
    Method.CLASSIFY.signature_method: Method.CLASSIFY,
    Method.REGRESS.signature_method: Method.REGRESS,
}


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict, Classify, Regress and GetModelMetadata over the `DataPlane`."""

    protocol = PROTOCOL
    """The `protocol` label of its request metrics."""

    def __init__(
        self,
        plane: DataPlane,
        metrics: Metrics,
        typed_outputs: bool = True,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.plane = plane
        self.metrics = metrics
        self.limits = limits
        """What a request may ask the decoders to allocate."""
        self._typed = typed_outputs
        """TF Serving's typed value fields (default), else numeric `tensor_content`."""

    @unary("Predict")
    async def Predict(self, request: Any, context: Any) -> Any:
        """TF Serving Predict."""
        inputs = to_numpy_inputs(request.inputs, self.limits)
        result = await self.plane.infer(
            request_of(
                request.model_spec,
                context,
                inputs=inputs,
                output_filter=tuple(request.output_filter),
            )
        )
        response = predict_pb2.PredictResponse()
        fill_spec(response.model_spec, result)
        for alias, array in result.outputs.items():
            fill_proto(response.outputs[alias], array, self._typed)
        return response

    @unary("Classify")
    async def Classify(self, request: Any, context: Any) -> Any:
        """TF Serving Classify over a classify signature taking serialized tf.Example."""
        return await self._answer(request, context, Method.CLASSIFY)

    @unary("Regress")
    async def Regress(self, request: Any, context: Any) -> Any:
        """TF Serving Regress over a regress signature taking serialized tf.Example."""
        return await self._answer(request, context, Method.REGRESS)

    async def _answer(self, request: Any, context: Any, method: Method) -> Any:
        """A ClassificationResponse / RegressionResponse, the result encoded in one
        buffer; every intermediate (examples, outputs) let go of as soon as possible."""
        examples = example_batch(request.input, self.limits)
        inference = request_of(request.model_spec, context, method, examples=examples)
        del examples
        result = await self.plane.infer(inference)
        del inference
        encode = classification_result_wire if method is Method.CLASSIFY else regression_result_wire
        wire = encode(result, 1)
        response = EncodedResultResponse()
        fill_spec(response.model_spec, result)
        del result
        response.MergeFromString(wire)
        return response

    @unary("MultiInference")
    async def MultiInference(self, request: Any, context: Any) -> Any:
        """TF Serving MultiInference: several classify/regress signatures of one model on
        the same examples, one result per task, all answered by one version (the first
        task's, routed like any request; the others follow it)."""
        tasks = list(request.tasks)
        if not tasks:
            raise InvalidInput("tasks: expected at least one inference task, got none")
        model = tasks[0].model_spec.name
        methods = []
        seen: set[str] = set()
        for i, task in enumerate(tasks):
            if task.model_spec.name != model:
                raise InvalidInput(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name "
                    f"(tasks[0] names '{model}', tasks[{i}] '{task.model_spec.name}')"
                )
            method = _TASK_METHODS.get(task.method_name)
            if method is None:
                raise Unimplemented(
                    f"Unsupported signature method_name: {task.method_name!r} (tasks[{i}]); "
                    f"MultiInference runs {' and '.join(_TASK_METHODS)} signatures"
                )
            signature = task.model_spec.signature_name or "serving_default"
            if signature in seen:
                raise InvalidInput(f"Duplicate evaluation of signature: {signature}")
            seen.add(signature)
            methods.append(method)
        examples = example_batch(request.input, self.limits)
        response = EncodedMultiInferenceResponse()
        version: int | None = None
        for task, method in zip(tasks, methods, strict=True):
            spec = task.model_spec
            fields: dict[str, Any] = {"examples": examples}
            if version is not None:  # every task on the version that answered the first
                fields.update(version=version, label=None)
            inference = request_of(spec, context, method, **fields)
            result = await self.plane.infer(inference)
            version = result.version
            out = response.results.add()
            fill_spec(out.model_spec, result)
            if method is Method.CLASSIFY:
                wire = classification_result_wire(result, 2)
            else:
                wire = regression_result_wire(result, 3)
            del result
            out.MergeFromString(wire)
            del wire
        return response

    @unary("GetModelMetadata")
    async def GetModelMetadata(self, request: Any, context: Any) -> Any:
        """TF Serving GetModelMetadata: the signature_def map of the resolved version."""
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidInput("metadata_field: expected at least one field, e.g. 'signature_def'")
        unknown = [f for f in fields if f != SIGNATURE_DEF]
        if unknown:
            raise InvalidInput(
                f"metadata_field: unsupported {', '.join(repr(u) for u in unknown)}; "
                f"supported: '{SIGNATURE_DEF}'"
            )
        return model_metadata(self.plane.resolve(request_of(request.model_spec, context)).loaded)


__all__ = [
    "EncodedMultiInferenceResponse",
    "EncodedResultResponse",
    "PredictionServicer",
    "fill_spec",
    "request_of",
]
