"""tensorflow.serving.PredictionService: protobuf in, one data-plane call, protobuf out."""

from __future__ import annotations

from typing import Any

from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from gateway.core.errors import InvalidInput, Unimplemented
from gateway.core.inference import InferenceRequest, Method
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.serving.dataplane import DataPlane
from gateway.sinks.metrics import Metrics
from gateway.transport.calls import unary
from gateway.transport.examples import example_batch
from gateway.transport.tensors import fill_proto, to_numpy
from gateway.transport.tfs_common import (
    SIGNATURE_DEF,
    fill_classifications,
    fill_regressions,
    fill_spec,
    model_metadata,
    tfs_request,
)

PROTOCOL = "tfs_grpc"


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
        inputs = {alias: to_numpy(alias, tensor) for alias, tensor in request.inputs.items()}
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
        examples = example_batch(request.input)
        result = await self.plane.infer(
            request_of(request.model_spec, context, Method.CLASSIFY, examples=examples)
        )
        response = classification_pb2.ClassificationResponse()
        fill_spec(response.model_spec, result)
        fill_classifications(response.result, result)
        return response

    @unary("Regress")
    async def Regress(self, request: Any, context: Any) -> Any:
        """TF Serving Regress over a regress signature taking serialized tf.Example."""
        examples = example_batch(request.input)
        result = await self.plane.infer(
            request_of(request.model_spec, context, Method.REGRESS, examples=examples)
        )
        response = regression_pb2.RegressionResponse()
        fill_spec(response.model_spec, result)
        fill_regressions(response.result, result)
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
        examples = example_batch(request.input)
        response = inference_pb2.MultiInferenceResponse()
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
                fill_classifications(out.classification_result, result)
            else:
                fill_regressions(out.regression_result, result)
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


__all__ = ["PredictionServicer", "fill_spec", "request_of"]
