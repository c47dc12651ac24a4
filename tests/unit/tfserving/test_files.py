"""TF Serving's text-format config files, read with its own protos."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import BatchingConfig
from gateway.core.errors import ConfigError
from gateway.tfserving import protos
from gateway.tfserving.files import (
    DEFAULT_PROMETHEUS_PATH,
    read_batching_parameters,
    read_model_server_config,
    read_prometheus_path,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_model_server_config_parses_with_tf_servings_proto(tmp_path):
    path = _write(
        tmp_path,
        "models.config",
        """
model_config_list {
  config {
    name: "a"
    base_path: "/models/a"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 3 } }
    version_labels { key: "stable" value: 1 }
  }
  config { name: "b" base_path: "/models/b" }
}
""",
    )
    config = read_model_server_config(path)
    assert type(config).DESCRIPTOR.full_name == "tensorflow.serving.ModelServerConfig"
    a, b = config.model_config_list.config
    assert (a.name, a.base_path, dict(a.version_labels)) == ("a", "/models/a", {"stable": 1})
    assert list(a.model_version_policy.specific.versions) == [1, 3]
    assert b.name == "b" and not b.HasField("model_version_policy")


def test_a_parse_error_names_file_line_column_and_field(tmp_path):
    path = _write(
        tmp_path,
        "models.config",
        'model_config_list {\n  config {\n    base_pth: "x"\n  }\n}\n',
    )
    with pytest.raises(ConfigError) as err:
        read_model_server_config(path)
    assert str(err.value) == (
        f'{path}:3:5: Message type "tensorflow.serving.ModelConfig" has no field named "base_pth".'
    )


def test_a_syntax_error_and_a_missing_file(tmp_path):
    path = _write(tmp_path, "models.config", "model_config_list {\n  config {\n")
    with pytest.raises(ConfigError, match=rf'^{path}:2:10: Expected "}}".'):
        read_model_server_config(path)
    with pytest.raises(ConfigError, match=r"file not found.*tensorflow.serving.ModelServerConfig"):
        read_model_server_config(tmp_path / "nope.config")


def test_batching_parameters_map_onto_every_models_batching(tmp_path):
    path = _write(
        tmp_path,
        "batching.config",
        """
max_batch_size { value: 32 }
batch_timeout_micros { value: 5000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 4 }
thread_pool_name { value: "model_server_batch_threads" }
allowed_batch_sizes: 8
allowed_batch_sizes: 32
pad_variable_length_inputs: true
""",
    )
    overrides = read_batching_parameters(path)
    assert dict(overrides.values) == {
        "max_batch_size": 32,
        "batch_timeout_micros": 5000,
        "num_batch_threads": 4,
    }
    assert overrides.ignored == (
        "thread_pool_name",
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
    )
    batching = overrides.apply(BatchingConfig(inline_max_micros=7))
    assert batching.max_batch_size == 32 and batching.batch_timeout_micros == 5000
    assert batching.num_batch_threads == 4
    assert batching.max_enqueued_requests == 100 * 32  # max_enqueued_batches * max_batch_size
    assert batching.inline_max_micros == 7 and batching.enabled  # not in the file: kept
    assert not overrides.apply(BatchingConfig(), enabled=False).enabled


def test_batching_fields_left_out_keep_the_models_values(tmp_path):
    path = _write(tmp_path, "batching.config", "max_enqueued_batches { value: 10 }\n")
    batching = read_batching_parameters(path).apply(BatchingConfig(max_batch_size=16))
    assert batching.max_batch_size == 16 and batching.max_enqueued_requests == 160


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_siz { value: 1 }", 'has no field named "max_batch_siz"'),
        ("num_batch_threads { value: 99 }", "num_batch_threads: Input should be less than"),
        ("max_enqueued_batches { value: 0 }", "max_enqueued_batches: expected at least 1"),
    ],
)
def test_invalid_batching_parameters(tmp_path, text, message):
    path = _write(tmp_path, "batching.config", text)
    with pytest.raises(ConfigError, match=message) as err:
        read_batching_parameters(path)
    assert str(err.value).startswith(str(path))


def test_batching_parameters_is_tf_servings_message():
    cls = protos.batching_parameters()
    assert cls.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    names = {f.name for f in cls.DESCRIPTOR.fields}
    assert {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches"} <= names
    assert protos.monitoring_config().DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("prometheus_config { enable: true }", DEFAULT_PROMETHEUS_PATH),
        ('prometheus_config { enable: true, path: "/metrics/tfs" }', "/metrics/tfs"),
        ('prometheus_config { enable: false, path: "/x" }', None),
        ("", None),
    ],
)
def test_monitoring_config(tmp_path, text, path):
    assert read_prometheus_path(_write(tmp_path, "monitoring.config", text)) == path


def test_monitoring_config_path_must_be_absolute(tmp_path):
    path = _write(tmp_path, "monitoring.config", 'prometheus_config { enable: true path: "m" }')
    with pytest.raises(ConfigError, match=r"prometheus_config.path: expected a path starting"):
        read_prometheus_path(path)
