"""Crash-safe, non-blocking, size-rotated append-only record files (JSON lines).

`RecordFileWriter` is the machinery shared by `JsonlWriter` (this module) and
`gateway.sinks.capture.CaptureWriter` (TFRecord): the request path hands an
object to `write`, one daemon thread encodes it and appends it to the file.

Contract
--------
Caller side (`write`)
    O(1), never blocks on I/O or on the writer thread, never raises. The object
    is appended to a bounded in-memory queue; when ``queue_size`` objects are
    already waiting it is dropped (``dropped_queue_full``, ``on_drop("queue_full")``)
    and `write` returns False. Ownership passes to the writer: the caller must not
    mutate the object afterwards (it is encoded later, on the writer thread). The
    bound is exact for one producer thread; concurrent producers may overshoot it
    by at most one object each.

Writer thread
    Drains the queue, encodes objects (`encode`, on the writer thread only) and
    appends them in *chunks*: the encoded records are joined in memory and written
    with **one** ``os.write`` on an ``O_APPEND`` descriptor, so a chunk starts
    exactly at the end of the previous complete record. A record is written at
    most ``flush_interval`` seconds after `write` (sooner under load).

I/O errors
    A short write or an ``OSError`` (ENOSPC, EIO, EDQUOT, ...) truncates the file
    back to its size before the chunk (``os.ftruncate``), so a failed chunk leaves
    nothing behind; its records are counted in ``dropped_io`` and reported with
    ``on_drop("io_error")`` (once per record). The file is closed and reopened
    after a backoff (``retry_initial`` doubling up to ``retry_max`` seconds);
    records arriving meanwhile are dropped the same way. An unusable path (a
    missing parent that cannot be created, permission denied, a directory or
    another non-regular file in the way) is handled identically. One warning is
    logged per failure streak (``gateway.sinks`` logger, event
    ``sink_write_failed``) and one ``sink_recovered`` when writing works again.

Crash safety (the process killed at any moment, SIGKILL included)
    Each chunk is one ``write`` call that starts at the end of a complete record,
    and nothing else ever writes to the file, so every byte up to the last
    record boundary is whole: rotated files always are, and so is every record
    of the active file but possibly its last one. That last record can be
    incomplete in one case only, which Linux allows: a fatal signal (SIGKILL, OOM
    kill) arriving *while* a multi-page ``write`` is copying data makes the kernel
    stop at a page boundary and keep what was copied (for JSON lines: final bytes
    without a terminating newline; never observed in 60 random kills of a writer
    writing flat out, but possible). The writer opens its file when it starts and
    after every I/O error, and each time `repair_tail` first cuts such a torn tail
    (``tails_repaired``, warning ``sink_torn_tail_removed``), so records are never
    glued to a fragment; until then readers must treat an unterminated last line
    (a truncated last TFRecord) as absent. A failed ``ftruncate`` after an I/O
    error is repaired the same way. Durability against an OS crash or power cut
    is only promised for what was written before `close` (which fsyncs).

Rotation
    Before a chunk is appended that would take the file past ``rotate_bytes``,
    ``path.<keep>`` is dropped, ``path.N`` is renamed ``path.N+1`` and ``path``
    ``path.1``, and a new ``path`` is opened; ``keep`` rotated files are kept
    (``keep=0``: none, the full file is deleted). Chunks are cut so that files
    stay within ``rotate_bytes``; only a single record larger than that is written
    alone to a fresh file. Rotation happens on the writer thread; a failed rename
    is an I/O error as above (the size bound is never exceeded).

One writer process per path: two processes appending to one path would keep
records whole (``O_APPEND``) but would rotate each other's files.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import datetime as _dt
import enum
import errno
import json
import math
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any, Final, Generic, Self, TypeVar

import numpy as np
import structlog

MiB: Final = 1024 * 1024
T = TypeVar("T")

_log = structlog.get_logger("gateway.sinks")


class _Marker:
    """Queue item asking the writer thread to write everything before it (and maybe stop)."""

    __slots__ = ("done", "stop")

    def __init__(self, stop: bool) -> None:
        self.stop = stop
        self.done = threading.Event()


class RecordFileWriter(Generic[T]):
    """A queue-fed, size-rotated append-only file (see the module doc for guarantees).

    Subclasses implement `encode` (object -> bytes of one complete record, called
    on the writer thread) and may override `repair_tail`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        rotate_bytes: int = 100 * MiB,
        keep: int = 10,
        queue_size: int = 100_000,
        flush_interval: float = 0.2,
        on_drop: Callable[[str], None] | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        max_chunk_bytes: int = 1 * MiB,
        name: str = "record-writer",
    ) -> None:
        if rotate_bytes < 1:
            raise ValueError(f"rotate_bytes: expected >= 1, got {rotate_bytes}")
        if keep < 0:
            raise ValueError(f"keep: expected >= 0, got {keep}")
        if queue_size < 1:
            raise ValueError(f"queue_size: expected >= 1, got {queue_size}")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval: expected > 0, got {flush_interval}")
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.queue_size = queue_size
        self.flush_interval = flush_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_chunk_bytes = max_chunk_bytes
        self._on_drop = on_drop
        self._name = name

        # Counters. `written`, `dropped_io`, `dropped_invalid`, `rotations`,
        # `bytes_written` and `tails_repaired` are only updated by the writer
        # thread; the others under `_lock` (rare paths only).
        self.written = 0
        self.bytes_written = 0
        self.dropped_queue_full = 0
        self.dropped_io = 0
        self.dropped_invalid = 0
        self.dropped_closed = 0
        self.rotations = 0
        self.tails_repaired = 0

        self._q: deque[T | _Marker] = deque()
        self._wake = threading.Event()
        self._wake_at = max(1, min(queue_size // 2, 4096))
        self._lock = threading.Lock()
        self._closed = False
        self._fd = -1
        self._size = 0
        self._retry_at = 0.0
        self._backoff = retry_initial
        self.rotate_before_next_write = False  # set by repair_tail for a file not to append to
        self._failing: str | None = None  # reason of the current failure streak
        self._streak_dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self._atexit_close)

    # ------------------------------------------------------------------ caller side

    def _submit(self, item: T) -> bool:
        """Queue `item` for the writer thread; O(1), never blocks, never raises."""
        if self._closed:
            self._reject("closed")
            return False
        q = self._q
        n = len(q)
        if n >= self.queue_size:
            self._reject("queue_full")
            return False
        q.append(item)
        if n + 1 == self._wake_at:
            self._wake.set()
        return True

    def _reject(self, reason: str) -> None:
        with self._lock:
            if reason == "closed":
                self.dropped_closed += 1
            else:
                self.dropped_queue_full += 1
        self._notify_drop(reason, 1)

    def _notify_drop(self, reason: str, count: int) -> None:
        callback = self._on_drop
        if callback is None:
            return
        for _ in range(count):
            try:
                callback(reason)
            except Exception:  # a broken callback must not break the sink
                return

    # ------------------------------------------------------------------ subclass hooks

    def encode(self, item: T) -> bytes:
        """Bytes of one complete record for `item` (writer thread only)."""
        raise NotImplementedError

    def repair_tail(self, fd: int, size: int) -> int:
        """Remove an incomplete last record from the open file; return the new size.

        Called on the writer thread each time the file is opened, before
        anything is appended. The default keeps the file as it is.
        """
        return size

    # ------------------------------------------------------------------ control

    @property
    def queued(self) -> int:
        """Objects waiting in the queue."""
        return len(self._q)

    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (plus ``queued``)."""
        return {
            "written": self.written,
            "bytes_written": self.bytes_written,
            "dropped_queue_full": self.dropped_queue_full,
            "dropped_io": self.dropped_io,
            "dropped_invalid": self.dropped_invalid,
            "dropped_closed": self.dropped_closed,
            "rotations": self.rotations,
            "tails_repaired": self.tails_repaired,
            "queued": len(self._q),
        }

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything written before this call reached the file (or was dropped).

        "Reached the file" means handed to the OS with ``write`` (no fsync).
        Returns False on timeout or when the writer is closed with records left.
        """
        if self._closed or not self._thread.is_alive():
            self._thread.join(timeout)
            return not self._thread.is_alive() and not self._q
        marker = _Marker(stop=False)
        self._q.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting records, write what is queued, fsync and close the file.

        Idempotent. Returns False if the queue could not be drained within
        `timeout` (the daemon thread then keeps draining in the background).
        """
        with self._lock:
            first = not self._closed
            self._closed = True
        if first:
            with contextlib.suppress(Exception):
                atexit.unregister(self._atexit_close)
            self._q.append(_Marker(stop=True))
            self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _atexit_close(self) -> None:
        self.close(timeout=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        # Open at once: a bad path is reported at start-up, a torn tail repaired.
        try:
            self._open()
        except Exception as exc:
            self._fail(exc, 0)
        chunk: list[bytes] = []
        chunk_bytes = 0
        while True:
            try:
                item = self._q.popleft()
            except IndexError:
                if chunk:
                    self._write_chunk(chunk, chunk_bytes)
                    chunk, chunk_bytes = [], 0
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                continue
            if isinstance(item, _Marker):
                if chunk:
                    self._write_chunk(chunk, chunk_bytes)
                    chunk, chunk_bytes = [], 0
                if item.stop:
                    self._finish()
                    item.done.set()
                    return
                item.done.set()
                continue
            try:
                data = self.encode(item)
            except Exception as exc:
                self.dropped_invalid += 1
                self._notify_drop("invalid", 1)
                _log.warning(
                    "sink_record_invalid", path=str(self.path), error=f"{type(exc).__name__}: {exc}"
                )
                continue
            size = len(data)
            if chunk and (
                chunk_bytes + size > self.max_chunk_bytes
                or self._size + chunk_bytes + size > self.rotate_bytes
            ):
                self._write_chunk(chunk, chunk_bytes)
                chunk, chunk_bytes = [], 0
            chunk.append(data)
            chunk_bytes += size

    def _write_chunk(self, chunk: list[bytes], nbytes: int) -> None:
        """Append `chunk` with one write syscall, or drop it leaving the file as it was."""
        n = len(chunk)
        try:
            self._write_bytes(b"".join(chunk) if n > 1 else chunk[0], n)
        except Exception as exc:  # never let the thread die
            self._fail(exc, n)

    def _write_bytes(self, data: bytes, n: int) -> None:
        if self._fd < 0 and time.monotonic() < self._retry_at:
            self._drop_io(n)
            return
        size = -1
        try:
            if self._fd < 0:
                self._open()
            st = os.fstat(self._fd)
            if st.st_nlink == 0:  # deleted or rotated away behind our back
                self._close_fd()
                self._open()
                st = os.fstat(self._fd)
            size = st.st_size
            if size > 0 and (size + len(data) > self.rotate_bytes or self.rotate_before_next_write):
                size = -1
                self._rotate()
                self.rotate_before_next_write = False
                size = self._size
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            if size >= 0:
                self._truncate_back(size)
            self._fail(exc, n)
            return
        self._size = size + written
        self.written += n
        self.bytes_written += written
        if self._failing is not None:
            _log.info(
                "sink_recovered",
                path=str(self.path),
                dropped_during_failure=self._streak_dropped,
            )
            self._failing = None
            self._streak_dropped = 0
        self._backoff = self.retry_initial

    def _truncate_back(self, size: int) -> None:
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            # Left for repair_tail on the next open.
            self._close_fd()

    def _drop_io(self, n: int) -> None:
        self.dropped_io += n
        self._streak_dropped += n
        self._notify_drop("io_error", n)

    def _fail(self, exc: BaseException, n: int) -> None:
        self._close_fd()
        self._drop_io(n)
        self._retry_at = time.monotonic() + self._backoff
        retry_after = self._backoff
        self._backoff = min(self._backoff * 2, self.retry_max)
        if self._failing is None:
            self._failing = f"{type(exc).__name__}: {exc}"
            _log.warning(
                "sink_write_failed",
                path=str(self.path),
                error=self._failing,
                retry_after_seconds=retry_after,
                note="records are dropped and counted until writing works again",
            )

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o644)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, f"not a regular file: {self.path}")
            new_size = self.repair_tail(fd, st.st_size)
            if new_size != st.st_size:
                os.ftruncate(fd, new_size)
                self.tails_repaired += 1
                _log.warning(
                    "sink_torn_tail_removed",
                    path=str(self.path),
                    removed_bytes=st.st_size - new_size,
                )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = new_size

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
            self._size = 0

    def rotated_path(self, index: int) -> Path:
        """``path.<index>`` (index >= 1)."""
        return self.path.with_name(f"{self.path.name}.{index}")

    def _rotate(self) -> None:
        self._close_fd()
        if self.keep == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.rotated_path(i), self.rotated_path(i + 1))
            os.replace(self.path, self.rotated_path(1))
        self.rotations += 1
        self._open()

    def _finish(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            self._close_fd()


# ---------------------------------------------------------------------- JSON lines


def _json_default(obj: Any) -> Any:
    """JSON form of the non-JSON types records carry (numpy, bytes, dates, enums...)."""
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, set | frozenset):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, tuple | list):
        return list(obj)
    return str(obj)


_MAX_DEPTH: Final = 64


def sanitize(obj: Any, _path: frozenset[int] = frozenset()) -> Any:
    """`obj` as plain JSON data: non-finite floats -> None, non-str keys -> str, cycles cut.

    Slow path of `encode_json_line`, used only when the fast encoder refuses a
    record. A container met again inside itself becomes ``"<cycle>"``; nesting
    deeper than 64 becomes ``"<max depth>"``.
    """
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping | list | tuple):
        if id(obj) in _path:
            return "<cycle>"
        if len(_path) >= _MAX_DEPTH:
            return "<max depth>"
        inner = _path | {id(obj)}
        if isinstance(obj, Mapping):
            return {str(k): sanitize(v, inner) for k, v in obj.items()}
        return [sanitize(v, inner) for v in obj]
    converted = _json_default(obj)
    if isinstance(converted, str):
        return converted
    return sanitize(converted, _path)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)


def encode_json_line(record: Mapping[str, Any]) -> bytes:
    """One compact JSON line (with ``\\n``), ASCII only, no NaN/Infinity (they become null).

    numpy scalars and arrays become numbers and lists, bytes UTF-8 text (or
    ``base64:...`` when not UTF-8), enums their value, dataclasses objects,
    anything else ``str(obj)``. Raises only for records that cannot be made
    JSON at all (never in practice: cycles and bad keys are sanitised).
    """
    try:
        text = _ENCODER.encode(record)
    except (ValueError, TypeError, RecursionError):
        text = _ENCODER.encode(sanitize(record))
    return (text + "\n").encode("ascii")


class JsonlWriter(RecordFileWriter[Mapping[str, Any]]):
    """Non-blocking JSON-lines file writer; every complete line is one valid JSON object.

    See the module doc for the crash, I/O-error, rotation and drop guarantees.
    """

    def __init__(
        self,
        path: Path | str,
        rotate_bytes: int = 100 * MiB,
        keep: int = 10,
        queue_size: int = 100_000,
        flush_interval: float = 0.2,
        on_drop: Callable[[str], None] | None = None,
        *,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        max_chunk_bytes: int = 1 * MiB,
    ) -> None:
        super().__init__(
            path,
            rotate_bytes=rotate_bytes,
            keep=keep,
            queue_size=queue_size,
            flush_interval=flush_interval,
            on_drop=on_drop,
            retry_initial=retry_initial,
            retry_max=retry_max,
            max_chunk_bytes=max_chunk_bytes,
            name=f"jsonl-writer:{Path(path).name}",
        )

    def write(self, record: Mapping[str, Any]) -> bool:
        """Queue one record; True if queued, False if dropped (queue full or closed).

        O(1), never blocks, never raises; the record must not be mutated afterwards.
        """
        return self._submit(record)

    def encode(self, item: Mapping[str, Any]) -> bytes:
        """See `encode_json_line`."""
        return encode_json_line(item)

    def repair_tail(self, fd: int, size: int) -> int:
        """Cut everything after the last newline (a line torn by a crash mid-write)."""
        return jsonl_complete_size(fd, size)


def jsonl_complete_size(fd: int, size: int, block: int = 65536) -> int:
    """Size of the prefix of the file `fd` (of `size` bytes) that ends with a newline."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - block)
        data = os.pread(fd, end - start, start)
        pos = data.rfind(b"\n")
        if pos >= 0:
            return start + pos + 1
        end = start
    return 0


__all__ = [
    "JsonlWriter",
    "MiB",
    "RecordFileWriter",
    "encode_json_line",
    "jsonl_complete_size",
    "sanitize",
]
