"""Peer model servers for ``loadtest.bench``: MLServer and KServe's Python model server,
serving the benchmark's SavedModel over their Open Inference Protocol (v2) gRPC endpoint.

Each peer gets its own virtualenv, made by the bench under a cache directory
(``~/.cache/tf-gateway-bench/venvs/`` unless ``$TF_GATEWAY_BENCH_CACHE`` or ``--peer-cache``
says otherwise) and reused while its requirements are unchanged:

* ``python -m venv`` from the interpreter running the bench, then a ``.pth`` file that
  appends the project venv's ``site-packages`` to the peer's ``sys.path``. The peer's own
  ``site-packages`` comes first, so whatever pip installs there (MLServer's or KServe's
  pins: protobuf 6, pandas, fastapi, ...) wins; what pip finds already satisfied in the
  project venv (TensorFlow, numpy, grpcio, ...) is reused instead of downloaded. That
  saves ~600 MB and minutes per venv, and both peers run the very TensorFlow build the
  gateway and the baseline run. ``tensorflow==<the project's version>`` is part of every
  install, so pip's resolver keeps the peer's pins compatible with it (or fails: the
  peer is then reported unavailable).
* ``pip install`` from PyPI (``mlserver==MLSERVER_VERSION`` or ``kserve==KSERVE_VERSION``);
  the time it took is recorded with the venv.

Any failure (no network, a pin conflict, a server that does not start) raises
``PeerUnavailable`` with a one-line reason; the bench reports the peer as
``unavailable: <reason>`` and goes on.

The servers:

* **MLServer**: a custom runtime (``mlserver.MLModel`` subclass, ``MLSERVER_RUNTIME``) that
  loads the SavedModel with ``tf.saved_model.load`` and calls ``serving_default``;
  ``model-settings.json`` turns adaptive batching on (``max_batch_size`` 64,
  ``max_batch_time`` 2 ms); ``settings.json`` disables metrics and sets
  ``parallel_workers`` to 0: the model runs in the server's own process, next to the
  gRPC/REST front end and the adaptive batcher. MLServer's default (1: the model in a
  separate inference process, requests and responses passed between the two) was slower
  on the two shared cores, where the hand-off costs more than the second process gains
  (2026-12-02, same model, c=64: 504 req/s with 1 worker vs 694 with 0; c=1 p50 6.8 vs
  6.2 ms; without batching 398 vs 651 req/s).
* **KServe**: a ``kserve.Model`` subclass (``KSERVE_SCRIPT``) started with
  ``kserve.ModelServer(grpc_port=..., http_port=...).start([model])``: one process (one
  uvicorn REST worker, the gRPC server on the same event loop), ``predict`` called inline
  on the event loop as KServe does for a synchronous ``predict``; KServe has no server-side
  batching for custom models. Per-request latency logging is off.

Both leave TensorFlow's thread pools at their defaults, as the baseline does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CACHE",
    "KSERVE_SCRIPT",
    "KSERVE_VERSION",
    "MLSERVER_MAX_BATCH_SIZE",
    "MLSERVER_MAX_BATCH_TIME_S",
    "MLSERVER_PARALLEL_WORKERS",
    "MLSERVER_RUNTIME",
    "MLSERVER_VERSION",
    "PEERS",
    "PEER_NAMES",
    "PeerEnv",
    "PeerLaunch",
    "PeerSpec",
    "PeerUnavailable",
    "default_cache",
    "ensure_venv",
    "kserve_launch",
    "mlserver_launch",
    "mlserver_model_settings",
    "mlserver_settings",
    "oip_infer_ok",
    "pip_failure_reason",
    "prepare_launch",
    "project_site_packages",
    "requirements",
    "venv_dir",
    "write_kserve_dir",
    "write_mlserver_dir",
]

MLSERVER_VERSION = "1.7.1"
KSERVE_VERSION = "0.21.0"
MLSERVER_MAX_BATCH_SIZE = 64
MLSERVER_MAX_BATCH_TIME_S = 0.002
MLSERVER_PARALLEL_WORKERS = 0
PTH_NAME = "_tf_gateway_project_site.pth"
MARKER_NAME = "tf-gateway-bench.json"
INSTALL_TIMEOUT_S = 900.0
_RUNTIME_MODULE = "tf_savedmodel_runtime"
_RUNTIME_CLASS = "SavedModelRuntime"

Progress = Callable[[str], None]


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or started; ``str(exc)`` is a one-line reason."""


@dataclass(frozen=True)
class PeerSpec:
    """One peer server: its PyPI package and the module whose import proves the install."""

    name: str  # "mlserver", "kserve": the label of its runs
    title: str  # "MLServer", "KServe"
    package: str
    version: str
    module: str
    pins: tuple[str, ...] = ()  # extra requirements installed with the peer

    @property
    def requirement(self) -> str:
        """``package==version``."""
        return f"{self.package}=={self.version}"


PEERS: dict[str, PeerSpec] = {
    # uvloop 0.22+ raises in asyncio.get_event_loop() without a running loop, which
    # MLServer 1.7.1's parallel inference worker calls at start: its worker dies at once
    "mlserver": PeerSpec(
        "mlserver", "MLServer", "mlserver", MLSERVER_VERSION, "mlserver", ("uvloop<0.22",)
    ),
    "kserve": PeerSpec("kserve", "KServe", "kserve", KSERVE_VERSION, "kserve"),
}
PEER_NAMES: tuple[str, ...] = tuple(PEERS)


def default_cache() -> Path:
    """``$TF_GATEWAY_BENCH_CACHE`` or ``~/.cache/tf-gateway-bench`` (outside the repo)."""
    env = os.environ.get("TF_GATEWAY_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tf-gateway-bench"


DEFAULT_CACHE = default_cache()


def _project_version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def project_site_packages() -> list[str]:
    """The running interpreter's ``site-packages`` directories (purelib, platlib)."""
    paths = sysconfig.get_paths()
    seen: list[str] = []
    for key in ("purelib", "platlib"):
        path = paths.get(key)
        if path and path not in seen:
            seen.append(path)
    return seen


def requirements(peer: PeerSpec, tensorflow_version: str | None = None) -> list[str]:
    """What pip installs into the peer's venv: the peer, and TensorFlow pinned to the
    project's version (already satisfied through the ``.pth``, so the resolver only keeps
    the peer's pins compatible with it)."""
    tf_version = tensorflow_version or _project_version("tensorflow")
    reqs = [peer.requirement, *peer.pins]
    if tf_version:
        reqs.append(f"tensorflow=={tf_version}")
    return reqs


def venv_dir(cache: Path, peer: PeerSpec) -> Path:
    """``<cache>/venvs/<peer>-<version>-py<major><minor>``."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache / "venvs" / f"{peer.name}-{peer.version}-{py}"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _venv_site(venv: Path) -> Path:
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / py / "site-packages"


@dataclass(frozen=True)
class PeerEnv:
    """A ready peer venv."""

    peer: PeerSpec
    venv: Path
    python: Path
    install_s: float  # the pip install's wall time (when the venv was made)
    reused: bool  # True when an existing venv was reused (nothing installed this run)
    versions: dict[str, str] = field(default_factory=dict)  # what the venv imports

    @property
    def bin(self) -> Path:
        """The venv's ``bin`` directory."""
        return self.venv / "bin"


def pip_failure_reason(output: str, limit: int = 200) -> str:
    """One line out of a failed pip run: its first ``ERROR:`` line that is not the
    resolver's after-the-fact conflict notice, else its last non-empty line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("WARNING: Location")]
    errors = [
        ln
        for ln in lines
        if ln.startswith("ERROR:") and "does not currently take into account" not in ln
    ]
    reason = errors[0] if errors else (lines[-1] if lines else "no output")
    reason = reason.removeprefix("ERROR: ").strip()
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _marker(venv: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((venv / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _probe(python: Path, peer: PeerSpec, timeout: float = 180.0) -> dict[str, str]:
    """Import the peer and TensorFlow in the venv; their versions (``PeerUnavailable``)."""
    code = (
        "import importlib.metadata as m, json, os\n"
        "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
        f"import {peer.module}, tensorflow\n"
        "names = ('{pkg}', 'tensorflow', 'grpcio', 'protobuf', 'numpy')\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    ).replace("{pkg}", peer.package)
    try:
        done = subprocess.run(
            [str(python), "-c", code],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{peer.title} venv does not import: {exc}") from None
    if done.returncode != 0:
        tail = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise PeerUnavailable(f"{peer.title} venv does not import: {tail[-1] if tail else '?'}")
    try:
        versions = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise PeerUnavailable(f"{peer.title} venv: unexpected probe output") from None
    return {str(k): str(v) for k, v in versions.items()}


def ensure_venv(
    peer: PeerSpec,
    cache: Path | None = None,
    *,
    progress: Progress | None = None,
    install_timeout: float = INSTALL_TIMEOUT_S,
) -> PeerEnv:
    """The peer's venv, made (venv + ``.pth`` to the project's site-packages + pip install)
    unless one with the same requirements exists; raises ``PeerUnavailable``."""
    say = progress or (lambda _m: None)
    cache = cache or default_cache()
    venv = venv_dir(cache, peer)
    reqs = requirements(peer)
    sites = project_site_packages()
    marker = _marker(venv)
    if marker is not None and marker.get("requirements") == reqs and _venv_python(venv).exists():
        if marker.get("project_site_packages") != sites:
            # another checkout (a CI clone) of the same project: point the venv at its
            # site-packages; what pip installed there does not depend on it
            site = _venv_site(venv)
            site.mkdir(parents=True, exist_ok=True)
            (site / PTH_NAME).write_text("".join(f"{path}\n" for path in sites))
            marker["project_site_packages"] = sites
            (venv / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True))
        versions = {str(k): str(v) for k, v in dict(marker.get("versions") or {}).items()}
        return PeerEnv(peer, venv, _venv_python(venv), float(marker["install_s"]), True, versions)

    say(f"{peer.title}: creating {venv} and installing {' '.join(reqs)} from PyPI")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise PeerUnavailable(f"python -m venv failed: {pip_failure_reason(detail)}") from None
    site = _venv_site(venv)
    site.mkdir(parents=True, exist_ok=True)
    (site / PTH_NAME).write_text("".join(f"{path}\n" for path in sites))

    log = venv / "pip-install.log"
    argv = [
        str(_venv_python(venv)),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        *reqs,
    ]
    started = time.monotonic()
    try:
        with log.open("w") as out:
            done = subprocess.run(
                argv, check=False, stdout=out, stderr=subprocess.STDOUT, timeout=install_timeout
            )
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"pip install timed out after {install_timeout:g}s") from None
    except OSError as exc:
        raise PeerUnavailable(f"pip install could not run: {exc}") from None
    install_s = time.monotonic() - started
    if done.returncode != 0:
        reason = pip_failure_reason(log.read_text(errors="replace"))
        raise PeerUnavailable(f"pip install {peer.requirement} failed: {reason}")
    versions = _probe(_venv_python(venv), peer)
    (venv / MARKER_NAME).write_text(
        json.dumps(
            {
                "requirements": reqs,
                "project_site_packages": sites,
                "install_s": round(install_s, 1),
                "versions": versions,
            },
            indent=2,
        )
        + "\n"
    )
    say(f"{peer.title}: installed in {install_s:.0f} s ({versions.get(peer.package)})")
    return PeerEnv(peer, venv, _venv_python(venv), install_s, False, versions)


# --------------------------------------------------------------------------------------
# MLServer: custom runtime, model-settings.json, settings.json
# --------------------------------------------------------------------------------------

MLSERVER_RUNTIME = '''"""MLServer custom runtime serving a TensorFlow SavedModel's signature
(made by loadtest.peers for the tf-gateway benchmark)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    """``load`` loads the SavedModel at ``parameters.uri`` and picks its signature
    (``parameters.extra.signature``, default ``serving_default``); ``predict`` decodes
    every v2 input with NumpyCodec, calls the signature and encodes every output."""

    async def load(self) -> bool:
        params = self.settings.parameters
        extra = (params.extra if params is not None else None) or {}
        uri = params.uri if params is not None else None
        self._model = tf.saved_model.load(uri)
        self._fn = self._model.signatures[extra.get("signature", "serving_default")]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {inp.name: tf.constant(NumpyCodec.decode_input(inp)) for inp in payload.inputs}
        outputs = self._fn(**inputs)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, value.numpy()) for name, value in outputs.items()
            ],
        )
'''


def mlserver_settings(
    grpc_port: int, http_port: int, parallel_workers: int = MLSERVER_PARALLEL_WORKERS
) -> dict[str, Any]:
    """MLServer's ``settings.json``: loopback, the two ports, no metrics server,
    ``parallel_workers`` inference processes, no debug logging."""
    return {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_endpoint": None,
        "parallel_workers": parallel_workers,
        "debug": False,
        "load_models_at_startup": True,
    }


def mlserver_model_settings(
    model_dir: Path,
    model_name: str,
    *,
    signature: str = "serving_default",
    max_batch_size: int = MLSERVER_MAX_BATCH_SIZE,
    max_batch_time: float = MLSERVER_MAX_BATCH_TIME_S,
) -> dict[str, Any]:
    """MLServer's ``model-settings.json``: the custom runtime, adaptive batching
    (``max_batch_size`` requests or ``max_batch_time`` seconds), the SavedModel's path."""
    return {
        "name": model_name,
        "implementation": f"{_RUNTIME_MODULE}.{_RUNTIME_CLASS}",
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time,
        "parameters": {"uri": str(model_dir), "extra": {"signature": signature}},
    }


def write_mlserver_dir(
    root: Path, model_dir: Path, model_name: str, grpc_port: int, http_port: int
) -> Path:
    """``<root>/settings.json`` and ``<root>/<model_name>/{model-settings.json, runtime}``
    (the directory ``mlserver start`` serves); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(
        json.dumps(mlserver_settings(grpc_port, http_port), indent=2) + "\n"
    )
    model = root / model_name
    model.mkdir(exist_ok=True)
    settings = mlserver_model_settings(model_dir, model_name)
    (model / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (model / f"{_RUNTIME_MODULE}.py").write_text(MLSERVER_RUNTIME)
    return root


# --------------------------------------------------------------------------------------
# KServe: a kserve.Model in a small script
# --------------------------------------------------------------------------------------

KSERVE_SCRIPT = '''"""KServe model server for a TensorFlow SavedModel's signature
(made by loadtest.peers for the tf-gateway benchmark).

python kserve_server.py --model_dir DIR --model_name demo --grpc_port P --http_port Q
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kserve
import tensorflow as tf
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype


class SavedModel(kserve.Model):
    """``load`` loads the SavedModel and picks ``serving_default``; ``predict`` runs it on
    the v2 request's inputs (numpy) and returns every output as numpy (raw on gRPC)."""

    def __init__(self, name: str, model_dir: str, signature: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.signature = signature
        self.load()

    def load(self) -> bool:
        self._model = tf.saved_model.load(self.model_dir)
        self._fn = self._model.signatures[self.signature]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        inputs = {inp.name: tf.constant(inp.as_numpy()) for inp in payload.inputs}
        outputs = self._fn(**inputs)
        infer_outputs = []
        for name, value in outputs.items():
            array = value.numpy()
            infer_outputs.append(
                InferOutput(
                    name=name,
                    shape=list(array.shape),
                    datatype=from_np_dtype(array.dtype),
                    data=array,
                )
            )
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=infer_outputs,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--signature", default="serving_default")
    args, _ = parser.parse_known_args()
    model = SavedModel(args.model_name, args.model_dir, args.signature)
    kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_latency_logging=False,
    ).start([model])
'''


def write_kserve_dir(root: Path) -> Path:
    """``<root>/kserve_server.py``; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / "kserve_server.py"
    script.write_text(KSERVE_SCRIPT)
    return script


# --------------------------------------------------------------------------------------
# Launching and readiness
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerLaunch:
    """How to start one peer: argv, working directory, extra environment, its ports."""

    peer: PeerSpec
    argv: list[str]
    cwd: Path
    grpc_port: int
    http_port: int
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""  # one line describing the configuration (for the table)

    @property
    def target(self) -> str:
        """``127.0.0.1:<grpc_port>``: the v2 gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"


def mlserver_launch(
    env: PeerEnv, root: Path, model_dir: Path, model_name: str, grpc_port: int, http_port: int
) -> PeerLaunch:
    """``mlserver start <root>`` after writing its settings and runtime into ``root``."""
    write_mlserver_dir(root, model_dir, model_name, grpc_port, http_port)
    setup = (
        f"MLModel runtime; adaptive batching {MLSERVER_MAX_BATCH_SIZE} / "
        f"{MLSERVER_MAX_BATCH_TIME_S * 1000:g} ms; parallel_workers {MLSERVER_PARALLEL_WORKERS}"
    )
    return PeerLaunch(
        env.peer,
        [str(env.bin / "mlserver"), "start", str(root)],
        root,
        grpc_port,
        http_port,
        setup=setup,
    )


def kserve_launch(
    env: PeerEnv, root: Path, model_dir: Path, model_name: str, grpc_port: int, http_port: int
) -> PeerLaunch:
    """``python kserve_server.py ...`` (a ``kserve.Model``) after writing it into ``root``."""
    script = write_kserve_dir(root)
    argv = [
        str(env.python),
        str(script),
        "--model_dir",
        str(model_dir),
        "--model_name",
        model_name,
        "--grpc_port",
        str(grpc_port),
        "--http_port",
        str(http_port),
    ]
    setup = "kserve.Model; 1 process; no batching"
    return PeerLaunch(env.peer, argv, root, grpc_port, http_port, setup=setup)


_LAUNCHERS: dict[str, Callable[..., PeerLaunch]] = {
    "mlserver": mlserver_launch,
    "kserve": kserve_launch,
}


def prepare_launch(
    env: PeerEnv, root: Path, model_dir: Path, model_name: str, grpc_port: int, http_port: int
) -> PeerLaunch:
    """The launch of ``env.peer`` (its files written into ``root``)."""
    return _LAUNCHERS[env.peer.name](env, root, model_dir, model_name, grpc_port, http_port)


def oip_infer_ok(target: str, request: bytes, timeout: float = 5.0) -> tuple[bool, str]:
    """One v2 gRPC ``ModelInfer`` call with the serialized ``request``: (ok, error)."""
    import grpc

    from loadtest.loadgen import OIP_INFER_METHOD

    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        call = ch.unary_unary(OIP_INFER_METHOD)
        try:
            call(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else ""
            return False, f"{getattr(code, 'name', code)}: {details}"
    return True, ""


def popen_peer(launch: PeerLaunch, stderr_file: Path) -> subprocess.Popen[bytes]:
    """Start the peer in its own session (its workers in its process group)."""
    env: Mapping[str, str] = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        **launch.env,
    }
    env = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    with stderr_file.open("wb") as err:
        return subprocess.Popen(
            list(launch.argv),
            stdout=err,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=launch.cwd,
            env=dict(env),
            start_new_session=True,
        )


def tail(path: Path, lines: int = 3, width: int = 300) -> str:
    """The last non-empty lines of a log file, joined with ' | '."""
    with contextlib.suppress(OSError):
        text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(text[-lines:])[-width:]
    return ""


def wait_oip_ready(
    proc: subprocess.Popen[bytes],
    target: str,
    request: bytes,
    timeout: float,
    log: Path,
    title: str,
) -> float:
    """Block until ``ModelInfer`` answers on ``target``; seconds it took. Raises
    ``PeerUnavailable`` when the process exits or ``timeout`` passes."""
    started = time.monotonic()
    error = ""
    while True:
        code = proc.poll()
        if code is not None:
            raise PeerUnavailable(f"{title} exited with {code}: {tail(log)}")
        ok, error = oip_infer_ok(target, request, timeout=2.0)
        if ok:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise PeerUnavailable(f"{title} not ready after {timeout:g}s ({error})")
        time.sleep(0.5)


def children_by_parent() -> dict[int, list[int]]:
    """Every process's direct children, by parent pid (from ``/proc/*/stat``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    return parents


def descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren, ... (from ``/proc/*/stat``)."""
    parents = children_by_parent()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def summary_line(env: PeerEnv, launch: PeerLaunch | None = None) -> str:
    """``MLServer 1.7.1 (TensorFlow 2.21.0, protobuf 6.33.6): <setup>``."""
    v = env.versions
    text = f"{env.peer.title} {v.get(env.peer.package, env.peer.version)}"
    deps = ", ".join(f"{k} {v[k]}" for k in ("tensorflow", "grpcio", "protobuf") if k in v)
    text += f" ({deps})" if deps else ""
    return text + (f": {launch.setup}" if launch is not None and launch.setup else "")


def unknown_peers(names: Sequence[str]) -> list[str]:
    """The names in ``names`` that are not peers."""
    return [n for n in names if n not in PEERS]
