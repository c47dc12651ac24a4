"""Capture of Predict requests and responses as TF Serving ``PredictionLog`` TFRecord files.

The files are what ``tf.data.TFRecordDataset`` reads, what TF Serving (and this
gateway) accept as ``assets.extra/tf_serving_warmup_requests``, and what
``gateway replay`` sends again.

TFRecord framing of each record::

    uint64 length (little-endian)
    uint32 masked_crc32c(length bytes)
    bytes  data[length]             # a serialised tensorflow.serving.PredictionLog
    uint32 masked_crc32c(data)

    masked_crc32c(b) = (((c >> 15) | (c << 17)) + 0xA282EAD8) mod 2**32,  c = crc32c(b)

`CaptureWriter` has the guarantees of `gateway.sinks.jsonl.RecordFileWriter`:
`CaptureWriter.write` is O(1), never blocks and never raises (the protos are
serialised on the writer thread); each record is appended with one ``write``
syscall at the end of a complete record; an I/O error leaves the file as it
was; SIGKILL can at worst leave a truncated *last* record (Linux may stop a
multi-page write at a page boundary when a fatal signal arrives), which the
next writer removes when it opens the file (`tfrecord_complete_size`) and which
`read_prediction_logs` reports and skips. A file whose middle is corrupt (a bad
length CRC, never caused by this writer) is left untouched and rotated away
before anything is appended to it.

crc32c comes from ``google-crc32c`` (C, hardware-accelerated) when installed,
else from a table-driven pure-Python fallback (correct, ~100x slower).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.sinks.jsonl import MiB, RecordFileWriter

_log = structlog.get_logger("gateway.sinks")

_MASK_DELTA: Final = 0xA282EAD8
_U32: Final = 0xFFFFFFFF
_HEADER: Final = struct.Struct("<QI")
_FOOTER: Final = struct.Struct("<I")
_LEN: Final = struct.Struct("<Q")


def _make_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # CRC-32C (Castagnoli), reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE: Final = _make_table()


def crc32c_py(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of `data` (table-driven pure Python; the fallback of `crc32c`)."""
    crc = _U32
    table = _TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


try:
    import google_crc32c as _gcrc

    def crc32c(data: bytes | bytearray | memoryview) -> int:
        """CRC-32C of `data` (google-crc32c)."""
        return int(_gcrc.value(bytes(data)))

    CRC32C_IMPLEMENTATION: str = f"google-crc32c ({_gcrc.implementation})"
except ImportError:  # pragma: no cover - depends on the environment
    crc32c = crc32c_py
    CRC32C_IMPLEMENTATION = "python"


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC-32C of `data`."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def frame_record(data: bytes) -> bytes:
    """One complete TFRecord (header, `data`, footer)."""
    length = _LEN.pack(len(data))
    return b"".join(
        (length, _FOOTER.pack(masked_crc32c(length)), data, _FOOTER.pack(masked_crc32c(data)))
    )


def prediction_log_bytes(request: Any, response: Any | None) -> bytes:
    """Serialised ``PredictionLog(predict_log=PredictLog(request=..., response=...))``."""
    from tensorflow_serving.apis import prediction_log_pb2

    predict_log = prediction_log_pb2.PredictLog(request=request)
    if response is not None:
        predict_log.response.CopyFrom(response)
    data: bytes = prediction_log_pb2.PredictionLog(predict_log=predict_log).SerializeToString()
    return data


class CorruptRecordError(ValueError):
    """A TFRecord whose CRC does not match (corruption, not a truncated tail)."""

    def __init__(self, path: Path, offset: int, what: str) -> None:
        super().__init__(f"{path}: record at byte {offset}: {what} checksum mismatch")
        self.path = path
        self.offset = offset


def _scan(buf: Any, size: int) -> tuple[int, bool]:
    """(end of the last complete record, whether a bad length CRC stopped the scan)."""
    pos = 0
    while pos + _HEADER.size <= size:
        length, length_crc = _HEADER.unpack_from(buf, pos)
        if masked_crc32c(buf[pos : pos + 8]) != length_crc:
            return pos, True
        end = pos + _HEADER.size + length + _FOOTER.size
        if end > size:
            return pos, False
        pos = end
    return pos, False


def tfrecord_complete_size(fd: int, size: int) -> tuple[int, bool]:
    """For the open file `fd` of `size` bytes: (size of its prefix of complete records,
    whether the scan stopped at a corrupt header rather than at a truncated tail).

    Only lengths and length CRCs are checked (a torn write truncates, it never
    alters bytes), so the scan reads 12 bytes per record.
    """
    if size == 0:
        return 0, False
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as buf:
        return _scan(buf, size)


class CaptureWriter(RecordFileWriter[tuple[Any, Any]]):
    """Non-blocking, size-rotated writer of ``PredictionLog`` TFRecord files.

    ``rotate_mb``/``keep``/``queue_size`` as for `gateway.sinks.jsonl.JsonlWriter`
    (rotated files are ``path.1`` .. ``path.<keep>``).
    """

    def __init__(
        self,
        path: Path | str,
        rotate_mb: float = 100,
        keep: int = 5,
        queue_size: int = 10_000,
        *,
        flush_interval: float = 0.2,
        on_drop: Callable[[str], None] | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        max_chunk_bytes: int = 1 * MiB,
    ) -> None:
        super().__init__(
            path,
            rotate_bytes=max(1, int(rotate_mb * MiB)),
            keep=keep,
            queue_size=queue_size,
            flush_interval=flush_interval,
            on_drop=on_drop,
            retry_initial=retry_initial,
            retry_max=retry_max,
            max_chunk_bytes=max_chunk_bytes,
            name=f"capture-writer:{Path(path).name}",
        )

    def write(self, request: Any, response: Any | None) -> bool:
        """Queue one PredictRequest and its PredictResponse (None if it failed).

        True if queued, False if dropped (queue full or closed). O(1), never
        blocks, never raises; the messages must not be mutated afterwards.
        """
        return self._submit((request, response))

    def encode(self, item: tuple[Any, Any]) -> bytes:
        """One framed TFRecord holding the PredictionLog of `item`."""
        request, response = item
        return frame_record(prediction_log_bytes(request, response))

    def repair_tail(self, fd: int, size: int) -> int:
        """Drop a truncated last record; keep a file with a corrupt middle (and rotate it)."""
        good, corrupt = tfrecord_complete_size(fd, size)
        if corrupt:
            _log.warning(
                "capture_file_corrupt",
                path=str(self.path),
                offset=good,
                note="left as is; rotated before the next record",
            )
            self.rotate_before_next_write = True
            return size
        return good


def iter_tfrecords(
    path: Path | str,
    on_truncated: Callable[[Path, int, int], None] | None = None,
) -> Iterator[bytes]:
    """The data of each TFRecord of `path`, both CRCs checked.

    Raises `CorruptRecordError` on a CRC mismatch. A truncated last record (a
    crash mid-write) ends the iteration cleanly: ``on_truncated(path, offset,
    tail_bytes)`` is called, by default logging a ``capture_truncated_tail``
    warning.
    """
    p = Path(path)
    with p.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while True:
            header = f.read(_HEADER.size)
            if not header:
                return
            if len(header) < _HEADER.size:
                _report_truncated(p, offset, len(header), on_truncated)
                return
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise CorruptRecordError(p, offset, "length")
            if offset + _HEADER.size + length + _FOOTER.size > size:
                _report_truncated(p, offset, size - offset, on_truncated)
                return
            body = f.read(length + _FOOTER.size)
            if len(body) < length + _FOOTER.size:  # the file shrank while we read it
                _report_truncated(p, offset, len(header) + len(body), on_truncated)
                return
            data = body[:length]
            if masked_crc32c(data) != _FOOTER.unpack_from(body, length)[0]:
                raise CorruptRecordError(p, offset, "data")
            offset += _HEADER.size + length + _FOOTER.size
            yield data


def _report_truncated(
    path: Path, offset: int, nbytes: int, on_truncated: Callable[[Path, int, int], None] | None
) -> None:
    if on_truncated is not None:
        on_truncated(path, offset, nbytes)
    else:
        _log.warning("capture_truncated_tail", path=str(path), offset=offset, tail_bytes=nbytes)


def read_prediction_logs(
    path: Path | str,
    on_truncated: Callable[[Path, int, int], None] | None = None,
) -> Iterator[Any]:
    """Every ``tensorflow.serving.PredictionLog`` of a TFRecord file, CRCs validated.

    See `iter_tfrecords` for corrupt records and truncated tails.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    for data in iter_tfrecords(path, on_truncated):
        yield prediction_log_pb2.PredictionLog.FromString(data)


__all__ = [
    "CRC32C_IMPLEMENTATION",
    "CaptureWriter",
    "CorruptRecordError",
    "crc32c",
    "crc32c_py",
    "frame_record",
    "iter_tfrecords",
    "masked_crc32c",
    "prediction_log_bytes",
    "read_prediction_logs",
    "tfrecord_complete_size",
]
