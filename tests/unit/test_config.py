from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.core.errors import ConfigError


def test_defaults_and_relative_paths(tmp_path: Path):
    (tmp_path / "models" / "demo").mkdir(parents=True)
    cfg = parse_config(
        {
            "models": [{"name": "demo", "base_path": "models/demo"}],
            "logging": {"file": "logs/g.log"},
        },
        tmp_path,
    )
    model = cfg.models[0]
    assert model.base_path == (tmp_path / "models" / "demo").resolve()
    assert model.version_policy.latest == 1
    assert model.batching.max_batch_size == 64 and model.batching.batch_timeout_micros == 0
    assert cfg.server.port == 8500 and cfg.server.metrics_port == 8502
    assert cfg.logging.file == tmp_path / "logs" / "g.log"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"models": [{"name": "a", "base_path": "."}, {"name": "a", "base_path": "."}]},
            "models: duplicate model name 'a'",
        ),
        (
            {"models": [{"name": "a b", "base_path": "."}]},
            "models[0].name: String should match pattern",
        ),
        (
            {"models": [{"name": "a", "base_path": ".", "version_labels": {"1": 1}}]},
            "models[0].version_labels: label '1': expected a non-numeric name",
        ),
        (
            {"models": [{"name": "a", "base_path": ".", "version_policy": {"specific": []}}]},
            "models[0].version_policy: specific: expected at least one version",
        ),
        (
            {"lifecycle": {"poll_interval_seconds": 0}},
            "lifecycle.poll_interval_seconds: Input should be greater than 0",
        ),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path)
    assert str(err.value).startswith(message), str(err.value)


def test_each_worker_gets_its_own_divergence_log_capture_and_replica(tmp_path):
    from gateway.config import parse_config, per_worker

    (tmp_path / "m").mkdir()
    config = parse_config(
        {
            "logging": {"divergence_log": "logs/divergence.jsonl", "replica": "gw-a"},
            "rollouts": {"state_dir": "state"},
            "models": [
                {"name": "m", "base_path": "m", "capture": {"path": "cap/m.tfrecord"}},
                {"name": "n", "base_path": "m"},
            ],
        },
        tmp_path,
    )
    w1 = per_worker(config, 1)
    assert w1.logging.divergence_log == tmp_path / "logs" / "divergence.w1.jsonl"
    assert w1.logging.replica == "gw-a/w1"
    assert w1.models[0].capture.path == tmp_path / "cap" / "m.w1.tfrecord"
    assert w1.models[1].capture.path is None
    assert w1.rollouts.state_dir == config.rollouts.state_dir  # shared by design
    assert per_worker(config, 0).logging.divergence_log != w1.logging.divergence_log


def test_config_imports_nothing_of_the_project_but_the_errors_and_limits():
    import subprocess
    import sys

    code = "import sys, gateway.config; print(*(m for m in sys.modules if m.startswith('gateway')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    allowed = {
        "gateway",
        "gateway.config",
        "gateway.core",
        "gateway.core.errors",
        "gateway.core.limits",
    }
    assert set(out.stdout.split()) <= allowed


def test_feature_check_actions_are_completed_with_the_defaults():
    from gateway.config import DEFAULT_CHECK_ACTIONS, FeatureChecksConfig

    assert FeatureChecksConfig().actions == dict(DEFAULT_CHECK_ACTIONS)
    given = FeatureChecksConfig.model_validate({"actions": {"out_of_range": "reject"}})
    assert given.actions == {**DEFAULT_CHECK_ACTIONS, "out_of_range": "reject"}


def test_tf_serving_keys_resolve_and_validate(tmp_path):
    from gateway.config import per_worker

    config = parse_config(
        {
            "server": {
                "grpc_socket_path": "run/gw.sock",
                "grpc_channel_arguments": {"grpc.max_connection_age_ms": 30000, "grpc.x": "y"},
                "rest_api_port": 8501,
            },
            "lifecycle": {"max_load_retries": 0},
            "tfserving": {"model_config_file": "models.config", "enable_batching": True},
        },
        tmp_path,
    )
    assert config.server.grpc_socket_path == tmp_path / "run" / "gw.sock"
    assert config.server.grpc_channel_arguments["grpc.max_connection_age_ms"] == 30000
    assert config.tfserving.model_config_file == tmp_path / "models.config"
    assert config.tfserving.model_config_file_poll_wait_seconds == 0
    assert config.lifecycle.max_load_retries == 0
    assert parse_config({}, tmp_path).lifecycle.max_load_retries is None
    w1 = per_worker(config, 1)  # one socket listener; the REST port shared like the gRPC port
    assert w1.server.grpc_socket_path is None and w1.server.rest_api_port == 8501
    assert per_worker(config, 0).server.grpc_socket_path == config.server.grpc_socket_path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"server": {"grpc_channel_arguments": {"max_connection_age_ms": 1}}},
            "server.grpc_channel_arguments: 'max_connection_age_ms': expected a gRPC channel "
            "argument name starting with 'grpc.'",
        ),
        (
            {"server": {"grpc_channel_arguments": {"grpc.keepalive_time_ms": 1.5}}},
            "server.grpc_channel_arguments.grpc.keepalive_time_ms: expected an integer or a "
            "string, got 1.5",
        ),
        ({"server": {"port": 8500, "rest_api_port": 8500}}, "server: rest_api_port: must differ"),
        ({"lifecycle": {"max_load_retries": -1}}, "lifecycle.max_load_retries: Input should be"),
        (
            {"tfserving": {"batching_parameters_file": "b.config", "enable_batching": False}},
            "tfserving: batching_parameters_file is set while enable_batching is false",
        ),
    ],
)
def test_tf_serving_key_errors(tmp_path, data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path)
    assert str(err.value).startswith(message), str(err.value)
