"""tensorflow.serving.PredictionService: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from typing import Any

from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from gateway.errors import InvalidInput, Unimplemented
from gateway.serving.predictor import Predictor, Result, Target
from gateway.sinks.metrics import Metrics
from gateway.transport.calls import unary
from gateway.transport.examples import serialized_examples
from gateway.transport.tensors import fill_proto, to_numpy

SIGNATURE_DEF = "signature_def"


def target_of(spec: Any) -> Target:
    """Domain target from a ModelSpec (version and version_label are a oneof)."""
    if not spec.name:
        raise InvalidInput("model_spec.name: expected a model name, got an empty string")
    choice = spec.WhichOneof("version_choice")
    return Target(
        model=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
        signature=spec.signature_name,
    )


def fill_spec(spec: Any, result: Result) -> None:
    """Say in the response which version and signature answered."""
    spec.name = result.model
    spec.version.value = result.version
    spec.signature_name = result.signature


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict, Classify, Regress and GetModelMetadata over the domain `Predictor`."""

    def __init__(self, predictor: Predictor, metrics: Metrics) -> None:
        self.predictor = predictor
        self.metrics = metrics

    @unary("Predict")
    async def Predict(self, request: Any, context: Any) -> Any:
        """TF Serving Predict."""
        target = target_of(request.model_spec)
        inputs = {alias: to_numpy(alias, tensor) for alias, tensor in request.inputs.items()}
        headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        result = await self.predictor.predict(target, inputs, list(request.output_filter), headers)
        response = predict_pb2.PredictResponse()
        fill_spec(response.model_spec, result)
        for alias, array in result.outputs.items():
            fill_proto(response.outputs[alias], array)
        return response

    @unary("Classify")
    async def Classify(self, request: Any, context: Any) -> Any:
        """TF Serving Classify over a classify signature taking serialized tf.Example."""
        target = target_of(request.model_spec)
        result = await self.predictor.classify(target, serialized_examples(request.input))
        response = classification_pb2.ClassificationResponse()
        fill_spec(response.model_spec, result)
        classes = result.outputs.get("classes")
        scores = result.outputs.get("scores")
        if classes is None and scores is None:
            raise InvalidInput(f"signature '{result.signature}' has neither 'classes' nor 'scores'")
        rows = len(classes) if classes is not None else len(scores)  # type: ignore[arg-type]
        labels = classes.reshape(rows, -1).tolist() if classes is not None else None
        values = scores.reshape(rows, -1).tolist() if scores is not None else None
        width = len((values or labels)[0]) if rows else 0  # type: ignore[index]
        for i in range(rows):
            out = response.result.classifications.add()
            for j in range(width):
                c = out.classes.add()
                if labels is not None:
                    label = labels[i][j]
                    c.label = label.decode() if isinstance(label, bytes) else str(label)
                if values is not None:
                    c.score = values[i][j]
        return response

    @unary("Regress")
    async def Regress(self, request: Any, context: Any) -> Any:
        """TF Serving Regress over a regress signature taking serialized tf.Example."""
        target = target_of(request.model_spec)
        result = await self.predictor.regress(target, serialized_examples(request.input))
        response = regression_pb2.RegressionResponse()
        fill_spec(response.model_spec, result)
        values = result.outputs.get("outputs")
        if values is None:
            raise InvalidInput(f"signature '{result.signature}' has no 'outputs' output")
        for value in values.reshape(len(values), -1)[:, 0].tolist():
            response.result.regressions.add(value=float(value))
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
        target = target_of(request.model_spec)
        loaded = self.predictor.loaded(target)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.model
        response.model_spec.version.value = loaded.version
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        advertised = loaded.extensions.get("advertised_signature_defs")
        source = advertised if advertised is not None else loaded.signature_defs
        for name, sdef in source.items():
            if not name.startswith("__"):
                sigmap.signature_def[name].CopyFrom(sdef)
        response.metadata[SIGNATURE_DEF].Pack(sigmap)
        return response

    @unary("MultiInference")
    async def MultiInference(self, request: Any, context: Any) -> Any:
        """Not supported (TF Serving's multi-head inference)."""
        raise Unimplemented("MultiInference is not supported by this gateway")


__all__ = ["PredictionServicer", "fill_spec", "meta_graph_pb2", "target_of"]
