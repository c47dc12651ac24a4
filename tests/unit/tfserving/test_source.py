"""TF Serving's files as the config source: the model config file decides the models, the
YAML adds gateway settings, the batching file sets every model's batching; polling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from tensorflow_serving.config import model_server_config_pb2

from gateway.core.errors import ConfigError
from gateway.tfserving import cli, flags
from gateway.tfserving.files import DEFAULT_PROMETHEUS_PATH
from gateway.tfserving.source import TfServingSource


def _models_config(path: Path, **models: Path) -> Path:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
        for name, base in models.items()
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"model_config_list {{\n{entries}}}\n")
    os.replace(tmp, path)  # atomically, as a deployment would
    return path


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    for name in ("a", "b"):
        (tmp_path / name / "1").mkdir(parents=True)
    return tmp_path


def _source(*argv: str) -> TfServingSource:
    args = cli.build_parser().parse_args(list(argv))
    return TfServingSource(Path(args.config) if args.config else None, flags.overrides(args))


def test_the_model_config_file_decides_and_the_yaml_adds_the_rest(repos, tmp_path):
    models = _models_config(tmp_path / "models.config", a=repos / "a", b=repos / "b")
    (tmp_path / "batching.config").write_text(
        "max_batch_size { value: 16 }\nmax_enqueued_batches { value: 4 }\n"
        'thread_pool_name { value: "x" }\n'
    )
    (tmp_path / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    gw = tmp_path / "gw.yaml"
    gw.write_text(
        yaml.safe_dump(
            {
                "tfserving": {
                    "model_config_file": "models.config",
                    "batching_parameters_file": "batching.config",
                    "monitoring_config_file": "monitoring.config",
                },
                "models": [
                    {"name": "a", "base_path": ".", "noise_sample_rate": 0.25},
                    {"name": "unused", "base_path": "."},
                ],
            }
        )
    )
    source = _source(f"--config={gw}", "--enable_batching")
    config = source.load()
    a, b = config.models
    assert (a.name, a.base_path, a.noise_sample_rate) == ("a", repos / "a", 0.25)
    assert (b.name, b.base_path, b.noise_sample_rate) == ("b", repos / "b", 0.0)
    for m in (a, b):  # the batching file applies to every model
        assert (m.batching.max_batch_size, m.batching.max_enqueued_requests) == (16, 64)
    assert source.prometheus_path == DEFAULT_PROMETHEUS_PATH
    assert source.poll_seconds == 0  # read once
    assert source.notes == [
        f"{tmp_path / 'batching.config'}: thread_pool_name accepted but without effect here"
    ]
    assert models.is_file()


def test_enable_batching_false_turns_every_models_batching_off(repos, tmp_path):
    models = _models_config(tmp_path / "models.config", a=repos / "a")
    config = _source(f"--model_config_file={models}", "--enable_batching=false").load()
    assert config.models[0].batching.enabled is False


def test_polling_sees_changes_keeps_the_old_config_on_errors(repos, tmp_path):
    models = _models_config(tmp_path / "models.config", a=repos / "a")
    source = _source(f"--model_config_file={models}", "--model_config_file_poll_wait_seconds=1")
    config = source.load()
    assert source.poll_seconds == 1
    assert source.poll(config) is None  # unchanged
    _models_config(models, b=repos / "b")
    new = source.poll(config)
    assert new is not None and [m.name for m in new.models] == ["b"]
    assert source.poll(new) is None
    models.write_text('model_config_list { config { nam: "c" } }\n')
    with pytest.raises(ConfigError, match=rf"^{models}:1:30: .*no field named \"nam\""):
        source.poll(new)
    _models_config(models, b=repos / "b")  # fixed back to what is applied: nothing to do
    assert source.poll(new) is None


def test_a_reload_request_merges_the_same_way(repos, tmp_path):
    gw = tmp_path / "gw.yaml"
    gw.write_text(yaml.safe_dump({"models": [{"name": "b", "base_path": ".", "primary": 1}]}))
    source = _source(f"--config={gw}", "--enable_batching=false")
    current = source.load()
    request = model_server_config_pb2.ModelServerConfig()
    request.model_config_list.config.add(name="b", base_path=str(repos / "b"))
    config = source.apply_model_server_config(current, request)
    (b,) = config.models
    assert b.base_path == repos / "b" and b.primary == 1 and b.batching.enabled is False


def test_an_invalid_file_at_start_names_it(repos, tmp_path):
    models = tmp_path / "models.config"
    models.write_text('model_config_list { config { name: "a" base_path: "/nope" } }')
    with pytest.raises(ConfigError) as err:
        _source(f"--model_config_file={models}").load()
    assert str(err.value) == (
        f"{models}: model_config_list.config[0].base_path: directory does not exist: /nope"
    )
