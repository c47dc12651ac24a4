"""Mirrored model calls in a separate, idle-priority process (`mirroring.executor:
process`).

The shadow, noise and canary-comparison lanes of a gateway process send their group
calls (one call per group of mirrored requests, already merged into batches) to one
child process, `python -m gateway.shadow_worker`, which loads the versions it is asked
for with the same loader and bundle hook as the gateway and runs them at `SCHED_IDLE`
(fallback: nice 19): the kernel gives it only the CPU the primary leaves idle, so
mirroring costs the primary (almost) nothing below saturation, and it has a GIL of its
own.

Wire: a Unix socket pair; each frame is a pickle (protocol 5) of a small tuple whose
numpy arrays travel as out-of-band buffers (one `send_bytes` each, no copy into the
pickle). Frames are per group call, not per request. A reader thread resolves the
waiting futures on the event loop; a single sender thread keeps the loop from blocking
on a full socket.

Faults: when the child dies every call in flight fails UNAVAILABLE (the lanes count
them as errors and their breakers pause them), it is restarted with a doubling backoff,
and the primary is never involved. A call that times out is forgotten; its late answer
is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from gateway.core import errors
from gateway.core.errors import ErrorKind, GatewayError, Unavailable
from gateway.core.servable import Arrays

log = structlog.get_logger("gateway.shadow")

_KINDS: dict[str, type[GatewayError]] = {
    cls.kind.value: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, GatewayError) and cls is not GatewayError
}


def send_frame(conn: Connection, message: Any) -> None:
    """Write `message` as one frame: a header with the buffer count, then each
    out-of-band buffer (numpy arrays are not copied into the pickle)."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    conn.send_bytes(struct.pack("<I", len(buffers)) + head)
    for buffer in buffers:
        conn.send_bytes(buffer.raw())


def recv_frame(conn: Connection) -> Any:
    """Read one frame written by `send_frame` (EOFError when the peer is gone)."""
    data = conn.recv_bytes()
    (count,) = struct.unpack_from("<I", data)
    buffers = [conn.recv_bytes() for _ in range(count)]
    return pickle.loads(memoryview(data)[4:], buffers=buffers)


def error_frame(call: int, exc: BaseException) -> tuple[Any, ...]:
    """The answer frame of a failed call: our error kind and message."""
    if isinstance(exc, GatewayError):
        return ("err", call, exc.kind.value, exc.message)
    return ("err", call, ErrorKind.INTERNAL.value, f"{type(exc).__name__}: {exc}"[:300])


class ShadowProcess:
    """The gateway's side of the mirror process (see the module docstring)."""

    def __init__(
        self,
        hooks: Sequence[str] = ("gateway.bundle.attach:attach_bundle",),
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._hooks = tuple(hooks)
        self._max_backoff = max_backoff_seconds
        self._backoff = 0.5
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[Arrays]] = {}
        self._ids = itertools.count()
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="shadow-send")
        self._ready = asyncio.Event()
        self._closing = False
        self._restart: asyncio.Task[None] | None = None
        self._retain: frozenset[tuple[str, int, str]] = frozenset()
        self.restarts = 0
        """How often the child was restarted after it died."""
        self.loaded: set[tuple[str, int]] = set()
        """(model, version) the running child has loaded."""
        self._changed = asyncio.Condition()
        self.policy = ""
        """The scheduling policy the child runs at ("idle" or "nice19"), once started."""

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    async def start(self) -> None:
        """Start the child (call on the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._spawn()

    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.shadow_worker", str(child.fileno()), *self._hooks],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
        child.close()
        self._conn = Connection(parent.detach())
        self._ready.clear()
        threading.Thread(
            target=self._read, args=(self._conn, self._proc), name="shadow-read", daemon=True
        ).start()
        if self._retain:
            self._post(("retain", sorted(self._retain)))

    def _read(self, conn: Connection, proc: subprocess.Popen[bytes]) -> None:
        """The reader thread: answers to futures on the loop, until the child is gone."""
        assert self._loop is not None
        loop = self._loop
        try:
            while True:
                frame = recv_frame(conn)
                loop.call_soon_threadsafe(self._answer, frame)
        except (EOFError, OSError):
            pass
        code = proc.wait()
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._died, proc, code)

    def _answer(self, frame: Any) -> None:
        kind = frame[0]
        if kind == "ready":
            self.policy = frame[2]
            self._ready.set()
            self._backoff = 0.5
            log.info("shadow_process_started", pid=frame[1], priority=frame[2])
            return
        if kind == "loaded":
            self.loaded.add((frame[1], frame[2]))
            log.info("shadow_process_version_loaded", model=frame[1], version=frame[2])
            self._notify()
            return
        future = self._pending.pop(frame[1], None)
        if future is None or future.done():
            return  # timed out meanwhile
        if kind == "ok":
            future.set_result(frame[2])
        else:
            cls = _KINDS.get(frame[2], errors.InternalError)
            future.set_exception(cls(frame[3]))

    def _died(self, proc: subprocess.Popen[bytes], code: int) -> None:
        if proc is not self._proc:
            return
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    Unavailable(f"the shadow process exited (code {code}); restarting")
                )
        self._proc = None
        self._ready.clear()
        self.loaded.clear()
        if self._closing:
            return
        self.restarts += 1
        log.warning(
            "shadow_process_exited",
            code=code,
            restart_in_seconds=self._backoff,
            failed_calls=len(pending),
            detail="mirrored calls fail UNAVAILABLE until it is back; the primary is unaffected",
        )
        assert self._loop is not None
        self._restart = self._loop.create_task(self._respawn(self._backoff))
        self._backoff = min(self._backoff * 2, self._max_backoff)

    async def _respawn(self, delay: float) -> None:
        await asyncio.sleep(delay)  # the restart backoff is the behaviour
        if not self._closing:
            self._spawn()

    def _post(self, message: Any) -> None:
        conn = self._conn
        if conn is None:
            return

        def send() -> None:
            with contextlib.suppress(OSError, EOFError):  # gone: the reader reports it
                send_frame(conn, message)

        self._sender.submit(send)

    def retain(self, versions: Mapping[tuple[str, int], Path]) -> None:
        """The versions the lanes may call: the child loads the missing ones (in the
        background, at idle priority) and unloads the others."""
        wanted = frozenset((m, v, str(p)) for (m, v), p in versions.items())
        if wanted != self._retain:
            self._retain = wanted
            self._post(("retain", sorted(wanted)))

    async def run(
        self, model: str, version: int, path: Path, signature: str, inputs: Arrays
    ) -> Arrays:
        """Run one group call in the child; its outputs, or the GatewayError it raised
        (UNAVAILABLE while the child is not running)."""
        if self._proc is None or self._conn is None or self._closing:
            raise Unavailable("the shadow process is not running (restarting)")
        assert self._loop is not None
        call = next(self._ids)
        future: asyncio.Future[Arrays] = self._loop.create_future()
        self._pending[call] = future
        self._post(("run", call, model, version, str(path), signature, dict(inputs)))
        try:
            return await future
        finally:
            self._pending.pop(call, None)

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        assert self._loop is not None
        self._loop.create_task(notify())

    async def wait_loaded(self, model: str, version: int, timeout: float = 120.0) -> None:
        """Until the running child has loaded `version` of `model` (tests, warm starts)."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: (model, version) in self.loaded), timeout
            )

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the child has started and said which priority it runs at."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 5 s)."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
        proc = self._proc
        if self._conn is not None:
            self._post(("stop",))
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 5)
            except TimeoutError:
                proc.kill()
        self._sender.shutdown(wait=False)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
