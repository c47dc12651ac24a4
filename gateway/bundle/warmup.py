"""TF Serving's warmup file: `assets.extra/tf_serving_warmup_requests`, one PredictionLog
per TFRecord, replayed by the lifecycle before a version is made available."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.lifecycle.loader import WARMUP_FILE


def write_warmup(version_dir: Path, requests: Iterable[Any]) -> Path:
    """Write PredictRequests as TF Serving's `assets.extra/tf_serving_warmup_requests`."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    out = version_dir / WARMUP_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(out)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return out
