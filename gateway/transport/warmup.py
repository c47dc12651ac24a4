"""Decodes TF Serving warmup records (`assets.extra/tf_serving_warmup_requests`, one
PredictionLog per TFRecord) into data-plane requests, for the lifecycle's warmup."""

from __future__ import annotations

from tensorflow_serving.apis import prediction_log_pb2

from gateway.core.errors import InvalidInput
from gateway.core.inference import InferenceRequest, Method
from gateway.transport.examples import example_batch
from gateway.transport.tensors import to_numpy

_EXAMPLE_LOGS = {"classify_log": Method.CLASSIFY, "regress_log": Method.REGRESS}


def decode_warmup_record(raw: bytes) -> InferenceRequest:
    """One PredictionLog record as a request; InvalidInput for an unsupported log type."""
    log = prediction_log_pb2.PredictionLog.FromString(raw)
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        req = log.predict_log.request
        return InferenceRequest(
            model=req.model_spec.name,
            inputs={a: to_numpy(a, t) for a, t in req.inputs.items()},
            signature=req.model_spec.signature_name,
        )
    method = _EXAMPLE_LOGS.get(kind or "")
    if method is None:
        raise InvalidInput(f"unsupported log type {kind!r}")
    req = getattr(log, kind or "").request
    return InferenceRequest(
        model=req.model_spec.name,
        method=method,
        examples=example_batch(req.input),
        signature=req.model_spec.signature_name,
    )
