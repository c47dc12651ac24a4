"""CaptureWriter: PredictionLog TFRecord files read back by TensorFlow and by our reader."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.sinks.capture import (
    CaptureWriter,
    CorruptRecordError,
    crc32c,
    crc32c_py,
    frame_record,
    iter_tfrecords,
    masked_crc32c,
    read_prediction_logs,
)
from tests.support import wait_until

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2  # noqa: E402


def request(i: int) -> Any:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.version.value = 1
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.full((1, 4), i, np.float32)))
    return req


def response(i: int) -> Any:
    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = "m"
    resp.outputs["output_0"].CopyFrom(tf.make_tensor_proto(np.array([[i, 1.0]], np.float32)))
    return resp


def tf_read(path: Path) -> list[Any]:
    return [
        prediction_log_pb2.PredictionLog.FromString(raw)
        for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]


def test_crc32c_known_values_and_fallback() -> None:
    # RFC 3720 test vector and the "123456789" check value of CRC-32C
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    for data in (b"", b"a", b"123456789", os.urandom(1000)):
        assert crc32c_py(data) == crc32c(data)


def test_frame_matches_tensorflows_writer(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    payloads = [b"", b"hello", os.urandom(5000)]
    ours.write_bytes(b"".join(frame_record(p) for p in payloads))
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for p in payloads:
            w.write(p)
    assert ours.read_bytes() == theirs.read_bytes()
    length = struct.pack("<Q", 5)
    assert frame_record(b"hello")[8:12] == struct.pack("<I", masked_crc32c(length))


def test_capture_is_readable_by_tensorflow_and_our_reader(tmp_path: Path) -> None:
    path = tmp_path / "cap" / "requests.tfrecord"
    w = CaptureWriter(path, flush_interval=0.01)
    for i in range(20):
        assert w.write(request(i), response(i) if i % 2 == 0 else None)
    assert w.close()
    logs = tf_read(path)
    assert len(logs) == 20
    assert [log.predict_log.request for log in logs] == [request(i) for i in range(20)]
    assert logs[0].predict_log.response == response(0)
    assert not logs[1].predict_log.HasField("response")
    ours = list(read_prediction_logs(path))
    assert ours == logs
    assert w.written == 20


def test_capture_rotation(tmp_path: Path) -> None:
    path = tmp_path / "c.tfrecord"
    record_size = len(frame_record(b"x" * 10))
    w = CaptureWriter(path, rotate_mb=2000 / (1024 * 1024), keep=2, flush_interval=0.01)
    for i in range(200):
        w.write(request(i), response(i))
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.tfrecord",
        "c.tfrecord.1",
        "c.tfrecord.2",
    ]
    assert w.rotations > 2 and record_size > 0
    counts = []
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 2000
        counts.append(len(tf_read(p)))
    last = list(read_prediction_logs(path))[-1]
    assert last.predict_log.request == request(199)
    assert sum(counts) < 200


def test_truncated_tail_is_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.tfrecord"
    whole = b"".join(frame_record(prediction_log_bytes_for(i)) for i in range(3))
    one = len(frame_record(prediction_log_bytes_for(0)))
    for cut in (1, 5, 12, 20, one - 1):
        path.write_bytes(whole[: 2 * one + cut])
        reports: list[tuple[Path, int, int]] = []
        logs = list(read_prediction_logs(path, on_truncated=lambda *a, r=reports: r.append(a)))
        assert len(logs) == 2
        assert reports == [(path, 2 * one, cut)]


def prediction_log_bytes_for(i: int) -> bytes:
    from gateway.sinks.capture import prediction_log_bytes

    return prediction_log_bytes(request(i), response(i))


def test_corrupt_record_raises(tmp_path: Path) -> None:
    path = tmp_path / "c.tfrecord"
    data = bytearray(b"".join(frame_record(prediction_log_bytes_for(i)) for i in range(2)))
    data[20] ^= 0xFF  # inside the first record's data
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="byte 0: data checksum"):
        list(iter_tfrecords(path))
    data = bytearray(frame_record(b"abc"))
    data[0] ^= 0x01  # the length
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="length checksum"):
        list(iter_tfrecords(path))


def test_writer_removes_a_truncated_tail_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "t.tfrecord"
    whole = frame_record(prediction_log_bytes_for(0)) + frame_record(prediction_log_bytes_for(1))
    path.write_bytes(whole[:-7])
    w = CaptureWriter(path, flush_interval=0.01)
    w.write(request(2), response(2))
    w.close()
    logs = tf_read(path)  # TensorFlow would fail on a truncated record in the middle
    assert [log.predict_log.request for log in logs] == [request(0), request(2)]
    assert w.tails_repaired == 1


def test_writer_rotates_a_corrupt_file_away(tmp_path: Path) -> None:
    path = tmp_path / "c.tfrecord"
    bad = bytearray(frame_record(b"abc") * 2)
    bad[len(bad) // 2] ^= 0xFF  # second record's length
    path.write_bytes(bytes(bad))
    w = CaptureWriter(path, flush_interval=0.01)
    w.write(request(0), None)
    w.close()
    assert path.with_name("c.tfrecord.1").read_bytes() == bytes(bad)  # left as it was
    assert [log.predict_log.request for log in tf_read(path)] == [request(0)]


def test_io_error_leaves_complete_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "io.tfrecord"
    w = CaptureWriter(path, flush_interval=0.01, retry_initial=0.01)
    w.write(request(0), response(0))
    assert w.flush(5)
    real_write = os.write

    def short(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") == str(path):
            real_write(fd, bytes(data)[:10])
            raise OSError(errno.ENOSPC, "simulated")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short)
    w.write(request(1), response(1))
    assert w.flush(5)
    monkeypatch.setattr(os, "write", real_write)
    import time

    wait_until(
        lambda: time.monotonic() >= w._retry_at,
        5,
        "the writer's I/O-error backoff to expire",
        seen=lambda: f"retry in {w._retry_at - time.monotonic():.3f}s",
    )
    w.write(request(2), response(2))
    w.close()
    assert [log.predict_log.request for log in tf_read(path)] == [request(0), request(2)]
    assert w.dropped_io == 1


def test_queue_full_is_counted(tmp_path: Path) -> None:
    drops: list[str] = []
    w = CaptureWriter(tmp_path / "q", queue_size=2, flush_interval=60, on_drop=drops.append)
    try:
        req = request(0)
        results = [w.write(req, None) for i in range(1000)]
        assert results[0] is True
        assert results.count(False) == w.dropped_queue_full > 0
        assert drops == ["queue_full"] * w.dropped_queue_full
    finally:
        w.close()
