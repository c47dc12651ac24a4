"""JsonlWriter: writing, rotation, drops, I/O errors and torn-tail repair."""

from __future__ import annotations

import errno
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from gateway.sinks.jsonl import JsonlWriter, encode_json_line, jsonl_complete_size, sanitize
from tests.support import wait_until


def wait_backoff_over(w: Any) -> None:
    """Wait until the writer's retry deadline after a failure has passed, so that the
    next chunk is really tried again (not dropped for being inside the backoff)."""
    wait_until(
        lambda: time.monotonic() >= w._retry_at,
        5,
        "the writer's I/O-error backoff to expire",
        seen=lambda: f"retry in {w._retry_at - time.monotonic():.3f}s",
    )


def lines_of(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def writers() -> Iterator[list[JsonlWriter]]:
    made: list[JsonlWriter] = []
    yield made
    for w in made:
        w.close(timeout=5)


@pytest.fixture
def make(writers: list[JsonlWriter]) -> Callable[..., JsonlWriter]:
    def make(path: Path, **kw: Any) -> JsonlWriter:
        kw.setdefault("flush_interval", 0.01)
        w = JsonlWriter(path, **kw)
        writers.append(w)
        return w

    return make


def test_writes_records_as_compact_json_lines(
    tmp_path: Path, make: Callable[..., JsonlWriter]
) -> None:
    w = make(tmp_path / "sub" / "log.jsonl")
    for i in range(100):
        assert w.write({"i": i, "name": f"r{i}"})
    assert w.flush(5)
    data = (tmp_path / "sub" / "log.jsonl").read_bytes()
    assert data.splitlines()[0] == b'{"i":0,"name":"r0"}'
    assert [r["i"] for r in lines_of(tmp_path / "sub" / "log.jsonl")] == list(range(100))
    assert w.written == 100
    assert w.stats()["written"] == 100
    assert w.stats()["dropped_io"] == 0


def test_appends_to_an_existing_file(tmp_path: Path, make: Callable[..., JsonlWriter]) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"old":1}\n')
    w = make(path)
    w.write({"new": 2})
    w.close()
    assert lines_of(path) == [{"old": 1}, {"new": 2}]


def test_encodes_numpy_bytes_nan_and_odd_types() -> None:
    record = {
        "f32": np.float32(1.5),
        "i64": np.int64(7),
        "b": np.bool_(True),
        "arr": np.arange(3, dtype=np.int32),
        "raw": b"DE",
        "binary": b"\xff\x00",
        "nan": float("nan"),
        "npnan": np.float64("inf"),
        "nested": {"t": (1, 2), 3: "int key"},
        "s": {"b", "a"},
        "path": Path("/x"),
        "obj": object,
    }
    line = encode_json_line(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    out = json.loads(line)
    assert out["f32"] == 1.5 and out["i64"] == 7 and out["b"] is True
    assert out["arr"] == [0, 1, 2]
    assert out["raw"] == "DE"
    assert out["binary"].startswith("base64:")
    assert out["nan"] is None and out["npnan"] is None
    assert out["nested"] == {"t": [1, 2], "3": "int key"}
    assert out["s"] == ["a", "b"]
    assert out["path"] == "/x"
    assert isinstance(out["obj"], str)
    assert b"NaN" not in line and b"Infinity" not in line


def test_newlines_in_values_stay_on_one_line() -> None:
    line = encode_json_line({"msg": "a\nb\r\u2028c"})
    assert line.count(b"\n") == 1
    assert json.loads(line)["msg"] == "a\nb\r\u2028c"


def test_sanitize_cuts_cycles() -> None:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    d["again"] = d
    out = sanitize(d)
    assert out == {"a": 1, "self": "<cycle>", "again": "<cycle>"}
    assert json.loads(encode_json_line(d))["self"] == "<cycle>"


def test_rotation_names_counts_and_size_bound(
    tmp_path: Path, make: Callable[..., JsonlWriter]
) -> None:
    path = tmp_path / "div.jsonl"
    w = make(path, rotate_bytes=1000, keep=3)
    record = {"pad": "x" * 80}  # 91 bytes per line
    line_len = len(encode_json_line(record))
    for i in range(100):
        w.write({**record, "i": i % 10})
        if i % 7 == 0:
            assert w.flush(5), "the writer did not flush within 5 s"  # several chunks
    w.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["div.jsonl", "div.jsonl.1", "div.jsonl.2", "div.jsonl.3"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 1000
        assert all("pad" in r for r in lines_of(p))
    total = sum(len(lines_of(p)) for p in tmp_path.iterdir())
    per_file = 1000 // (line_len + 1)
    assert w.rotations >= 100 // (per_file + 1) - 1
    assert total < 100  # the oldest files were deleted
    # the newest records are in the active file, the older ones in .1
    assert w.written == 100


def test_keep_zero_keeps_no_rotated_file(tmp_path: Path, make: Callable[..., JsonlWriter]) -> None:
    path = tmp_path / "div.jsonl"
    w = make(path, rotate_bytes=200, keep=0)
    for i in range(50):
        w.write({"i": i})
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["div.jsonl"]
    assert w.rotations > 0
    assert lines_of(path)[-1] == {"i": 49}


def test_record_larger_than_rotate_bytes_is_written_alone(
    tmp_path: Path, make: Callable[..., JsonlWriter]
) -> None:
    path = tmp_path / "div.jsonl"
    w = make(path, rotate_bytes=100, keep=5)
    w.write({"small": 1})
    w.write({"big": "y" * 500})
    w.write({"small": 2})
    w.close()
    assert lines_of(path.with_name("div.jsonl.2")) == [{"small": 1}]
    assert lines_of(path.with_name("div.jsonl.1")) == [{"big": "y" * 500}]
    assert lines_of(path) == [{"small": 2}]


class _BlockedWriter(JsonlWriter):
    """A JsonlWriter whose thread blocks in encode until released."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        super().__init__(*args, **kw)

    def encode(self, item: Any) -> bytes:
        self.entered.set()
        if not self.release.wait(10):
            raise AssertionError("_BlockedWriter: the test never released the writer thread")
        return super().encode(item)


def test_queue_full_drops_without_blocking(tmp_path: Path) -> None:
    reasons: list[str] = []
    w = _BlockedWriter(
        tmp_path / "q.jsonl", queue_size=10, flush_interval=0.01, on_drop=reasons.append
    )
    try:
        assert w.write({"first": True})
        assert w.entered.wait(5)  # the writer thread now holds "first" and is stuck
        accepted = [w.write({"i": i}) for i in range(10)]
        assert all(accepted)
        start = time.perf_counter()
        results = [w.write({"i": i}) for i in range(1000)]
        elapsed = time.perf_counter() - start
        assert not any(results)
        assert elapsed < 0.5  # ~1 µs each; never waits for the stuck writer
        assert w.dropped_queue_full == 1000
        assert reasons == ["queue_full"] * 1000
        assert w.stats()["queued"] == 10
    finally:
        w.release.set()
        w.close(5)
    assert len(lines_of(tmp_path / "q.jsonl")) == 11
    assert w.written == 11


def test_write_after_close_is_dropped_and_close_is_idempotent(
    tmp_path: Path, make: Callable[..., JsonlWriter]
) -> None:
    reasons: list[str] = []
    w = make(tmp_path / "c.jsonl", on_drop=reasons.append)
    w.write({"a": 1})
    assert w.close()
    assert w.close()
    assert not w.write({"b": 2})
    assert w.dropped_closed == 1 and reasons == ["closed"]
    assert w.flush(1)
    assert lines_of(tmp_path / "c.jsonl") == [{"a": 1}]


def test_broken_on_drop_callback_is_ignored(tmp_path: Path) -> None:
    def boom(reason: str) -> None:
        raise RuntimeError(reason)

    w = JsonlWriter(tmp_path / "c.jsonl", on_drop=boom)
    w.close()
    assert w.write({"x": 1}) is False  # no exception


def _fd_is(fd: int, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:
        return False


@pytest.mark.parametrize("mode", ["short", "enospc", "eio"])
def test_io_error_truncates_back_counts_and_recovers(
    tmp_path: Path, make: Callable[..., JsonlWriter], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    path = tmp_path / "io.jsonl"
    reasons: list[str] = []
    w = make(path, on_drop=reasons.append, retry_initial=0.05, retry_max=0.1)
    for i in range(5):
        w.write({"ok": i})
    assert w.flush(5)
    good = path.read_bytes()

    real_write = os.write
    failing = threading.Event()
    failing.set()

    def fake_write(fd: int, data: Any) -> int:
        if failing.is_set() and _fd_is(fd, path):
            if mode == "short":
                return real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC if mode == "enospc" else errno.EIO, "simulated")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fake_write)
    with capture_logs() as logs:
        for i in range(20):
            w.write({"lost": i})
        assert w.flush(5)
        assert path.read_bytes() == good  # nothing of the failed chunk remains
        assert w.dropped_io == 20
        assert reasons == ["io_error"] * 20
        # more failures in the same streak: still one warning
        wait_backoff_over(w)
        w.write({"lost": 99})
        assert w.flush(5)
        assert path.read_bytes() == good
        failing.clear()
        wait_backoff_over(w)
        w.write({"ok": "again"})
        assert w.flush(5)
    warnings = [e for e in logs if e["event"] == "sink_write_failed"]
    assert len(warnings) == 1 and warnings[0]["path"] == str(path)
    assert any(e["event"] == "sink_recovered" for e in logs)
    records = lines_of(path)
    assert records[:5] == [{"ok": i} for i in range(5)]
    assert records[-1] == {"ok": "again"}
    assert all("lost" not in r for r in records)
    assert w.dropped_io == 21
    assert w.written == 6


def test_records_arriving_during_backoff_are_dropped(
    tmp_path: Path, make: Callable[..., JsonlWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.jsonl"
    w = make(path, retry_initial=30.0)
    real_write = os.write
    calls = []

    def fake_write(fd: int, data: Any) -> int:
        if _fd_is(fd, path):
            calls.append(len(data))
            raise OSError(errno.ENOSPC, "simulated")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fake_write)
    w.write({"a": 1})
    assert w.flush(5)
    for i in range(10):
        w.write({"b": i})
        assert w.flush(5)
    assert len(calls) == 1  # no retry before the backoff expires
    assert w.dropped_io == 11


@pytest.mark.parametrize("where", ["under_a_file", "directory_in_the_way"])
def test_unwritable_path_drops_and_counts(
    tmp_path: Path, make: Callable[..., JsonlWriter], where: str
) -> None:
    if where == "under_a_file":
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "sub" / "log.jsonl"
    else:
        path = tmp_path / "log.jsonl"
        path.mkdir()
    reasons: list[str] = []
    with capture_logs() as logs:
        w = make(path, on_drop=reasons.append, retry_initial=0.01, retry_max=0.02)
        for i in range(50):
            assert w.write({"i": i}) is True  # queued: the caller never sees the failure
            if i % 10 == 0:
                assert w.flush(5), "the writer did not flush within 5 s"
                wait_backoff_over(w)
        assert w.flush(5)
    assert w.dropped_io == 50 and w.written == 0
    assert reasons == ["io_error"] * 50
    assert len([e for e in logs if e["event"] == "sink_write_failed"]) == 1
    assert w.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_drops_and_counts(
    tmp_path: Path, make: Callable[..., JsonlWriter]
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        w = make(ro / "log.jsonl")
        w.write({"a": 1})
        assert w.flush(5)
        assert w.dropped_io == 1
    finally:
        ro.chmod(0o700)


def test_torn_tail_is_removed_on_open(tmp_path: Path, make: Callable[..., JsonlWriter]) -> None:
    path = tmp_path / "torn.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    with capture_logs() as logs:
        w = make(path)
        w.write({"d": 4})
        w.close()
    assert lines_of(path) == [{"a": 1}, {"b": 2}, {"d": 4}]
    assert w.tails_repaired == 1
    assert any(e["event"] == "sink_torn_tail_removed" and e["removed_bytes"] == 5 for e in logs)


def test_jsonl_complete_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    cases = {
        b"": 0,
        b"abc": 0,
        b"a\n": 2,
        b"a\nbc": 2,
        b"x" * 200_000 + b"\n" + b"y" * 100_000: 200_001,
    }
    for data, want in cases.items():
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert jsonl_complete_size(fd, len(data), block=4096) == want
        finally:
            os.close(fd)


def test_file_deleted_behind_our_back_is_recreated(
    tmp_path: Path, make: Callable[..., JsonlWriter]
) -> None:
    path = tmp_path / "gone.jsonl"
    w = make(path)
    w.write({"a": 1})
    assert w.flush(5)
    path.unlink()
    w.write({"b": 2})
    w.close()
    assert lines_of(path) == [{"b": 2}]


def test_concurrent_producers(tmp_path: Path, make: Callable[..., JsonlWriter]) -> None:
    path = tmp_path / "mt.jsonl"
    w = make(path, rotate_bytes=50_000, keep=100)

    def produce(t: int) -> None:
        for i in range(2000):
            w.write({"t": t, "i": i, "v": math.pi})

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    seen = [(r["t"], r["i"]) for p in tmp_path.iterdir() for r in lines_of(p)]
    assert len(seen) == 8000 == len(set(seen))
    assert w.written + w.dropped_queue_full == 8000


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rotate_bytes"):
        JsonlWriter(tmp_path / "x", rotate_bytes=0)
    with pytest.raises(ValueError, match="keep"):
        JsonlWriter(tmp_path / "x", keep=-1)
    with pytest.raises(ValueError, match="queue_size"):
        JsonlWriter(tmp_path / "x", queue_size=0)
