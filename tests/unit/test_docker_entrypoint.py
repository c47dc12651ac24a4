"""The image's entry point starts the gateway the way tensorflow/serving's image starts
TF Serving (`MODEL_NAME`, `MODEL_BASE_PATH`, ports 8500/8501), with stand-ins for the two
commands it may run, so only the script's own logic is under test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"


@pytest.fixture
def run(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gateway", "tensorflow_model_server"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" {name} "$@"\n')
        stub.chmod(0o755)

    def call(*args: str, config: Path | None = None, **env: str) -> list[str]:
        environ = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "MODEL_NAME": "model",
            "MODEL_BASE_PATH": "/models",
            "GATEWAY_CONFIG": str(config or tmp_path / "absent.yaml"),
            **env,
        }
        out = subprocess.run(
            ["sh", str(ENTRYPOINT), *args], env=environ, capture_output=True, text=True, check=True
        )
        return out.stdout.splitlines()

    return call


def test_like_tf_servings_image(run):
    assert run(MODEL_NAME="half_plus_two") == [
        "tensorflow_model_server",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=half_plus_two",
        "--model_base_path=/models/half_plus_two",
    ]
    extra = run("--enable_batching", "--file_system_poll_wait_seconds=5")
    assert extra[-2:] == ["--enable_batching", "--file_system_poll_wait_seconds=5"]
    assert "--model_base_path=/models/model" in extra


def test_a_model_config_file_replaces_model_name_and_base_path(run):
    out = run("--model_config_file=/models/models.config")
    assert out == [
        "tensorflow_model_server",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/models/models.config",
    ]


def test_a_gateway_config_or_command(run, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("models: []\n")
    assert run("--port=9000", config=config) == [
        "gateway",
        "serve",
        "--config",
        str(config),
        "--port=9000",
    ]
    assert run("health", "--target", "127.0.0.1:8500") == [
        "gateway",
        "health",
        "--target",
        "127.0.0.1:8500",
    ]


def test_the_script_is_executable():
    assert os.access(ENTRYPOINT, os.X_OK)
