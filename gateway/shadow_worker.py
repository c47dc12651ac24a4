"""The mirror process (`python -m gateway.shadow_worker FD HOOK...`): runs mirrored model
calls for one gateway process at idle priority. See `gateway.serving.mirror.process`.

It first lowers its own scheduling priority (before TensorFlow starts any thread, so
every thread inherits it), then serves frames from the socket FD: `run` (load the
version on first use with the gateway's loader and the named load hooks, run one
signature), `retain` (load these versions in the background, unload the others), `stop`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def lower_priority() -> str:
    """SCHED_IDLE for this process (the kernel runs it only when a CPU is otherwise
    idle); nice 19 where that is not allowed. Returns which it got."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (AttributeError, OSError):
        os.nice(19)
        return "nice19"


def _hook(spec: str) -> Callable[[Any], Any]:
    module, _, name = spec.partition(":")
    fn: Callable[[Any], Any] = getattr(importlib.import_module(module), name)
    return fn


class Worker:
    """The versions this process has loaded and the calls it runs."""

    def __init__(self, conn: Connection, hooks: Sequence[str]) -> None:
        from gateway.serving.mirror.process import error_frame, send_frame

        self._conn = conn
        self._send_frame = send_frame
        self._error_frame = error_frame
        self._hooks = [_hook(h) for h in hooks]
        self._loaded: dict[tuple[str, int, str], Any] = {}
        self._loading: dict[tuple[str, int, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="shadow-call")

    def send(self, message: Any) -> None:
        with self._send_lock:
            self._send_frame(self._conn, message)

    def version(self, model: str, version: int, path: str) -> Any:
        """The loaded version (loading it now, once, if needed)."""
        from gateway.lifecycle.loader import load_version

        key = (model, version, path)
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                return found
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                found = self._loaded.get(key)
            if found is None:
                found, _ = load_version(model, version, Path(path), self._hooks, do_warmup=True)
                with self._lock:
                    self._loaded[key] = found
                self.send(("loaded", model, version, path))
            return found

    def run(
        self, call: int, model: str, version: int, path: str, signature: str, inputs: Any
    ) -> None:
        try:
            loaded = self.version(model, version, path)
            outputs = loaded.signature(signature).run(inputs)
            self.send(("ok", call, dict(outputs)))
        except BaseException as exc:  # every failure is answered, never fatal
            self.send(self._error_frame(call, exc))

    def retain(self, wanted: Sequence[tuple[str, int, str]]) -> None:
        keep = {(str(m), int(v), str(p)) for m, v, p in wanted}
        with self._lock:
            for key in [k for k in self._loaded if k not in keep]:
                del self._loaded[key]
        for model, version, path in keep:
            self._pool.submit(self._preload, model, version, path)

    def _preload(self, model: str, version: int, path: str) -> None:
        with contextlib.suppress(Exception):  # a call for it will answer the reason
            self.version(model, version, path)

    def serve(self) -> None:
        from gateway.serving.mirror.process import recv_frame

        while True:
            try:
                frame = recv_frame(self._conn)
            except (EOFError, OSError):
                return
            kind = frame[0]
            if kind == "run":
                self._pool.submit(self.run, *frame[1:])
            elif kind == "retain":
                self.retain(frame[1])
            elif kind == "stop":
                return


def main(argv: Sequence[str]) -> int:
    policy = lower_priority()
    fd, *hooks = argv
    conn = Connection(int(fd))
    worker = Worker(conn, hooks)
    worker.send(("ready", os.getpid(), policy))
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
