"""Captured requests as TF Serving PredictionLogs (the capture sink of the mirror)."""

from __future__ import annotations

from tensorflow_serving.apis import predict_pb2

from gateway.core.servable import Arrays
from gateway.sinks.capture import CaptureWriter
from gateway.transport.tensors import fill_proto


class PredictionLogCapture:
    """A `CaptureSink`: Predict requests and answers as PredictRequest/PredictResponse
    protos, written by a `CaptureWriter` (so a capture is a valid warmup file)."""

    def __init__(self, writer: CaptureWriter) -> None:
        self.writer = writer

    def capture(
        self, model: str, signature: str, version: int, inputs: Arrays, outputs: Arrays
    ) -> bool:
        """Queue one request and its answer; False when the writer dropped it."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            fill_proto(request.inputs[name], value)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model
        response.model_spec.version.value = version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            fill_proto(response.outputs[name], value)
        return self.writer.write(request, response)

    @property
    def written(self) -> int:
        """Records written to the file so far (the writer's counter)."""
        return self.writer.written

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued is written (False on timeout)."""
        return self.writer.flush(timeout)

    def close(self) -> None:
        """Flush and close the file."""
        self.writer.close()
