"""`--workers N`: N serving processes sharing one port with SO_REUSEPORT.

The parent picks the port (when 0), starts N `gateway serve` children with
`--worker-index i`, forwards SIGTERM/SIGINT to them, restarts a child that dies
unexpectedly (with backoff), and exits when all children have stopped. Each
worker has its own model copies (memory grows linearly; see the README) and
exports metrics on `metrics_port + i`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (0.0.0.0: checked on loopback)."""
    with socket.socket() as s:
        s.bind((host if host != "0.0.0.0" else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_workers(serve_args: Sequence[str], host: str, port: int, workers: int) -> int:
    """Supervise `workers` serving processes, each `gateway serve SERVE_ARGS` (the config
    file and flags the parent got) on `port`; returns the exit code."""
    if port == 0:
        port = free_port(host)
    print(f"listening on {host}:{port} ({workers} workers)", flush=True)

    def spawn(index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                *serve_args,
                "--port",
                str(port),
                "--worker-index",
                str(index),
            ],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "GATEWAY_WORKER_INDEX": str(index)},
        )

    children = {i: spawn(i) for i in range(workers)}
    stopping = False
    restarts: dict[int, float] = {}

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        alive = {i: c for i, c in children.items() if c.poll() is None}
        if stopping and not alive:
            break
        if not stopping:
            for index, child in children.items():
                if child.poll() is not None:
                    delay = restarts.get(index, 0.5)
                    print(
                        f"worker {index} exited with {child.returncode}; "
                        f"restarting in {delay:.1f}s",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(delay)
                    restarts[index] = min(delay * 2, 30.0)
                    children[index] = spawn(index)
        time.sleep(0.1)
    codes = [c.returncode for c in children.values()]
    return 0 if all(code == 0 for code in codes) else 1
