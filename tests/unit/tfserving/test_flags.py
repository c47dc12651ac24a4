"""TF Serving's flags -> the gateway's config (flags override the YAML)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.core.errors import ConfigError
from gateway.tfserving import cli, flags
from gateway.tfserving.source import TfServingSource


def _args(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def _load(*argv: str):
    args = _args(*argv)
    source = TfServingSource(Path(args.config) if args.config else None, flags.overrides(args))
    return source.load()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "m" / "1").mkdir(parents=True)
    return tmp_path / "m"


def test_the_one_model_of_model_name_and_base_path(repo):
    config = _load("--port=9000", "--model_name=m", f"--model_base_path={repo}")
    assert [(m.name, m.base_path) for m in config.models] == [("m", repo)]
    assert config.server.port == 9000
    assert config.logging.divergence_log is None  # no YAML: nothing written to the cwd


def test_model_name_defaults_to_tf_servings_default(repo):
    assert _load(f"--model_base_path={repo}").models[0].name == "default"


def test_relative_paths_are_relative_to_the_current_directory(repo, monkeypatch):
    monkeypatch.chdir(repo.parent)
    config = _load("--model_base_path=m", "--grpc_socket_path=gw.sock")
    assert config.models[0].base_path == repo
    assert config.server.grpc_socket_path == repo.parent / "gw.sock"


@pytest.mark.parametrize(
    ("argv", "enabled"),
    [
        ([], None),
        (["--enable_batching"], True),
        (["--enable_batching=true"], True),
        (["--enable_batching=1"], True),
        (["--enable_batching=false"], False),
        (["--enable_batching", "false"], False),
    ],
)
def test_boolean_flags_tf_serving_style(repo, argv, enabled):
    args = _args(f"--model_base_path={repo}", *argv)
    assert args.enable_batching is enabled
    config = _load(f"--model_base_path={repo}", *argv)
    assert config.models[0].batching.enabled is (True if enabled is None else enabled)


def test_mapped_flags_set_their_keys(repo):
    config = _load(
        f"--model_base_path={repo}",
        "--rest_api_port=8601",
        "--file_system_poll_wait_seconds=5",
        "--enable_model_warmup=false",
        "--max_num_load_retries=3",
        "--load_retry_interval_micros=250000",
        "--num_load_threads=0",
        "--tensorflow_session_parallelism=2",
        "--tensorflow_inter_op_parallelism=3",
        "--enable_signature_method_name_check",
        "--enable_serialization_as_tensor_content=true",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=30000,grpc.lb_policy_name=x",
    )
    server, lifecycle = config.server, config.lifecycle
    assert server.rest_api_port == 8601
    assert lifecycle.poll_interval_seconds == 5 and lifecycle.warmup is False
    assert lifecycle.max_load_retries == 3
    assert lifecycle.retry_initial_seconds == lifecycle.retry_max_seconds == 0.25
    assert lifecycle.load_threads == 1
    assert (server.tf_intra_op_threads, server.tf_inter_op_threads) == (2, 3)
    assert server.signature_method_name_check is True
    assert server.response_encoding == "tensor_content"
    assert server.grpc_channel_arguments == {
        "grpc.max_connection_age_ms": 30000,  # integers as integers, as TF Serving
        "grpc.lb_policy_name": "x",
    }


def test_zero_means_what_it_means_in_tf_serving(repo):
    config = _load(
        f"--model_base_path={repo}", "--file_system_poll_wait_seconds=0", "--rest_api_port=0"
    )
    assert config.lifecycle.poll_interval_seconds == flags.SCAN_ONCE_SECONDS
    assert config.server.rest_api_port is None


def test_flags_override_the_yaml_and_the_yaml_adds_the_rest(repo, tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"port": 1234, "grpc_channel_arguments": {"grpc.a": 1, "grpc.b": 2}},
                "lifecycle": {"load_threads": 2},
                "models": [
                    {"name": "m", "base_path": str(tmp_path), "noise_sample_rate": 0.5},
                    {"name": "other", "base_path": str(tmp_path)},
                ],
            }
        )
    )
    config = _load(
        f"--config={path}",
        "--port=9000",
        "--model_name=m",
        f"--model_base_path={repo}",
        "--grpc_channel_arguments=grpc.b=3",
    )
    assert config.server.port == 9000 and config.lifecycle.load_threads == 2
    assert config.server.grpc_channel_arguments == {"grpc.a": 1, "grpc.b": 3}
    (m,) = config.models  # the flags name the one model, as in TF Serving
    assert m.base_path == repo and m.noise_sample_rate == 0.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num_load_threads=100"], "--num_load_threads: lifecycle.load_threads: Input should"),
        (
            ["--model_base_path=/no/such/dir"],
            "--model_base_path: models[0].base_path: directory does not exist: /no/such/dir",
        ),
        (
            ["--grpc_channel_arguments=max_connection_age_ms=1"],
            "--grpc_channel_arguments: server.grpc_channel_arguments: 'max_connection_age_ms': "
            "expected a gRPC channel argument name starting with 'grpc.'",
        ),
        (["--grpc_channel_arguments=grpc.x"], "--grpc_channel_arguments: 'grpc.x': expected KEY"),
        (["--model_name=m"], "--model_name: needs --model_base_path"),
        (["--ssl_config_file=ssl.config"], "--ssl_config_file: not supported (TLS: use server.tls"),
        (["--use_alts_credentials"], "--use_alts_credentials: not supported"),
        (
            ["--model_config_file_poll_wait_seconds=-1"],
            "--model_config_file_poll_wait_seconds: expected >= 0",
        ),
    ],
)
def test_invalid_flags_name_the_flag(argv, message):
    with pytest.raises(ConfigError) as err:
        _load(*argv)
    assert str(err.value).startswith(message), str(err.value)


def test_real_but_unsupported_flags_are_accepted_with_a_warning(repo):
    args = _args(
        f"--model_base_path={repo}",
        "--per_process_gpu_memory_fraction=0.5",
        "--tensorflow_session_config_file=s.config",
        "--saved_model_tags=serve",
        "--use_alts_credentials=false",
    )
    assert flags.warnings(args) == [
        "--tensorflow_session_config_file is accepted but has no effect here (not supported yet)",
        "--per_process_gpu_memory_fraction is accepted but has no effect here (not supported yet)",
    ]
    flags.overrides(args)  # no error: ALTS off asks for nothing


def test_every_tf_serving_flag_is_known_exactly_once():
    names = [f.name for f in (*flags.MAPPED, *flags.NO_EFFECT, *flags.REFUSED)]
    assert len(names) == len(set(names))
    assert (
        "enable_signature_method_name_check" in names and "tensorflow_session_parallelism" in names
    )


def test_entry_point_errors(capsys, repo):
    assert cli.main(["--model_base_pth=/x"]) == 2
    assert "unknown flag(s): --model_base_pth=/x" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert "no models to serve" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("TensorFlow ModelServer: tf-gateway")


def test_workers_get_the_same_flags(repo):
    args = _args("--config=gw.yaml", "--port=1", f"--model_base_path={repo}", "--enable_batching")
    assert cli.serve_argv(args) == [
        "--config",
        "gw.yaml",
        f"--model_base_path={repo}",
        "--enable_batching=true",
    ]
