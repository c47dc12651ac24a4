"""The container image, built from the repository's Dockerfile and run the way
`tensorflow/serving`'s image is run (a model directory mounted at /models/<name>,
MODEL_NAME), answers TF Serving's own client; its HEALTHCHECK passes (and fails against
a wrong target); nothing in it runs as root.

Engines: rootful podman, or docker with a reachable daemon; skipped, with each engine's
error, when neither can run a container here. Where podman's default OCI runtime cannot
start containers (crun on hybrid cgroups v1/v2, raised rlimits without CAP_SYS_RESOURCE,
as in some sandboxes) the test uses runc with rlimits not above the current ones, and
builds with chroot isolation.

The base image (the Dockerfile's BASE_IMAGE): $TF_GATEWAY_BASE_IMAGE, else
python:3.11-slim when the engine has it or can pull it, else a Debian bookworm rootfs
(Python 3.11) that mmdebstrap makes from the Debian mirror, imported once as
localhost/tf-gateway-base:bookworm.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.samples import build_half_plus_two_tf2
from tests.support import predict_request, wait_serving

pytestmark = [pytest.mark.slow, pytest.mark.image, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/tf-gateway:pytest"
LOCAL_BASE = "localhost/tf-gateway-base:bookworm"
BUILD_TIMEOUT = 2400  # a cold build downloads TensorFlow


@dataclass
class Engine:
    exe: str
    build_opts: list[str] = field(default_factory=list)
    run_opts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.exe).name

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [self.exe, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"{self.name} {' '.join(args[:3])} ... exited {out.returncode}: "
                f"{out.stderr.strip()[-3000:]}"
            )
        return out


def _error(out: subprocess.CompletedProcess[str]) -> str:
    lines = (out.stderr or out.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {out.returncode}"


def _base_image(engine: Engine, problems: list[str]) -> str | None:
    """A base image with Python 3.11 as `python`, present in the engine's store."""
    wanted = os.environ.get("TF_GATEWAY_BASE_IMAGE")
    if wanted:
        return wanted
    if engine("image", "inspect", "python:3.11-slim", check=False).returncode == 0:
        return "python:3.11-slim"
    pulled = engine("pull", "docker.io/library/python:3.11-slim", timeout=300, check=False)
    if pulled.returncode == 0:
        return "docker.io/library/python:3.11-slim"
    problems.append(f"{engine.name} pull python:3.11-slim: {_error(pulled)}")
    if engine("image", "inspect", LOCAL_BASE, check=False).returncode == 0:
        return LOCAL_BASE
    if shutil.which("mmdebstrap") is None:
        problems.append("no mmdebstrap to make a local Debian base image")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "rootfs.tar"
        made = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python-is-python3,ca-certificates",
                "bookworm",
                str(tar),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if made.returncode != 0:
            problems.append(f"mmdebstrap: {_error(made)}")
            return None
        imported = engine("import", str(tar), LOCAL_BASE, timeout=600, check=False)
        if imported.returncode != 0:
            problems.append(f"{engine.name} import: {_error(imported)}")
            return None
    return LOCAL_BASE


def _capped_ulimits() -> list[str]:
    opts = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, _ = resource.getrlimit(which)
        n = 8192 if soft == resource.RLIM_INFINITY else min(soft // 2, 8192)
        opts += ["--ulimit", f"{name}={n}:{n}"]
    return opts


def _find_engine() -> tuple[Engine, str] | str:
    """(engine, base image), or why none works."""
    problems: list[str] = []
    for exe in ("podman", "docker"):
        path = shutil.which(exe)
        if path is None:
            problems.append(f"{exe}: not installed")
            continue
        engine = Engine(path)
        info = engine("info", timeout=60, check=False)
        if info.returncode != 0:
            problems.append(f"{exe} info: {_error(info)}")
            continue
        base = _base_image(engine, problems)
        if base is None:
            continue
        candidates = [([], [])]
        if exe == "podman":
            engine.build_opts = ["--format", "docker"]  # OCI images drop HEALTHCHECK
            if shutil.which("runc"):
                candidates.append(
                    (["--isolation", "chroot"], ["--runtime", "runc", *_capped_ulimits()])
                )
        for build_opts, run_opts in candidates:
            probe = engine("run", "--rm", *run_opts, base, "true", timeout=120, check=False)
            if probe.returncode == 0:
                engine.build_opts += build_opts
                engine.run_opts = run_opts
                return engine, base
            problems.append(f"{exe} run {' '.join(run_opts) or '(defaults)'}: {_error(probe)}")
    return "no container engine can build and run the image here: " + "; ".join(problems)


def _pip_cert_mounts(engine: Engine, tmp: Path) -> list[str]:
    """Where this machine's pip trusts an extra CA (PIP_CERT), the build's pip does too."""
    cert = os.environ.get("PIP_CERT")
    if engine.name != "podman" or not cert or not Path(cert).is_file():
        return []
    conf = tmp / "pip.conf"
    conf.write_text("[global]\ncert = /etc/ssl/certs/host-pip-ca.pem\n")
    return [
        "--network",
        "host",
        "-v",
        f"{cert}:/etc/ssl/certs/host-pip-ca.pem:ro",
        "-v",
        f"{conf}:/etc/pip.conf:ro",
    ]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, str]:
    found = _find_engine()
    if isinstance(found, str):
        pytest.skip(found)
    engine, base = found
    tmp = tmp_path_factory.mktemp("image-build")
    engine(
        "build",
        *engine.build_opts,
        *_pip_cert_mounts(engine, tmp),
        "--build-arg",
        f"BASE_IMAGE={base}",
        "-t",
        IMAGE,
        str(ROOT),
        timeout=BUILD_TIMEOUT,
    )
    return engine, IMAGE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def container(image: tuple[Engine, str], tmp_path: Path) -> Iterator[tuple[Engine, str, str]]:
    engine, tag = image
    model = tmp_path / "models" / "half_plus_two"
    build_half_plus_two_tf2(model / "1", b=2.0)
    for path in [tmp_path / "models", *(tmp_path / "models").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's user
    port = _free_port()
    name = f"tf-gateway-pytest-{os.getpid()}-{port}"
    engine(
        "run",
        "-d",
        "--name",
        name,
        *engine.run_opts,
        "-p",
        f"127.0.0.1:{port}:8500",
        "-e",
        "MODEL_NAME=half_plus_two",
        "-v",
        f"{model}:/models/half_plus_two:ro",
        tag,
    )
    try:
        yield engine, name, f"127.0.0.1:{port}"
    finally:
        engine("rm", "-f", name, check=False)


def test_the_image_serves_tf_servings_client_healthily_as_non_root(container):
    engine, name, target = container

    def logs() -> str:
        out = engine("logs", name, check=False)
        return (out.stdout + out.stderr)[-4000:]

    try:
        wait_serving(target, "half_plus_two", timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncontainer logs:\n{logs()}") from None

    # the stock TF Serving client, as against tensorflow/serving's image
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        x = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
        response = stub.Predict(predict_request("half_plus_two", {"x": x}), timeout=60)
    assert response.model_spec.version.value == 1
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), x * 0.5 + 2.0)

    # the image's HEALTHCHECK, run as the engine runs it: passes, and fails off target
    (config,) = json.loads(engine("image", "inspect", IMAGE).stdout)
    check = (config.get("Config") or {}).get("Healthcheck") or config.get("Healthcheck")
    assert check, f"the image has no HEALTHCHECK ({engine.name} build options: {engine.build_opts})"
    kind, *argv = check["Test"]
    assert kind == "CMD" and "gateway health" in " ".join(argv)
    ok = engine("exec", name, *argv, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr + logs()
    bad = engine("exec", "-e", "GATEWAY_HEALTH_TARGET=127.0.0.1:1", name, *argv, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    if engine.name == "podman":
        run = engine("healthcheck", "run", name, check=False)
        assert run.returncode == 0, run.stdout + run.stderr

    # nobody is root: the image's user, the server process (pid 1), a process exec'd in
    assert (config.get("Config") or config)["User"] == "10001"
    status = engine("exec", name, "cat", "/proc/1/status").stdout
    (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
    assert uids == ["10001"] * 4
    assert engine("exec", name, "id", "-u").stdout.strip() == "10001"
