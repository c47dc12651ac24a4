"""TF Serving's command line and config files, unchanged: `tensorflow_model_server` (the
installed entry point) and `gateway serve` as real processes, called with the stock
`tensorflow_serving.apis` stubs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from gateway.samples import build_half_plus_two
from gateway.workers import free_port
from tests.support import predict_request, wait_serving, wait_until

BIN = Path(sys.executable).parent
TENSORFLOW_MODEL_SERVER = BIN / "tensorflow_model_server"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
X = np.array([1.0, 2.0, 5.0], dtype=np.float32)


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, Path]:
    """half_plus_two (y = x/2 + 2) as model `a`, half_plus_three as model `b`."""
    root = tmp_path_factory.mktemp("tfs_cli")
    build_half_plus_two(root / "a" / "1", b=2.0)
    build_half_plus_two(root / "b" / "1", b=3.0)
    return {"a": root / "a", "b": root / "b"}


class Served:
    """A serve command line as a child process: stdout (the JSON log and the `listening
    on` line) and stderr go to files; SIGTERM (then SIGKILL) on exit."""

    def __init__(self, argv: list[str], workdir: Path) -> None:
        self.argv = argv
        self.workdir = workdir
        self.out = workdir / "out.log"
        self.err = workdir / "err.log"
        self.proc: Any = None

    def __enter__(self) -> Served:
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=err, env=ENV, cwd=self.workdir, text=True
            )
        wait_until(
            lambda: "listening on" in self.out.read_text() or self.proc.poll() is not None,
            180,
            "the `listening on` line",
            seen=lambda: self.err.read_text()[-2000:],
        )
        assert self.proc.poll() is None, self.err.read_text()[-3000:]
        return self

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log records named `name` so far."""
        records = []
        for line in self.out.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    records.append(record)
        return records

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def _predict(channel: grpc.Channel, model: str, x: np.ndarray = X) -> Any:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(predict_request(model, {"x": x}), timeout=30)


def _status(channel: grpc.Channel, model: str) -> str:
    """The model's first version state as TF Serving names it, or the error code."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
        reply = stub.GetModelStatus(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name
    state = reply.model_version_status[0].state
    return get_model_status_pb2.ModelVersionStatus.State.Name(state)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _model_config(**models: Path) -> str:
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{p}"\n    model_platform: "tensorflow"\n  }}\n'
        for n, p in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"


def test_tensorflow_model_server_flags_serve_a_model_and_prometheus_on_the_rest_port(
    repos, tmp_path
):
    port, rest_port = free_port(), free_port()
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config {\n  enable: true\n}\n")
    argv = [
        str(TENSORFLOW_MODEL_SERVER),
        f"--port={port}",
        f"--rest_api_port={rest_port}",
        "--model_name=m",
        f"--model_base_path={repos['a']}",
        f"--monitoring_config_file={monitoring}",
        "--per_process_gpu_memory_fraction=0.5",  # TF Serving's, without effect here
    ]
    with Served(argv, tmp_path) as served:
        wait_serving(f"127.0.0.1:{port}", "m")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = _predict(channel, "m")
        assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
        assert response.model_spec.version.value == 1

        url = f"http://127.0.0.1:{rest_port}"
        with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'gateway_version_state{model="m",state="AVAILABLE",version="1"} 1.0' in metrics
        assert (
            'gateway_requests_total{code="OK",method="Predict",model="m",protocol="tfs_grpc",version="1"}'
            in (metrics)
        )
        # TF Serving's REST API on the same port, as its Docker image is probed and called
        with urllib.request.urlopen(f"{url}/v1/models/m", timeout=10) as r:
            assert json.loads(r.read()) == {
                "model_version_status": [
                    {
                        "version": "1",
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
        predict = urllib.request.Request(
            f"{url}/v1/models/m:predict", data=b'{"instances": [1.0, 2.0, 5.0]}'
        )
        with urllib.request.urlopen(predict, timeout=10) as r:
            assert json.loads(r.read()) == {"predictions": [2.5, 3.0, 4.5]}
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/v1/models/nope", timeout=10)
        assert err.value.code == 404 and "nope" in json.loads(err.value.read())["error"]
    assert served.proc.returncode == 0
    stderr = served.err.read_text()
    assert "warning: --per_process_gpu_memory_fraction is accepted but has no effect" in stderr
    assert not (tmp_path / "logs").exists()  # no YAML: nothing written to the cwd


def test_model_config_file_is_polled_models_added_and_removed(repos, tmp_path):
    port = free_port()
    models = tmp_path / "models.config"
    _write_atomically(models, _model_config(a=repos["a"]))
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        f"--port={port}",
        f"--model_config_file={models}",
        "--model_config_file_poll_wait_seconds=1",
    ]
    target = f"127.0.0.1:{port}"
    with Served(argv, tmp_path) as served, grpc.insecure_channel(target) as channel:
        wait_serving(target, "a")
        assert list(_predict(channel, "a").outputs["y"].float_val) == [2.5, 3.0, 4.5]
        assert _status(channel, "b") == "NOT_FOUND"

        # an unparsable edit is logged and the config in force kept
        _write_atomically(models, 'model_config_list {\n  config {\n    nam: "b"\n')
        invalid = wait_until(
            lambda: served.events("model_config_file_invalid"),
            30,
            "model_config_file_invalid in the log",
        )
        assert f"{models}:3:5" in invalid[0]["error"] and 'named "nam"' in invalid[0]["error"]
        assert _status(channel, "a") == "AVAILABLE"

        # add b and remove a (availability preserving: b is loaded before a goes)
        _write_atomically(models, _model_config(b=repos["b"]))
        wait_until(
            lambda: _status(channel, "b") == "AVAILABLE" and _status(channel, "a") == "NOT_FOUND",
            60,
            "b AVAILABLE and a NOT_FOUND",
            seen=lambda: (_status(channel, "a"), _status(channel, "b")),
            interval=0.1,
        )
        assert list(_predict(channel, "b").outputs["y"].float_val) == [3.5, 4.0, 5.5]
        (applied,) = served.events("model_config_file_applied")
        assert sorted(applied["changes"]) == ["added model b", "removed model a"]


def test_a_broken_model_config_file_exits_naming_file_line_and_error(tmp_path):
    models = tmp_path / "models.config"
    models.write_text('model_config_list {\n  config {\n    base_pth: "/models/a"\n  }\n}\n')
    result = subprocess.run(
        [str(TENSORFLOW_MODEL_SERVER), "--port=0", f"--model_config_file={models}"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"tensorflow_model_server: error: {models}:3:5: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "base_pth".'
    )


def test_unix_socket_and_grpc_channel_arguments(repos, tmp_path):
    port, sock = free_port(), tmp_path / "gw.sock"
    sock.write_text("")  # not a socket: refused, never removed
    argv = [
        str(TENSORFLOW_MODEL_SERVER),
        f"--port={port}",
        "--model_name=m",
        f"--model_base_path={repos['a']}",
        f"--grpc_socket_path={sock}",
        # applied after the gateway's own options: this one overrides its 4 MiB limit
        "--grpc_channel_arguments=grpc.max_connection_age_ms=60000,"
        "grpc.max_receive_message_length=4096",
    ]
    refused = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
    assert refused.returncode == 2
    assert f"server.grpc_socket_path: {sock} exists and is not a socket" in refused.stderr
    sock.unlink()
    with Served(argv, tmp_path):
        wait_serving(f"unix:{sock}", "m")
        assert sock.is_socket()
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            assert list(_predict(channel, "m").outputs["y"].float_val) == [2.5, 3.0, 4.5]
            with pytest.raises(grpc.RpcError) as err:
                _predict(channel, "m", np.ones(2000, np.float32))  # ~8 kB > 4096 bytes
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # host:port as well
            assert _predict(channel, "m").model_spec.version.value == 1
    assert not sock.exists()  # removed at shutdown


def test_a_channel_argument_that_is_not_grpc_is_refused(repos):
    result = subprocess.run(
        [
            str(TENSORFLOW_MODEL_SERVER),
            f"--model_base_path={repos['a']}",
            "--grpc_channel_arguments=max_connection_age_ms=60000",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tensorflow_model_server: error: --grpc_channel_arguments: "
        "server.grpc_channel_arguments: 'max_connection_age_ms': expected a gRPC channel "
        "argument name starting with 'grpc.' (e.g. grpc.max_connection_age_ms)"
    )
