"""Side-by-side benchmark: the gateway against the naive baseline server, in one invocation.

``python -m loadtest.bench [--quick] [--rounds N] [--workers N] [--json FILE] [--profile FILE]
[--protocols tfs_rest,oip_grpc,oip_rest] [--peers mlserver,kserve] [--peer-cache DIR]``

1. builds a model repository in a temporary directory: ``models/demo/{1,2}`` (the same small
   Keras classifier, two seeds) and ``models_mem/demo/{1,2,3}`` for the memory comparison;
2. starts the baseline server (``loadtest.baseline_server``, serving version 1) and the
   gateway (``--workers N``, ``tf_intra_op_threads: 1``, batching
   ``{max_batch_size: 64, batch_timeout_micros: 0}``, version 1 only, no metrics port,
   TF Serving's REST API and v2 REST on ``server.rest_api_port``, JSON logs to a file) as
   subprocesses on free loopback ports, plus a gateway with a 100 % shadow of version 2 and
   one serving three versions; waits until each answers;
3. measures, alternating baseline and gateway phases ``--rounds`` times (medians reported):
   closed loop at concurrency 1 (p50), closed loop at saturation (64 clients over 2
   generator processes: throughput, p99, server CPU per request), the same two phases
   against the gateway over its other protocols (``--protocols``: TF Serving REST, v2 gRPC,
   v2 REST; compared with the baseline over TF Serving gRPC), the same two phases against
   the peers (``--peers``: MLServer and KServe's Python model server serving the same
   SavedModel, each from its own virtualenv made by ``loadtest.peers``, driven over their
   v2 gRPC endpoint; a peer that cannot be installed or started is reported as
   unavailable and the run goes on; the peers are stopped after these phases), the shadow cost
   (open loop at 50 % of the gateway's saturation throughput, shadow off vs on), resident
   memory (VmRSS summed over the gateway's worker processes) with one and three loaded
   versions, and the in-process floor (the SavedModel signature called directly, batch 1
   and batch 64);
4. prints a rich table (metric, baseline or reference, gateway, ratio, target, met) with
   the machine and the date, then a comparison table (c=1 p50/p99, saturation throughput
   and p99 for the baseline, the gateway, each peer and the echo ceiling); ``--json FILE``
   writes every number;
5. ``--profile FILE`` adds a saturation phase with ``py-spy record`` attached to every
   gateway worker and writes a Markdown summary of the top frames by self time.

Every request is ``x: float32 [1, 4]`` without a version (each server answers with its
default: version 1). Numbers from a shared 2-core machine are noisy: compare the ratios,
which are measured side by side under the same noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import yaml

from loadtest import peers as peerlib
from loadtest.loadgen import (
    REST_PROTOCOLS,
    LoadgenError,
    LoadResult,
    LoadSpec,
    ProtocolName,
    run_load,
)

__all__ = [
    "EXTRA_PROTOCOLS",
    "PROTOCOL_NAMES",
    "BenchReport",
    "BenchSettings",
    "ComparisonRow",
    "FloorResult",
    "GatewayRejected",
    "MemorySample",
    "PeerServer",
    "PeerStatus",
    "PhaseRun",
    "Repository",
    "Row",
    "ServerProcess",
    "build_comparison",
    "build_parser",
    "build_repository",
    "build_rows",
    "child_pids",
    "cpu_seconds",
    "gateway_config",
    "machine_info",
    "main",
    "measure_floor",
    "parse_metrics",
    "render_table",
    "rss_kib",
    "run_bench",
    "shadow_counters",
    "start_baseline",
    "start_gateway",
    "summarize_profile",
]

MODEL = "demo"
MAX_BATCH_SIZE = 64
TARGET_C1_P50_RATIO = 1.15
TARGET_THROUGHPUT_RATIO = 3.0
TARGET_SHADOW_P99_RATIO = 1.10
EXTRA_PROTOCOLS: tuple[str, ...] = ("tfs_rest", "oip_grpc", "oip_rest")
PROTOCOL_NAMES: dict[str, str] = {
    "tfs_grpc": "TF Serving gRPC",
    "tfs_rest": "TF Serving REST",
    "oip_grpc": "v2 gRPC",
    "oip_rest": "v2 REST",
}
PROFILE_KEEP_MARKER = "<!-- analysis: text below this line is kept when the file is regenerated -->"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_LISTENING = re.compile(r"listening on (\S+):(\d+)")
_SAMPLE_INTERVAL_S = 0.25
_STOP_TIMEOUT_S = 30.0

Progress = Callable[[str], None]


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """Phase lengths and sizes. ``default()`` runs in about 10 minutes (with the peers),
    ``quick()`` in 2-3."""

    rounds: int = 2
    workers: int = 2
    warmup_s: float = 2.0
    c1_duration_s: float = 10.0
    sat_duration_s: float = 15.0
    sat_concurrency: int = 64
    sat_procs: int = 2
    channels_per_proc: int = 8
    echo: bool = True
    shadow: bool = True
    shadow_duration_s: float = 15.0
    shadow_load_fraction: float = 0.5
    shadow_executor: str = "process"
    """`mirroring.executor` of the shadow-on gateway: "process" (idle priority) or
    "in_process"."""
    memory_versions: bool = True
    memory_warm_s: float = 2.0
    floor_seconds: float = 2.0
    profile_seconds: float = 0.0
    startup_timeout_s: float = 180.0
    protocols: tuple[str, ...] = EXTRA_PROTOCOLS
    """The gateway's other protocols measured at c=1 and saturation (each run labelled
    ``gateway_<protocol>``) next to TF Serving gRPC; the baseline is always gRPC."""
    peers: tuple[str, ...] = ()
    """Peer servers (``loadtest.peers.PEER_NAMES``) measured at c=1 and saturation over v2
    gRPC (runs labelled with the peer's name); ``default()`` and ``quick()`` run them all."""
    peer_cache: str = ""
    """Where the peers' virtualenvs live ('' = ``loadtest.peers.default_cache()``)."""

    @classmethod
    def default(cls, workers: int = 2, rounds: int = 2) -> BenchSettings:
        """The settings of ``make bench``."""
        return cls(workers=workers, rounds=rounds, peers=peerlib.PEER_NAMES)

    @classmethod
    def quick(cls, workers: int = 2, rounds: int = 1) -> BenchSettings:
        """A smoke run of about two and a half minutes (same phases, short)."""
        return cls(
            rounds=rounds,
            workers=workers,
            warmup_s=1.0,
            c1_duration_s=3.0,
            sat_duration_s=4.0,
            shadow_duration_s=4.0,
            memory_warm_s=1.0,
            floor_seconds=0.5,
            peers=peerlib.PEER_NAMES,
        )


@dataclass(frozen=True)
class PhaseRun:
    """One measured load run against one server."""

    phase: str  # "c1", "saturation", "shadow_off", "shadow_on", "profile"
    server: str  # "baseline", "gateway", "gateway_shadow", "gateway_<protocol>", ...
    round: int
    mode: str
    concurrency: int
    rate: float | None
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    server_cores: float | None  # CPU cores the server used in steady state (all processes)
    machine_cores: float | None  # CPU cores busy on the whole machine meanwhile
    server_cpu_us_per_request: float | None
    worker_cpu_share: list[float]  # share of the server's CPU per process (load spread)
    counters: dict[str, float] = field(default_factory=dict)  # /metrics deltas (shadow)
    protocol: str = "tfs_grpc"  # the load generator's protocol (loadgen.PROTOCOLS)

    @property
    def error_count(self) -> int:
        """Failed measured requests."""
        return sum(self.errors.values())


@dataclass(frozen=True)
class MemorySample:
    """Resident memory of one server: total and per process (KiB from VmRSS)."""

    server: str
    versions: int
    total_kib: int
    per_process_kib: list[int]

    @property
    def total_mib(self) -> float:
        """Total resident memory in MiB."""
        return self.total_kib / 1024.0


@dataclass(frozen=True)
class FloorResult:
    """The SavedModel's serving signature called directly in this process."""

    batch1_us_per_call: float
    batch64_us_per_call: float
    intra_op_threads: int | None

    @property
    def batch64_us_per_row(self) -> float:
        """Cost of one row inside a 64-row call."""
        return self.batch64_us_per_call / MAX_BATCH_SIZE


@dataclass(frozen=True)
class Row:
    """One line of the result table: ``ratio = gateway / baseline`` when both are numbers."""

    key: str
    metric: str
    baseline: float | None
    gateway: float | None
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


@dataclass(frozen=True)
class PeerStatus:
    """What happened to one peer server: ``status`` is ``measured`` or
    ``unavailable: <reason>``."""

    name: str
    title: str
    status: str
    version: str = ""
    install_s: float | None = None  # the pip install's wall time when its venv was made
    reused_venv: bool = False
    ready_s: float | None = None  # start-up until its first ModelInfer answered
    setup: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        """True when the peer was measured."""
        return self.status == "measured"


@dataclass(frozen=True)
class ComparisonRow:
    """One server in the comparison table (medians over the rounds)."""

    key: str  # the runs' server label
    server: str
    protocol: str
    c1_p50_ms: float | None
    c1_p99_ms: float | None
    sat_throughput_rps: float | None
    sat_p99_ms: float | None
    throughput_ratio: float | None  # saturation throughput / the baseline's
    cpu_us_per_request: float | None
    rss_mib: float | None
    note: str = ""


@dataclass
class BenchReport:
    """Everything one benchmark run measured (``to_dict`` is the ``--json`` document)."""

    machine: dict[str, Any]
    settings: BenchSettings
    runs: list[PhaseRun] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    floor: FloorResult | None = None
    shadow_status: str = "not run"
    shadow_rate_rps: float | None = None
    profile: dict[str, Any] | None = None
    peers: list[PeerStatus] = field(default_factory=list)
    elapsed_s: float = 0.0

    def runs_of(self, phase: str, server: str) -> list[PhaseRun]:
        """The runs of one phase against one server, in order."""
        return [r for r in self.runs if r.phase == phase and r.server == server]

    def median(self, phase: str, server: str, metric: str) -> float | None:
        """Median of ``metric`` (a ``PhaseRun`` attribute) over the rounds, or None."""
        values = [getattr(r, metric) for r in self.runs_of(phase, server)]
        values = [float(v) for v in values if v is not None]
        return statistics.median(values) if values else None

    def memory_of(self, server: str, versions: int) -> MemorySample | None:
        """The memory sample of ``server`` with ``versions`` loaded versions."""
        return next((m for m in self.memory if m.server == server and m.versions == versions), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict with every number (and the table rows)."""
        return {
            "machine": self.machine,
            "settings": dataclasses.asdict(self.settings),
            "rows": [dataclasses.asdict(r) for r in build_rows(self)],
            "runs": [{**dataclasses.asdict(r), "error_count": r.error_count} for r in self.runs],
            "memory": [{**dataclasses.asdict(m), "total_mib": m.total_mib} for m in self.memory],
            "floor": (
                {
                    **dataclasses.asdict(self.floor),
                    "batch64_us_per_row": self.floor.batch64_us_per_row,
                }
                if self.floor
                else None
            ),
            "shadow_status": self.shadow_status,
            "shadow_rate_rps": self.shadow_rate_rps,
            "profile": self.profile,
            "peers": [dataclasses.asdict(p) for p in self.peers],
            "comparison": [dataclasses.asdict(c) for c in build_comparison(self)],
            "elapsed_s": self.elapsed_s,
        }


class GatewayRejected(RuntimeError):
    """The gateway refused its config (exit code 2 and a one-line error)."""


class ServerError(RuntimeError):
    """A server did not start or did not become ready."""


# --------------------------------------------------------------------------------------
# Machine, processes, memory, CPU
# --------------------------------------------------------------------------------------


def _version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, kernel, Python/TensorFlow/grpcio versions, load average and date."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tensorflow": _version_of("tensorflow"),
        "grpcio": _version_of("grpcio"),
        "loadavg_at_start": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc/*/stat``), sorted."""
    return sorted(peerlib.children_by_parent().get(pid, []))


def rss_kib(pid: int) -> int:
    """Resident set size (``VmRSS``) of ``pid`` in KiB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds consumed so far by ``pid`` (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_port_block(count: int) -> int:
    """A port P with P .. P+count-1 all free on loopback (per-worker metrics ports)."""
    for _ in range(200):
        base = _free_port()
        if base + count > 65535:
            continue
        ok = True
        for port in range(base + 1, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise ServerError(f"no block of {count} free loopback ports found")


class ServerProcess:
    """A server subprocess: its target, its serving processes, memory, CPU, shutdown."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        workdir: Path,
        *,
        workers: int = 1,
        log_file: Path | None = None,
        stderr_file: Path | None = None,
        metrics_ports: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.proc = proc
        self.workdir = workdir
        self.workers = workers
        self.log_file = log_file
        self.stderr_file = stderr_file
        self.metrics_ports = list(metrics_ports)
        self.target = ""
        self.rest_port: int | None = None

    @property
    def rest_target(self) -> str:
        """``host:port`` of the REST port (TF Serving REST and v2 REST), or ''."""
        if self.rest_port is None or not self.target:
            return ""
        return f"{self.target.rsplit(':', 1)[0]}:{self.rest_port}"

    def target_for(self, protocol: str) -> str:
        """The address to drive ``protocol`` at: the REST port or the gRPC port."""
        if protocol not in REST_PROTOCOLS:
            return self.target
        if not self.rest_target:
            raise ServerError(f"{self.name}: no REST port for {protocol}")
        return self.rest_target

    @property
    def supervised(self) -> bool:
        """True when the process is a supervisor whose children serve (gateway ``--workers``)."""
        return self.workers > 1

    def serving_pids(self) -> list[int]:
        """The processes that serve requests: the supervisor's children, or the process."""
        if self.supervised:
            return child_pids(self.proc.pid)
        return [self.proc.pid]

    def memory(self, versions: int) -> MemorySample:
        """VmRSS of every serving process, summed."""
        per = [rss_kib(pid) for pid in self.serving_pids()]
        return MemorySample(self.name, versions, sum(per), per)

    def stderr_tail(self, lines: int = 5) -> str:
        """The last lines the server wrote to stderr (for error messages)."""
        if self.stderr_file is None or not self.stderr_file.exists():
            return ""
        text = self.stderr_file.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (forwarded to workers by the supervisor), then SIGKILL after ``timeout``."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        children = self.serving_pids() if self.supervised else []
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            return self.proc.wait(10)


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first stdout line of ``proc`` ('' when it exits first); then keeps draining."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerError(f"no output within {timeout:g}s")
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
        elif proc.poll() is not None:
            break
    stream = proc.stdout

    def drain() -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(fd, 65536):
                pass
        with contextlib.suppress(OSError):
            stream.close()

    threading.Thread(target=drain, daemon=True).start()
    return buf.split(b"\n", 1)[0].decode(errors="replace").strip()


def _popen(argv: Sequence[str], workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    stderr_file = workdir / f"{name}.stderr"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    with stderr_file.open("wb") as err:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=err, cwd=workdir, env=env
        )
    return proc, stderr_file


def start_baseline(model_dir: Path, workdir: Path, name: str = "baseline") -> ServerProcess:
    """Launch ``loadtest.baseline_server`` on a free port (call ``connect`` to wait for it)."""
    argv = [
        sys.executable,
        "-m",
        "loadtest.baseline_server",
        "--model-dir",
        str(model_dir),
        "--model-name",
        MODEL,
        "--version",
        "1",
        "--port",
        "0",
    ]
    proc, stderr_file = _popen(argv, workdir, name)
    return ServerProcess(name, proc, workdir, stderr_file=stderr_file)


def gateway_config(
    base_path: Path,
    log_file: Path,
    *,
    workers: int,
    version_policy: Mapping[str, Any] | None = None,
    metrics_port: int | None = None,
    model_extra: Mapping[str, Any] | None = None,
    rest_api_port: int | None = None,
    mirroring: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The benchmark gateway config: loopback, ``tf_intra_op_threads: 1``, batching
    ``{max_batch_size: 64, batch_timeout_micros: 0}``, JSON logs to ``log_file``; with
    ``rest_api_port``, the REST APIs (TF Serving's and v2) on that port."""
    model: dict[str, Any] = {
        "name": MODEL,
        "base_path": str(base_path),
        "version_policy": dict(version_policy or {"specific": [1]}),
        "batching": {"max_batch_size": MAX_BATCH_SIZE, "batch_timeout_micros": 0},
    }
    model.update(model_extra or {})
    return {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": metrics_port,
            "workers": workers,
            "tf_intra_op_threads": 1,
            "rest_api_port": rest_api_port,
        },
        "logging": {"level": "info", "format": "json", "file": str(log_file)},
        "models": [model],
        **({"mirroring": dict(mirroring)} if mirroring else {}),
    }


def start_gateway(
    name: str, config: Mapping[str, Any], workdir: Path, workers: int
) -> ServerProcess:
    """Write ``config`` to ``<workdir>/<name>.yaml`` and launch ``gateway serve`` on it."""
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config_path),
        "--port",
        "0",
        "--workers",
        str(workers),
    ]
    proc, stderr_file = _popen(argv, workdir, name)
    server_cfg = config.get("server", {})
    metrics_port = server_cfg.get("metrics_port")
    ports = [metrics_port + i for i in range(workers)] if metrics_port else []
    log_file = Path(config["logging"]["file"])
    server = ServerProcess(
        name,
        proc,
        workdir,
        workers=workers,
        log_file=log_file,
        stderr_file=stderr_file,
        metrics_ports=ports,
    )
    rest_port = server_cfg.get("rest_api_port")
    server.rest_port = int(rest_port) if rest_port else None
    return server


def _read_target(server: ServerProcess, timeout: float) -> None:
    line = _first_line(server.proc, timeout)
    match = _LISTENING.search(line)
    if match is None:
        try:
            code = server.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        tail = server.stderr_tail(1)
        if code == 2 and server.log_file is not None:  # gateway: config rejected
            raise GatewayRejected(tail or "config rejected")
        raise ServerError(
            f"{server.name}: expected 'listening on HOST:PORT', got {line!r} "
            f"(exit code {code}): {server.stderr_tail()}"
        )
    host = match.group(1)
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
    server.target = f"{host}:{match.group(2)}"


def _available_versions(log_file: Path) -> tuple[set[tuple[int, int]], list[str]]:
    """(worker, version) pairs logged as ``version_available`` for MODEL; failures."""
    available: set[tuple[int, int]] = set()
    failures: list[str] = []
    if not log_file.exists():
        return available, failures
    for line in log_file.read_text(errors="replace").splitlines():
        if '"version_' not in line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("model") != MODEL:
            continue
        if event.get("event") == "version_available":
            available.add((int(event.get("worker", 0)), int(event["version"])))
        elif event.get("event") == "version_failed":
            failures.append(f"version {event.get('version')}: {event.get('reason')}")
    return available, failures


def _predict_ok(target: str, timeout: float = 5.0) -> bool:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from loadtest.loadgen import build_request

    request = build_request(LoadSpec(target=target, model=MODEL))
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        try:
            stub.Predict(request, timeout=timeout)
        except grpc.RpcError:
            return False
    return True


def wait_ready(server: ServerProcess, versions: int, timeout: float) -> None:
    """Block until ``server`` answers Predict; a gateway also until every worker logged
    ``version_available`` for ``versions`` versions. Raises ``GatewayRejected`` (exit code 2)
    or ``ServerError``."""
    deadline = time.monotonic() + timeout
    if not server.target:
        _read_target(server, timeout)
    while True:
        code = server.proc.poll()
        if code is not None:
            if code == 2 and server.log_file is not None:
                raise GatewayRejected(server.stderr_tail(1) or "config rejected")
            raise ServerError(f"{server.name} exited with {code}: {server.stderr_tail()}")
        ready = True
        if server.log_file is not None:
            available, failures = _available_versions(server.log_file)
            if failures:
                raise ServerError(f"{server.name}: {failures[0]}")
            ready = len(available) >= versions * server.workers
        if ready and _predict_ok(server.target):
            return
        if time.monotonic() > deadline:
            raise ServerError(f"{server.name} not ready after {timeout:g}s")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------
# gRPC-only ceiling: a trivial grpc.aio PredictionService (no model, constant response)
# --------------------------------------------------------------------------------------


def _echo_response() -> Any:
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    out = response.outputs["output_0"]
    out.dtype = 1  # DT_FLOAT
    for size in (1, 3):
        out.tensor_shape.dim.add(size=size)
    out.tensor_content = bytes(12)
    response.model_spec.name = MODEL
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    return response


async def _echo_serve(host: str, port: int) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    response = _echo_response()

    class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
        async def Predict(self, request: Any, context: Any) -> Any:
            return response

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"could not bind {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {host}:{bound}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def serve_echo(port: int = 0, workers: int = 1) -> int:
    """Serve Predict with a constant response (the request is parsed, no model runs):
    what gRPC Python alone costs. ``workers > 1`` starts that many processes sharing the
    port (SO_REUSEPORT) like the gateway; prints ``listening on HOST:PORT`` when all are up."""
    host = "127.0.0.1"
    if workers <= 1:
        asyncio.run(_echo_serve(host, port))
        return 0
    port = port or _free_port()
    argv = [sys.executable, "-m", "loadtest.bench", "--serve-echo", "--port", str(port)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(workers)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        if not _LISTENING.search(_first_line(child, 120)):
            forward(signal.SIGTERM, None)
            return 1
    print(f"listening on {host}:{port} ({workers} workers)", flush=True)
    codes = [child.wait() for child in children]
    return 0 if all(code == 0 for code in codes) else 1


def start_echo(workdir: Path, workers: int, name: str = "grpc_echo") -> ServerProcess:
    """Launch ``serve_echo`` as a subprocess (``python -m loadtest.bench --serve-echo``)."""
    argv = [
        sys.executable,
        "-m",
        "loadtest.bench",
        "--serve-echo",
        "--port",
        "0",
        "--echo-workers",
        str(workers),
    ]
    proc, stderr_file = _popen(argv, workdir, name)
    return ServerProcess(name, proc, workdir, workers=workers, stderr_file=stderr_file)


# --------------------------------------------------------------------------------------
# Peers: MLServer and KServe over v2 gRPC (loadtest.peers makes their venvs and files)
# --------------------------------------------------------------------------------------


class PeerServer(ServerProcess):
    """A peer server started in its own session: its serving processes are the process
    and all its descendants (MLServer's inference workers); ``stop`` ends the group."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        workdir: Path,
        launch: peerlib.PeerLaunch,
        stderr_file: Path,
    ) -> None:
        super().__init__(name, proc, workdir, stderr_file=stderr_file)
        self.launch = launch
        self.target = launch.target

    def serving_pids(self) -> list[int]:
        """The peer's process and its descendants (workers, resource trackers)."""
        return [self.proc.pid, *peerlib.descendants(self.proc.pid)]

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> int | None:
        """SIGTERM to the peer, then SIGKILL to its process group after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(OSError):  # leftover workers of a peer that exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


def _peer_request() -> bytes:
    from loadtest.loadgen import build_oip_request

    return cast(bytes, build_oip_request(LoadSpec(model=MODEL)).SerializeToString())


def prepare_peers(
    settings: BenchSettings, progress: Progress
) -> tuple[dict[str, peerlib.PeerEnv], list[PeerStatus]]:
    """Make (or reuse) each peer's venv; the ready ones and the unavailable ones."""
    cache = Path(settings.peer_cache).expanduser() if settings.peer_cache else None
    envs: dict[str, peerlib.PeerEnv] = {}
    failed: list[PeerStatus] = []
    for name in settings.peers:
        peer = peerlib.PEERS[name]
        try:
            env = peerlib.ensure_venv(peer, cache, progress=progress)
        except peerlib.PeerUnavailable as exc:
            progress(f"{peer.title}: unavailable: {exc}")
            failed.append(PeerStatus(name, peer.title, f"unavailable: {exc}", peer.version))
            continue
        how = "reused" if env.reused else "made"
        progress(
            f"{peer.title}: venv {how} at {env.venv} (pip install {env.install_s:.0f} s when made)"
        )
        envs[name] = env
    return envs, failed


def start_peer(
    env: peerlib.PeerEnv, model_dir: Path, workdir: Path
) -> tuple[PeerServer, peerlib.PeerLaunch]:
    """Write the peer's files into ``<workdir>/peers/<name>`` and start it on free ports."""
    name = env.peer.name
    root = workdir / "peers" / name
    launch = peerlib.prepare_launch(env, root, model_dir, MODEL, _free_port(), _free_port())
    stderr_file = workdir / f"{name}.stderr"
    proc = peerlib.popen_peer(launch, stderr_file)
    return PeerServer(name, proc, workdir, launch, stderr_file), launch


def _start_peers(
    envs: Mapping[str, peerlib.PeerEnv],
    model_dir: Path,
    workdir: Path,
    settings: BenchSettings,
    servers: list[ServerProcess],
    progress: Progress,
) -> tuple[list[PeerServer], list[PeerStatus]]:
    """Start every peer, then wait for each; (the ready ones, a status for each)."""
    started: list[tuple[peerlib.PeerEnv, PeerServer, peerlib.PeerLaunch]] = []
    statuses: list[PeerStatus] = []
    for env in envs.values():
        try:
            server, launch = start_peer(env, model_dir, workdir)
        except (OSError, peerlib.PeerUnavailable) as exc:
            statuses.append(_peer_status(env, None, f"unavailable: {exc}"))
            continue
        servers.append(server)
        started.append((env, server, launch))
    ready: list[PeerServer] = []
    request = _peer_request()
    for env, server, launch in started:
        title = env.peer.title
        try:
            assert server.stderr_file is not None
            ready_s = peerlib.wait_oip_ready(
                server.proc,
                server.target,
                request,
                settings.startup_timeout_s,
                server.stderr_file,
                title,
            )
        except peerlib.PeerUnavailable as exc:
            progress(f"{title}: unavailable: {exc}")
            statuses.append(_peer_status(env, launch, f"unavailable: {exc}"))
            server.stop()
            servers.remove(server)
            continue
        progress(f"{peerlib.summary_line(env, launch)}; on {server.target} in {ready_s:.1f} s")
        statuses.append(_peer_status(env, launch, "measured", ready_s))
        ready.append(server)
    return ready, statuses


def _peer_status(
    env: peerlib.PeerEnv,
    launch: peerlib.PeerLaunch | None,
    status: str,
    ready_s: float | None = None,
) -> PeerStatus:
    peer = env.peer
    return PeerStatus(
        name=peer.name,
        title=peer.title,
        status=status,
        version=env.versions.get(peer.package, peer.version),
        install_s=round(env.install_s, 1),
        reused_venv=env.reused,
        ready_s=None if ready_s is None else round(ready_s, 1),
        setup=launch.setup if launch is not None else "",
        versions=dict(env.versions),
    )


def _mark_unavailable(report: BenchReport, name: str, reason: str) -> None:
    report.peers = [
        dataclasses.replace(p, status=f"unavailable: {reason}") if p.name == name else p
        for p in report.peers
    ]


# --------------------------------------------------------------------------------------
# Model repository and in-process floor
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repository:
    """The benchmark's model directories."""

    root: Path
    base_path: Path  # models/demo with versions 1 and 2
    memory_base_path: Path  # models_mem/demo with versions 1, 2 and 3

    def version_dir(self, version: int) -> Path:
        """``models/demo/<version>``."""
        return self.base_path / str(version)


def build_repository(root: Path, memory_versions: bool = True) -> Repository:
    """Build ``<root>/models/demo/{1,2}`` (a Keras classifier exported with its
    ``standardize`` preprocessing and training statistics by ``gateway.export_version``,
    seeds 1 and 2: the gateway applies the preprocessing and the feature checks to every
    request, the baseline serves the same SavedModel as is) and, with
    ``memory_versions``, ``<root>/models_mem/demo/{1,2,3}`` (adds seed 3)."""
    from gateway.samples import build_keras_bundle

    base = root / "models" / MODEL
    mem = root / "models_mem" / MODEL
    base.mkdir(parents=True, exist_ok=True)
    for version in (1, 2):
        if not (base / str(version) / "saved_model.pb").exists():
            build_keras_bundle(base, version, seed=version)
    if memory_versions:
        mem.mkdir(parents=True, exist_ok=True)
        for version in (1, 2):
            if not (mem / str(version)).exists():
                shutil.copytree(base / str(version), mem / str(version))
        if not (mem / "3" / "saved_model.pb").exists():
            build_keras_bundle(mem, 3, seed=3)
    return Repository(root, base, mem)


def _time_calls(fn: Callable[[], Any], seconds: float) -> float:
    """Median seconds per call over 5 slices of ``seconds / 5`` (after 20 warm-up calls)."""
    for _ in range(20):
        fn()
    per_call: list[float] = []
    slice_s = max(seconds / 5.0, 0.02)
    for _ in range(5):
        n = 0
        start = time.perf_counter()
        end = start + slice_s
        now = start
        while now < end:
            fn()
            n += 1
            now = time.perf_counter()
        per_call.append((now - start) / n)
    return statistics.median(per_call)


def measure_floor(model_dir: Path, seconds: float = 2.0) -> FloorResult:
    """Call the SavedModel's ``serving_default`` in this process the way the gateway's
    model call does (``tf.constant`` in, ``.numpy()`` out), batch 1 and batch 64."""
    import numpy as np
    import tensorflow as tf

    threads: int | None = None
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)  # as the gateway's workers
    threads = tf.config.threading.get_intra_op_parallelism_threads() or None
    model = tf.saved_model.load(str(model_dir))
    fn = model.signatures["serving_default"]
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 4)).astype(np.float32)
    x64 = rng.standard_normal((MAX_BATCH_SIZE, 4)).astype(np.float32)

    def call(x: Any) -> Callable[[], Any]:
        def run() -> Any:
            out = fn(x=tf.constant(x))
            return {k: v.numpy() for k, v in out.items()}

        return run

    batch1 = _time_calls(call(x1), seconds / 2)
    batch64 = _time_calls(call(x64), seconds / 2)
    return FloorResult(batch1 * 1e6, batch64 * 1e6, threads)


# --------------------------------------------------------------------------------------
# Metrics (the shadow gateway's /metrics)
# --------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> ``{'name{labels}': value}`` (comments skipped)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            samples[key.strip()] = samples.get(key.strip(), 0.0) + float(value)
    return samples


def _scrape(ports: Sequence[int]) -> dict[str, float]:
    """Samples summed over the given /metrics ports (one per gateway worker)."""
    total: dict[str, float] = {}
    for port in ports:
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            continue
        for key, value in parse_metrics(text).items():
            total[key] = total.get(key, 0.0) + value
    return total


def shadow_counters(samples: Mapping[str, float]) -> dict[str, float]:
    """Samples whose metric name contains ``shadow``, summed over labels, by name
    (``_created``, ``_bucket`` and ``_sum`` series left out)."""
    out: dict[str, float] = {}
    for key, value in samples.items():
        name = key.split("{", 1)[0]
        if "shadow" not in name or name.endswith(("_created", "_bucket", "_sum")):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def _dropped(counters: Mapping[str, float]) -> float | None:
    values = [v for k, v in counters.items() if "dropped" in k]
    return sum(values) if values else None


# --------------------------------------------------------------------------------------
# Load phases
# --------------------------------------------------------------------------------------


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from ``/proc/stat`` (all CPUs)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class _CpuSampler:
    """Samples the CPU seconds of a server's processes (and the machine's busy time)
    every 0.25 s in a thread."""

    def __init__(self, server: ServerProcess) -> None:
        self.pids = server.serving_pids()
        self.samples: list[tuple[float, list[float], tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _take(self) -> None:
        cpu = [cpu_seconds(p) for p in self.pids]
        self.samples.append((time.monotonic(), cpu, machine_busy()))

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_INTERVAL_S):
            self._take()

    def __enter__(self) -> _CpuSampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def window(self, start: float, end: float) -> tuple[float, list[float], float] | None:
        """(seconds, CPU seconds per process, machine cores busy) between the first and
        last samples inside ``[start, end]`` (all samples when fewer than two are inside)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            inside = self.samples
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        (t0, c0, m0), (t1, c1, m1) = inside[0], inside[-1]
        total = m1[1] - m0[1]
        machine = (m1[0] - m0[0]) / total * (os.cpu_count() or 1) if total > 0 else math.nan
        return t1 - t0, [b - a for a, b in zip(c0, c1, strict=True)], machine


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` (TensorFlow's start-up lines from the
    generator's spawned processes land there instead of the terminal)."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def run_phase(
    phase: str,
    server: ServerProcess,
    spec: LoadSpec,
    round_index: int,
    *,
    scrape: bool = False,
    label: str | None = None,
) -> PhaseRun:
    """Run one load against ``server`` (its REST port for the REST protocols); adds the
    server's CPU use in steady state (and the machine's) and, with ``scrape``, the deltas
    of its shadow metrics. ``label`` names the run's server (default: ``server.name``)."""
    before = shadow_counters(_scrape(server.metrics_ports)) if scrape else {}
    target = server.target_for(spec.protocol)
    with _CpuSampler(server) as sampler, _stderr_to(server.workdir / "loadgen.stderr"):
        result: LoadResult = run_load(dataclasses.replace(spec, target=target))
        returned = time.monotonic()
    counters: dict[str, float] = {}
    if scrape:
        after = shadow_counters(_scrape(server.metrics_ports))
        counters = {k: after[k] - before.get(k, 0.0) for k in after}
    # steady state: the measured window minus a margin at both ends
    margin = 1.0 if result.duration_s >= 4.0 else 0.0
    window = sampler.window(returned - result.duration_s + margin, returned - margin)
    cores: float | None = None
    machine: float | None = None
    per_request: float | None = None
    share: list[float] = []
    if window is not None:
        seconds, used, machine = window
        total = sum(used)
        cores = total / seconds
        if result.throughput_rps > 0:
            per_request = cores / result.throughput_rps * 1e6
        share = [u / total if total > 0 else 0.0 for u in used]
    lat = result.latency
    return PhaseRun(
        phase=phase,
        server=label or server.name,
        round=round_index,
        mode=spec.mode,
        concurrency=spec.concurrency,
        rate=spec.rate,
        duration_s=result.duration_s,
        sent=result.sent,
        ok=result.ok,
        errors=dict(result.errors),
        throughput_rps=result.throughput_rps,
        p50_ms=lat.p50_ms,
        p90_ms=lat.p90_ms,
        p99_ms=lat.p99_ms,
        p999_ms=lat.p999_ms,
        max_ms=lat.max_ms,
        server_cores=cores,
        machine_cores=machine,
        server_cpu_us_per_request=per_request,
        worker_cpu_share=share,
        counters=counters,
        protocol=spec.protocol,
    )


def _describe(run: PhaseRun) -> str:
    errors = f", errors {run.errors}" if run.errors else ""
    cpu = ""
    if run.server_cores is not None:
        cpu = f", server {run.server_cores:.2f} cores"
        if run.machine_cores is not None and math.isfinite(run.machine_cores):
            cpu += f" (machine {run.machine_cores:.2f})"
    spread = (
        " (spread " + "/".join(f"{s:.0%}" for s in run.worker_cpu_share) + ")"
        if len(run.worker_cpu_share) > 1
        else ""
    )
    extra = ""
    if run.counters:
        extra = ", " + ", ".join(f"{k}={v:g}" for k, v in sorted(run.counters.items()))
    return (
        f"round {run.round} {run.phase:<10} {run.server:<17} {run.throughput_rps:8.0f} req/s  "
        f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms{errors}{cpu}{spread}{extra}"
    )


def _c1_spec(settings: BenchSettings) -> LoadSpec:
    return LoadSpec(
        model=MODEL,
        concurrency=1,
        duration=settings.c1_duration_s,
        warmup=settings.warmup_s,
        procs=1,
        channels=1,
    )


def _sat_spec(settings: BenchSettings, duration: float | None = None) -> LoadSpec:
    return LoadSpec(
        model=MODEL,
        concurrency=settings.sat_concurrency,
        duration=duration or settings.sat_duration_s,
        warmup=settings.warmup_s,
        procs=settings.sat_procs,
        channels=settings.channels_per_proc,
    )


def _open_spec(settings: BenchSettings, rate: float) -> LoadSpec:
    return LoadSpec(
        model=MODEL,
        mode="open",
        rate=rate,
        duration=settings.shadow_duration_s,
        warmup=settings.warmup_s,
        procs=settings.sat_procs,
        channels=settings.channels_per_proc,
    )


def _warm_memory(server: ServerProcess, settings: BenchSettings) -> None:
    """A short closed-loop burst (several connections, so every worker gets traffic)."""
    spec = LoadSpec(
        target=server.target,
        model=MODEL,
        concurrency=8,
        duration=settings.memory_warm_s,
        procs=1,
        channels=8,
    )
    run_load(spec)


# --------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------


def _py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else None


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("gateway/transport", "gateway transport (proto <-> numpy, RPC wrapper)"),
    ("gateway/serving", "gateway serving (predictor, batcher)"),
    ("gateway/sinks", "gateway metrics/logging"),
    ("gateway/", "gateway (other)"),
    ("tensorflow", "TensorFlow (model call, eager runtime)"),
    ("keras", "TensorFlow (model call, eager runtime)"),
    ("grpc", "gRPC Python (cygrpc, aio server)"),
    ("google/protobuf", "protobuf"),
    ("numpy", "numpy"),
    ("structlog", "structlog"),
    ("prometheus_client", "prometheus_client"),
    ("asyncio", "asyncio event loop"),
    ("concurrent/futures", "thread pool"),
    ("threading.py", "thread pool"),
    ("queue.py", "thread pool"),
    ("selectors.py", "asyncio event loop"),
)


def _component(file: str) -> str:
    path = file.replace("\\", "/")
    for needle, name in _COMPONENTS:
        if needle in path:
            return name
    return "other (stdlib, interpreter)"


def summarize_profile(raw: str, top: int = 20) -> dict[str, Any]:
    """Aggregate py-spy ``--format raw`` output (``frame;frame;... count`` lines):
    top frames by self time, self and inclusive time per component."""
    total = 0
    self_frames: Counter[str] = Counter()
    self_components: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        match = _FRAME.match(leaf)
        func, file = (match.group("func"), match.group("file")) if match else (leaf, "")
        self_frames[f"{func} ({file})"] += count
        self_components[_component(file)] += count
        seen: set[str] = set()
        for frame in frames:
            m = _FRAME.match(frame)
            seen.add(_component(m.group("file")) if m else "other (stdlib, interpreter)")
        for name in seen:
            inclusive[name] += count

    def share(n: int) -> float:
        return n / total if total else 0.0

    return {
        "samples": total,
        "top_self": [
            {"frame": f, "samples": n, "share": share(n)} for f, n in self_frames.most_common(top)
        ],
        "self_by_component": [
            {"component": c, "samples": n, "share": share(n)}
            for c, n in self_components.most_common()
        ],
        "inclusive_by_component": [
            {"component": c, "samples": n, "share": share(n)} for c, n in inclusive.most_common()
        ],
    }


def profile_gateway(
    server: ServerProcess,
    settings: BenchSettings,
    workdir: Path,
    progress: Progress,
) -> dict[str, Any] | None:
    """Saturate ``server`` while ``py-spy record`` samples every worker; returns the
    summary (``summarize_profile``) plus the command and the load result, or None."""
    exe = _py_spy()
    if exe is None:
        progress("profile: py-spy not installed (pip install py-spy); skipped")
        return None
    seconds = settings.profile_seconds
    # py-spy runs through generator start-up (idle samples are not recorded) and warm-up
    record_s = math.ceil(seconds + settings.warmup_s + 8)
    spies: list[tuple[subprocess.Popen[bytes], Path]] = []
    command = ""
    for pid in server.serving_pids():
        out = workdir / f"profile-{pid}.txt"
        argv = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--duration",
            str(record_s),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ]
        command = " ".join(["py-spy", *argv[1:]]).replace(str(workdir), "<tmp>")
        spies.append(
            (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
        )
    run = run_phase("profile", server, _sat_spec(settings, seconds), 0)
    progress(_describe(run))
    raw = []
    for spy, out in spies:
        try:
            _, err = spy.communicate(timeout=record_s + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if spy.returncode != 0 or not out.exists():
            progress(f"profile: py-spy failed ({spy.returncode}): {err.decode().strip()[-300:]}")
            continue
        raw.append(out.read_text())
    if not raw:
        return None
    summary = summarize_profile("\n".join(raw))
    summary["command"] = command
    summary["processes"] = len(raw)
    summary["load"] = dataclasses.asdict(run)
    return summary


def render_profile_markdown(report: BenchReport, previous: str = "") -> str:
    """PROFILE.md text for ``report.profile``; keeps what follows PROFILE_KEEP_MARKER in
    ``previous`` (the hand-written analysis)."""
    prof = report.profile or {}
    m = report.machine
    load = prof.get("load", {})
    lines = [
        "# Gateway profile at saturation",
        "",
        f"Generated by `python -m loadtest.bench --profile loadtest/PROFILE.md` on {m['date']}",
        f"({m['cpu']}, {m['usable_cores']} usable cores, Python {m['python']}, "
        f"TensorFlow {m['tensorflow']}, grpcio {m['grpcio']}).",
        "",
        f"Gateway: {report.settings.workers} workers, `tf_intra_op_threads: 1`, batching "
        f"`{{max_batch_size: {MAX_BATCH_SIZE}, batch_timeout_micros: 0}}`. Load: closed loop, "
        f"{report.settings.sat_concurrency} clients over {report.settings.sat_procs} generator "
        f"processes on the same machine, `x: float32 [1, 4]`: "
        f"{load.get('throughput_rps', 0.0):.0f} req/s, p99 {load.get('p99_ms', 0.0):.1f} ms, "
        f"gateway CPU {load.get('server_cores') or 0.0:.2f} cores.",
        "",
        "Sampler, attached to each worker process while the load ran (idle threads are not "
        "sampled):",
        "",
        f"    {prof.get('command', '')}",
        "",
        f"{prof.get('samples', 0)} samples over {prof.get('processes', 0)} worker processes.",
        "",
        "## Self time by component",
        "",
        "| component | self | inclusive |",
        "|---|---:|---:|",
    ]
    inclusive = {c["component"]: c["share"] for c in prof.get("inclusive_by_component", [])}
    for comp in prof.get("self_by_component", []):
        name = comp["component"]
        lines.append(f"| {name} | {comp['share']:.1%} | {inclusive.get(name, 0.0):.1%} |")
    lines += [
        "",
        "## Top frames by self time",
        "",
        "| # | self | frame |",
        "|---:|---:|---|",
    ]
    for i, frame in enumerate(prof.get("top_self", []), 1):
        lines.append(f"| {i} | {frame['share']:.1%} | `{frame['frame']}` |")
    lines += ["", PROFILE_KEEP_MARKER]
    kept = previous.split(PROFILE_KEEP_MARKER, 1)[1] if PROFILE_KEEP_MARKER in previous else "\n"
    return "\n".join(lines) + kept


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()


def run_bench(
    settings: BenchSettings,
    workdir: Path,
    *,
    progress: Progress = _log_stderr,
    repository: Repository | None = None,
) -> BenchReport:
    """Run every phase (see the module docstring) in ``workdir`` and return the report."""
    started_at = time.monotonic()
    report = BenchReport(machine=machine_info(), settings=settings)
    workdir.mkdir(parents=True, exist_ok=True)
    progress(f"building models in {workdir}")
    repo = repository or build_repository(workdir, memory_versions=settings.memory_versions)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    workers = settings.workers
    peer_envs: dict[str, peerlib.PeerEnv] = {}
    if settings.peers:
        progress(f"peers: {', '.join(settings.peers)} (virtualenvs)")
        peer_envs, failed = prepare_peers(settings, progress)
        report.peers.extend(failed)

    with _servers() as servers:
        baseline = start_baseline(repo.version_dir(1), workdir)
        servers.append(baseline)
        gateway = start_gateway(
            "gateway",
            gateway_config(
                repo.base_path, logs / "gateway.log", workers=workers, rest_api_port=_free_port()
            ),
            workdir,
            workers,
        )
        servers.append(gateway)
        echo: ServerProcess | None = None
        if settings.echo:
            echo = start_echo(workdir, workers)
            servers.append(echo)
        memgw: ServerProcess | None = None
        if settings.memory_versions:
            memgw = start_gateway(
                "gateway_3_versions",
                gateway_config(
                    repo.memory_base_path,
                    logs / "gateway_3_versions.log",
                    workers=workers,
                    version_policy={"all": {}},
                ),
                workdir,
                workers,
            )
            servers.append(memgw)
        progress("starting baseline and gateway(s)")
        wait_ready(baseline, 1, settings.startup_timeout_s)
        wait_ready(gateway, 1, settings.startup_timeout_s)
        progress(
            f"baseline on {baseline.target}, gateway on {gateway.target} "
            f"(REST {gateway.rest_target}, {workers} workers)"
        )
        if echo is not None:
            wait_ready(echo, 1, settings.startup_timeout_s)
            progress(f"gRPC-only echo server on {echo.target} ({workers} processes)")
        peer_servers: list[PeerServer] = []
        if peer_envs:
            peer_servers, statuses = _start_peers(
                peer_envs, repo.version_dir(1), workdir, settings, servers, progress
            )
            report.peers.extend(statuses)

        # memory: after the same short burst of traffic on each server
        for server, versions in ((baseline, 1), (gateway, 1)):
            _warm_memory(server, settings)
            report.memory.append(server.memory(versions))
        if memgw is not None:
            wait_ready(memgw, 3, settings.startup_timeout_s)
            _warm_memory(memgw, settings)
            report.memory.append(memgw.memory(3))
            memgw.stop()
            servers.remove(memgw)
        for sample in report.memory:
            per = ", ".join(f"{k / 1024:.0f}" for k in sample.per_process_kib)
            progress(
                f"memory {sample.server} ({sample.versions} version(s)): "
                f"{sample.total_mib:.0f} MiB [{per}]"
            )

        # alternating baseline / gateway phases (the gateway over each of its protocols)
        for r in range(1, settings.rounds + 1):
            for phase, spec in (("c1", _c1_spec(settings)), ("saturation", _sat_spec(settings))):
                plan: list[tuple[ServerProcess, str, str | None]] = [
                    (baseline, "tfs_grpc", None),
                    (gateway, "tfs_grpc", None),
                    *((gateway, p, f"gateway_{p}") for p in settings.protocols),
                ]
                if echo is not None:
                    plan.append((echo, "tfs_grpc", None))
                plan.extend((peer, "oip_grpc", None) for peer in peer_servers)
                for server, protocol, label in plan:
                    run_spec = dataclasses.replace(spec, protocol=cast(ProtocolName, protocol))
                    if not isinstance(server, PeerServer):
                        run = run_phase(phase, server, run_spec, r, label=label)
                    else:
                        try:
                            run = run_phase(phase, server, run_spec, r, label=label)
                        except LoadgenError as exc:  # a peer that died: never the whole run
                            progress(f"{server.name}: unavailable: {exc}")
                            _mark_unavailable(report, server.name, f"{phase}: {exc}")
                            peer_servers.remove(server)
                            continue
                    report.runs.append(run)
                    progress(_describe(run))

        # the peers: resident memory after their runs, then stopped
        for peer in peer_servers:
            report.memory.append(peer.memory(1))
        for peer in [s for s in servers if isinstance(s, PeerServer)]:
            peer.stop()
            servers.remove(peer)

        if settings.shadow:
            _shadow_phases(report, settings, repo, workdir, gateway, servers, progress)

        if settings.profile_seconds > 0:
            report.profile = profile_gateway(gateway, settings, workdir, progress)

        after = gateway.memory(1)
        report.memory.append(dataclasses.replace(after, server="gateway_after_runs"))

    progress("measuring the in-process floor")
    report.floor = measure_floor(repo.version_dir(1), settings.floor_seconds)
    report.elapsed_s = time.monotonic() - started_at
    return report


def _shadow_phases(
    report: BenchReport,
    settings: BenchSettings,
    repo: Repository,
    workdir: Path,
    gateway: ServerProcess,
    servers: list[ServerProcess],
    progress: Progress,
) -> None:
    saturation = report.median("saturation", "gateway", "throughput_rps")
    if not saturation:
        report.shadow_status = "skipped: no gateway saturation throughput"
        return
    metrics_port = _free_port_block(settings.workers)
    config = gateway_config(
        repo.base_path,
        workdir / "logs" / "gateway_shadow.log",
        workers=settings.workers,
        version_policy={"all": {}},
        metrics_port=metrics_port,
        model_extra={"primary": 1, "shadows": [{"version": 2, "sample_rate": 1.0}]},
        mirroring={"executor": settings.shadow_executor},
    )
    shadow = start_gateway("gateway_shadow", config, workdir, settings.workers)
    servers.append(shadow)
    try:
        wait_ready(shadow, 2, settings.startup_timeout_s)
    except GatewayRejected as exc:
        progress("shadow: not supported by this gateway build")
        progress(f"  ({exc})")
        report.shadow_status = f"not supported by this gateway build: {exc}"
        servers.remove(shadow)
        return
    rate = round(saturation * settings.shadow_load_fraction, 1)
    report.shadow_rate_rps = rate
    progress(
        f"shadow phases: open loop at {rate:.0f} req/s (shadow off vs on, "
        f"mirroring.executor: {settings.shadow_executor})"
    )
    spec = _open_spec(settings, rate)
    for r in range(1, settings.rounds + 1):
        off = run_phase("shadow_off", gateway, spec, r)
        report.runs.append(off)
        progress(_describe(off))
        on = run_phase("shadow_on", shadow, spec, r, scrape=True)
        report.runs.append(on)
        progress(_describe(on))
    report.shadow_status = "measured"
    shadow.stop()
    servers.remove(shadow)


# --------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def _le(value: float | None, limit: float | None) -> bool | None:
    return None if value is None or limit is None else value <= limit


def _split(shares: Sequence[Sequence[float]]) -> str:
    return ", ".join("/".join(f"{s:.0%}" for s in split) for split in shares if len(split) > 1)


def build_rows(report: BenchReport) -> list[Row]:
    """The table rows (medians over the rounds; ratio = gateway / baseline-or-reference)."""
    rows: list[Row] = []
    med = report.median

    def add(
        key: str,
        metric: str,
        reference: float | None,
        value: float | None,
        target: str = "",
        met: bool | None = None,
        note: str = "",
    ) -> float | None:
        ratio = _ratio(value, reference)
        rows.append(Row(key, metric, reference, value, ratio, target, met, note))
        return ratio

    def pair(phase: str, metric: str, other: str = "baseline") -> tuple[float | None, float | None]:
        return med(phase, other, metric), med(phase, "gateway", metric)

    b, g = pair("c1", "p50_ms")
    ratio = _ratio(g, b)
    add(
        "c1_p50_ms",
        "c=1 p50 latency, ms",
        b,
        g,
        f"ratio <= {TARGET_C1_P50_RATIO}",
        _le(ratio, TARGET_C1_P50_RATIO),
    )
    add("c1_p99_ms", "c=1 p99 latency, ms", *pair("c1", "p99_ms"))

    c = report.settings.sat_concurrency
    b, g = pair("saturation", "throughput_rps")
    ratio = _ratio(g, b)
    met = None if ratio is None else ratio >= TARGET_THROUGHPUT_RATIO
    target = f"ratio >= {TARGET_THROUGHPUT_RATIO:g}"
    add("sat_throughput_rps", f"saturation throughput (c={c}), req/s", b, g, target, met)
    b, g = pair("saturation", "p99_ms")
    add("sat_p99_ms", f"saturation p99 (c={c}), ms", b, g, "gateway <= baseline", _le(g, b))
    add("sat_p50_ms", f"saturation p50 (c={c}), ms", *pair("saturation", "p50_ms"))
    b, g = pair("saturation", "error_count")
    rows.append(Row("sat_errors", "saturation errors (median per run)", b, g, None, "", None))
    bc, gc = pair("saturation", "server_cores")
    bm, gm = pair("saturation", "machine_cores")
    note = (
        f"server cores {bc or 0:.2f} vs {gc or 0:.2f}; machine busy {bm or 0:.2f} vs {gm or 0:.2f}"
    )
    spread = _split([r.worker_cpu_share for r in report.runs_of("saturation", "gateway")])
    note += f"; gateway worker CPU split {spread}" if spread else ""
    b, g = pair("saturation", "server_cpu_us_per_request")
    add("sat_cpu_us_per_request", "server CPU per request at saturation, us", b, g, note=note)

    e, g = pair("c1", "p50_ms", "grpc_echo")
    if e is not None:
        add("echo_c1_p50_ms", "gRPC-only echo server -> gateway: c=1 p50, ms", e, g)
    e, g = pair("saturation", "throughput_rps", "grpc_echo")
    if e is not None:
        ec = med("saturation", "grpc_echo", "server_cpu_us_per_request")
        em = med("saturation", "grpc_echo", "machine_cores")
        note = f"echo CPU {ec or 0:.0f} us/request; machine busy {em or 0:.2f} cores"
        metric = "gRPC-only echo server -> gateway: saturation, req/s"
        add("echo_sat_throughput_rps", metric, e, g, note=note)

    for protocol in report.settings.protocols:
        server = f"gateway_{protocol}"
        name = PROTOCOL_NAMES.get(protocol, protocol)
        for phase, metric_key, key, metric in (
            ("c1", "p50_ms", "c1_p50_ms", "c=1 p50 latency, ms"),
            ("saturation", "throughput_rps", "sat_throughput_rps", f"saturation (c={c}), req/s"),
        ):
            b, g = med(phase, "baseline", metric_key), med(phase, server, metric_key)
            grpc_ratio = _ratio(g, med(phase, "gateway", metric_key))
            note = "" if grpc_ratio is None else f"gateway gRPC -> {name}: {grpc_ratio:.2f}"
            cpu = med(phase, server, "server_cpu_us_per_request")
            if phase == "saturation" and cpu is not None:
                note += f"; server CPU {cpu:.0f} us/request"
            errors = sum(r.error_count for r in report.runs_of(phase, server))
            if errors:
                note += f"; {errors} errors"
            add(f"{protocol}_{key}", f"gateway over {name}: {metric}", b, g, note=note)

    for status in _peer_statuses(report):
        server = status.name
        label = f"{status.title} {status.version}".strip()
        for phase, metric_key, key, metric in (
            ("c1", "p50_ms", "c1_p50_ms", "c=1 p50 latency, ms"),
            ("c1", "p99_ms", "c1_p99_ms", "c=1 p99 latency, ms"),
            ("saturation", "throughput_rps", "sat_throughput_rps", f"c={c} throughput, req/s"),
            ("saturation", "p99_ms", "sat_p99_ms", f"c={c} p99, ms"),
        ):
            b, v = med(phase, "baseline", metric_key), med(phase, server, metric_key)
            notes: list[str] = []
            if not status.available:
                notes.append(status.status)
            gw = med(phase, "gateway", metric_key)
            if gw is not None and v is not None and gw > 0:
                notes.append(f"gateway -> {status.title}: {v / gw:.2f}")
            cpu = med(phase, server, "server_cpu_us_per_request")
            if phase == "saturation" and metric_key == "throughput_rps" and cpu is not None:
                notes.append(f"server CPU {cpu:.0f} us/request")
            errors = sum(r.error_count for r in report.runs_of(phase, server))
            if errors:
                notes.append(f"{errors} errors")
            metric_text = f"{label} over v2 gRPC: {metric}"
            add(f"{server}_{key}", metric_text, b, v, note="; ".join(notes))

    shadow_target = f"ratio <= {TARGET_SHADOW_P99_RATIO:.2f}, 0 errors"
    if report.shadow_status == "measured":
        on_runs = report.runs_of("shadow_on", "gateway_shadow")
        errors = sum(r.error_count for r in on_runs)
        off_errors = sum(r.error_count for r in report.runs_of("shadow_off", "gateway"))
        rate = f"{report.shadow_rate_rps:.0f} req/s" if report.shadow_rate_rps else "?"

        def off_on(metric: str) -> tuple[float | None, float | None]:
            return med("shadow_off", "gateway", metric), med("shadow_on", "gateway_shadow", metric)

        off, on = off_on("p99_ms")
        ratio = _ratio(on, off)
        met = None if ratio is None else ratio <= TARGET_SHADOW_P99_RATIO and errors == 0
        metric = f"shadow off -> on: primary p99 at {rate}, ms"
        add("shadow_p99_ms", metric, off, on, shadow_target, met)
        add("shadow_p50_ms", "shadow off -> on: primary p50, ms", *off_on("p50_ms"))
        rows.append(
            Row(
                "shadow_errors",
                "shadow off -> on: primary errors (all runs)",
                float(off_errors),
                float(errors),
                None,
                "0",
                errors == 0,
            )
        )
        metric = "shadow off -> on: gateway CPU per request, us"
        add("shadow_cpu_us_per_request", metric, *off_on("server_cpu_us_per_request"))
        known = [d for d in (_dropped(r.counters) for r in on_runs) if d is not None]
        seen = sorted({k for r in on_runs for k in r.counters})
        note = "metrics: " + ", ".join(seen) if seen else "no shadow metric on /metrics"
        metric = "shadow copies dropped (all runs, /metrics)"
        add("shadow_dropped", metric, None, sum(known) if known else None, note=note)
    else:
        add("shadow_p99_ms", "shadow cost", None, None, shadow_target, note=report.shadow_status)

    base_mem = report.memory_of("baseline", 1)
    one = report.memory_of("gateway", 1)
    three = report.memory_of("gateway_3_versions", 3)
    after = report.memory_of("gateway_after_runs", 1)

    def per_worker(sample: MemorySample) -> str:
        return "per worker: " + " + ".join(f"{k / 1024:.0f}" for k in sample.per_process_kib)

    if one is not None:
        b = base_mem.total_mib if base_mem else None
        metric = "RSS, 1 version loaded, MiB (gateway: all workers)"
        add("rss_1_version_mib", metric, b, one.total_mib, note=per_worker(one))
        if three is not None:
            metric = "RSS, gateway 1 -> 3 versions, MiB"
            add(
                "rss_3_versions_mib", metric, one.total_mib, three.total_mib, note=per_worker(three)
            )
        if after is not None:
            metric = "RSS, gateway before -> after all runs, MiB"
            add("rss_after_runs_mib", metric, one.total_mib, after.total_mib)

    if report.floor is not None:
        fl = report.floor
        g = med("c1", "gateway", "p50_ms")
        metric = "batch 1: in-process call -> gateway c=1 p50, us"
        add("floor_batch1_us", metric, fl.batch1_us_per_call, g * 1000 if g is not None else None)
        sat = med("saturation", "gateway", "throughput_rps")
        metric = "per row: in-process batch-64 call -> gateway saturation (1/throughput), us"
        note = f"batch-64 call {fl.batch64_us_per_call:.0f} us"
        add(
            "floor_batch64_us_per_row",
            metric,
            fl.batch64_us_per_row,
            1e6 / sat if sat else None,
            note=note,
        )
    return rows


def _peer_statuses(report: BenchReport) -> list[PeerStatus]:
    """One status per requested peer, in ``settings.peers`` order (a peer without a
    status was never tried: 'unavailable: not run')."""
    by_name = {p.name: p for p in report.peers}
    out: list[PeerStatus] = []
    for name in report.settings.peers:
        spec = peerlib.PEERS.get(name)
        title = spec.title if spec else name
        version = spec.version if spec else ""
        out.append(by_name.get(name) or PeerStatus(name, title, "unavailable: not run", version))
    return out


def build_comparison(report: BenchReport) -> list[ComparisonRow]:
    """The comparison table: the baseline, the gateway (TF Serving gRPC and, when
    measured, v2 gRPC), each peer (v2 gRPC) and the gRPC-only echo ceiling."""
    med = report.median
    base_sat = med("saturation", "baseline", "throughput_rps")

    def row(key: str, server: str, protocol: str, rss: float | None, note: str) -> ComparisonRow:
        sat = med("saturation", key, "throughput_rps")
        errors = sum(r.error_count for p in ("c1", "saturation") for r in report.runs_of(p, key))
        if errors:
            note = f"{note}; {errors} errors" if note else f"{errors} errors"
        return ComparisonRow(
            key=key,
            server=server,
            protocol=protocol,
            c1_p50_ms=med("c1", key, "p50_ms"),
            c1_p99_ms=med("c1", key, "p99_ms"),
            sat_throughput_rps=sat,
            sat_p99_ms=med("saturation", key, "p99_ms"),
            throughput_ratio=_ratio(sat, base_sat),
            cpu_us_per_request=med("saturation", key, "server_cpu_us_per_request"),
            rss_mib=rss,
            note=note,
        )

    def rss(server: str) -> float | None:
        sample = report.memory_of(server, 1)
        return sample.total_mib if sample else None

    s = report.settings
    rows = [
        row("baseline", "baseline", "TF Serving gRPC", rss("baseline"), "1 process; no batching"),
        row(
            "gateway",
            "gateway",
            "TF Serving gRPC",
            rss("gateway"),
            f"{s.workers} workers; batching {MAX_BATCH_SIZE} / 0 ms",
        ),
    ]
    if "oip_grpc" in s.protocols:
        rows.append(row("gateway_oip_grpc", "gateway", "v2 gRPC", rss("gateway"), ""))
    for status in _peer_statuses(report):
        label = f"{status.title} {status.version}".strip()
        note = status.setup if status.available else status.status
        rows.append(row(status.name, label, "v2 gRPC", rss(status.name), note))
    if report.runs_of("c1", "grpc_echo") or report.runs_of("saturation", "grpc_echo"):
        rows.append(
            row(
                "grpc_echo",
                "gRPC echo (ceiling)",
                "TF Serving gRPC",
                None,
                f"no model; {s.workers} processes",
            )
        )
    return rows


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(report: BenchReport, file: IO[str] | None = None, width: int = 160) -> str:
    """Print the result table (rich) with the machine and date; returns the text."""
    from rich.console import Console
    from rich.table import Table

    m = report.machine
    s = report.settings
    title = (
        f"tf-gateway vs baseline: {m['date']}, {m['cpu']}, {m['usable_cores']}/{m['cores']} cores, "
        f"Python {m['python']}, TensorFlow {m['tensorflow']}, grpcio {m['grpcio']}"
    )
    caption = (
        f"medians of {s.rounds} alternating round(s); gateway {s.workers} worker(s), "
        f"tf_intra_op_threads 1, max_batch_size {MAX_BATCH_SIZE}, batch_timeout_micros 0; "
        f"saturation: {s.sat_concurrency} clients over {s.sat_procs} generator processes on the "
        f"same machine; 'gateway over REST / v2' rows: the gateway over that protocol vs the "
        f"baseline over TF Serving gRPC; run took {report.elapsed_s:.0f} s"
    )
    table = Table(title=title, caption=caption, show_lines=False)
    table.add_column("metric")
    table.add_column("baseline / reference", justify="right")
    table.add_column("gateway", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target")
    table.add_column("met")
    table.add_column("note")
    for row in build_rows(report):
        met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
        table.add_row(
            row.metric,
            _fmt(row.baseline),
            _fmt(row.gateway),
            "-" if row.ratio is None else f"{row.ratio:.2f}",
            row.target,
            met,
            row.note,
        )
    tables: list[Table] = [table]
    if s.peers or any(r.server == "grpc_echo" for r in report.runs):
        c = s.sat_concurrency
        peers = Table(
            title="baseline, gateway, peers and the gRPC echo ceiling (same model, same run)",
            caption=(
                f"c=1: 1 client; c={c}: {c} clients over {s.sat_procs} generator processes; "
                "x vs baseline: throughput ratio; CPU: all the server's processes at "
                "saturation; RSS: peers after their runs, others after a warm-up burst"
            ),
        )
        for name, justify in (
            ("server", "left"),
            ("protocol", "left"),
            ("c=1 p50, ms", "right"),
            ("c=1 p99, ms", "right"),
            (f"c={c}, req/s", "right"),
            (f"c={c} p99, ms", "right"),
            ("x vs baseline", "right"),
            ("CPU us/req", "right"),
            ("RSS, MiB", "right"),
            ("note", "left"),
        ):
            peers.add_column(name, justify=cast(Any, justify))
        for crow in build_comparison(report):
            peers.add_row(
                crow.server,
                crow.protocol,
                _fmt(crow.c1_p50_ms),
                _fmt(crow.c1_p99_ms),
                _fmt(crow.sat_throughput_rps),
                _fmt(crow.sat_p99_ms),
                "-" if crow.throughput_ratio is None else f"{crow.throughput_ratio:.2f}",
                _fmt(crow.cpu_us_per_request),
                _fmt(crow.rss_mib),
                crow.note,
            )
        tables.append(peers)
    buffer = io.StringIO()
    plain = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    for t in tables:
        plain.print(t)
    text = buffer.getvalue()
    if file is not None:
        console = Console(file=file, width=width)
        for t in tables:
            console.print(t)
    return text


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m loadtest.bench``."""
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Side-by-side benchmark of the gateway against the naive baseline server.",
    )
    p.add_argument("--quick", action="store_true", help="short phases, 1 round (~2-3 min)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 2, --quick 1)")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    p.add_argument("--json", metavar="FILE", help="write every number as JSON")
    p.add_argument(
        "--profile",
        metavar="FILE",
        help="also profile the gateway at saturation with py-spy; write a Markdown summary",
    )
    p.add_argument("--profile-seconds", type=float, default=20.0, help="profiled seconds")
    p.add_argument("--no-shadow", action="store_true", help="skip the shadow-cost phases")
    p.add_argument(
        "--shadow-executor",
        choices=("process", "in_process"),
        default="process",
        help="mirroring.executor of the shadow-on gateway (default: process, idle priority)",
    )
    p.add_argument("--no-echo", action="store_true", help="skip the gRPC-only echo server")
    p.add_argument(
        "--protocols",
        default=",".join(EXTRA_PROTOCOLS),
        help="comma-separated gateway protocols measured next to TF Serving gRPC "
        f"(default {','.join(EXTRA_PROTOCOLS)}; '' for none)",
    )
    p.add_argument(
        "--peers",
        default=None,
        help="comma-separated peer servers measured over v2 gRPC, each from its own "
        f"virtualenv (default {','.join(peerlib.PEER_NAMES)}, --quick too; '' for none)",
    )
    p.add_argument(
        "--peer-cache",
        metavar="DIR",
        default="",
        help="where the peers' virtualenvs are made and reused "
        "(default $TF_GATEWAY_BENCH_CACHE or ~/.cache/tf-gateway-bench)",
    )
    p.add_argument("--dir", metavar="DIR", help="work in DIR and keep it (default: temp dir)")
    p.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--echo-workers", type=int, default=1, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 when the run completed, targets or not)."""
    args = build_parser().parse_args(argv)
    if args.serve_echo:
        return serve_echo(args.port, args.echo_workers)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    make = BenchSettings.quick if args.quick else BenchSettings.default
    settings = (
        make(workers=args.workers) if args.rounds is None else make(args.workers, args.rounds)
    )
    if args.profile:
        settings = dataclasses.replace(settings, profile_seconds=args.profile_seconds)
    if args.no_shadow:
        settings = dataclasses.replace(settings, shadow=False)
    settings = dataclasses.replace(settings, shadow_executor=args.shadow_executor)
    if args.no_echo:
        settings = dataclasses.replace(settings, echo=False)
    protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip())
    unknown = [p for p in protocols if p not in EXTRA_PROTOCOLS]
    if unknown:
        print(
            f"bench: --protocols: unknown {unknown} (choose from {EXTRA_PROTOCOLS})",
            file=sys.stderr,
        )
        return 2
    settings = dataclasses.replace(settings, protocols=protocols)
    if args.peers is not None:
        names = tuple(n.strip() for n in args.peers.split(",") if n.strip())
        unknown_peers = peerlib.unknown_peers(names)
        if unknown_peers:
            print(
                f"bench: --peers: unknown {unknown_peers} (choose from {peerlib.PEER_NAMES})",
                file=sys.stderr,
            )
            return 2
        settings = dataclasses.replace(settings, peers=names)
    if args.peer_cache:
        settings = dataclasses.replace(settings, peer_cache=args.peer_cache)
    if settings.rounds < 1 or settings.workers < 1:
        print("bench: --rounds and --workers must be >= 1", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if args.dir:
            workdir = Path(args.dir).resolve()
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        try:
            report = run_bench(settings, workdir)
        except (ServerError, LoadgenError) as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 1
    render_table(report, file=sys.stdout)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.profile and report.profile is not None:
        path = Path(args.profile)
        previous = path.read_text() if path.exists() else ""
        path.write_text(render_profile_markdown(report, previous))
        print(f"wrote {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
