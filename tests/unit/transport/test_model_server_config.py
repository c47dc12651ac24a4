"""TF Serving's ModelServerConfig as the gateway's model list (one pure function, used by
HandleReloadConfigRequest and by --model_config_file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow_serving.config import model_server_config_pb2

from gateway.config import parse_config
from gateway.core.errors import ConfigError
from gateway.transport.model_server_config import apply_model_server_config


def _server_config(*models: dict) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for m in models:
        mc = config.model_config_list.config.add(name=m["name"], base_path=str(m["base_path"]))
        mc.model_platform = m.get("platform", "tensorflow")
        policy = m.get("policy")
        if policy == "all":
            mc.model_version_policy.all.SetInParent()
        elif isinstance(policy, list):
            mc.model_version_policy.specific.versions.extend(policy)
        elif isinstance(policy, int):
            mc.model_version_policy.latest.num_versions = policy
        for label, version in m.get("labels", {}).items():
            mc.version_labels[label] = version
    return config


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    for name in ("a", "b"):
        (tmp_path / name / "1").mkdir(parents=True)
    return tmp_path


def test_tf_servings_config_decides_models_paths_policies_and_labels(repos):
    base = parse_config({}, repos)
    config = apply_model_server_config(
        base,
        _server_config(
            {"name": "a", "base_path": repos / "a", "policy": [1, 2], "labels": {"stable": 1}},
            {"name": "b", "base_path": repos / "b", "policy": "all"},
        ),
    )
    a, b = config.models
    assert (a.name, a.base_path, a.version_policy.specific) == ("a", repos / "a", [1, 2])
    assert a.version_labels == {"stable": 1}
    assert b.version_policy.all == {} and b.version_labels == {}
    assert config.server == base.server  # only the model list changes


@pytest.mark.parametrize(("policy", "latest"), [(None, 1), (0, 1), (3, 3)])
def test_latest_policy_defaults_to_one_version(repos, policy, latest):
    spec = {"name": "a", "base_path": repos / "a"}
    if policy is not None:
        spec["policy"] = policy
    config = apply_model_server_config(parse_config({}, repos), _server_config(spec))
    assert config.models[0].version_policy.latest == latest


def test_the_yaml_entry_of_the_same_name_contributes_everything_else(repos):
    (repos / "old").mkdir()
    base = parse_config(
        {
            "models": [
                {
                    "name": "a",
                    "base_path": "old",
                    "version_policy": {"all": {}},
                    "batching": {"max_batch_size": 8},
                    "feature_checks": {"margin": 0.5},
                    "shadows": [{"version": 2}],
                }
            ]
        },
        repos,
    )
    config = apply_model_server_config(
        base, _server_config({"name": "a", "base_path": repos / "a"})
    )
    (a,) = config.models
    assert a.base_path == repos / "a" and a.version_policy.latest == 1  # TF Serving's
    assert a.batching.max_batch_size == 8 and a.feature_checks.margin == 0.5  # the YAML's
    assert a.shadows[0].version == 2


def test_relative_base_paths_resolve_against_the_current_directory(repos, monkeypatch):
    monkeypatch.chdir(repos)
    config = apply_model_server_config(
        parse_config({}, Path("/")), _server_config({"name": "a", "base_path": "a"})
    )
    assert config.models[0].base_path == repos / "a"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"name": "a", "base_path": "/no/such/dir"},
            "config.model_config_list.config[0].base_path: directory does not exist: /no/such/dir",
        ),
        (
            {"name": "a", "base_path": "A", "platform": "tensorflow_lite"},
            "config.model_config_list.config[0].model_platform: 'tensorflow_lite' is not served",
        ),
        (
            {"name": "a b", "base_path": "A"},
            "config.model_config_list.config[0]: name: String should match pattern",
        ),
        (
            {"name": "a", "base_path": "A", "labels": {"1": 1}},
            "config.model_config_list.config[0]: version_labels: label '1': expected a non-numeric",
        ),
    ],
)
def test_errors_name_the_entry_and_field(repos, spec, message):
    spec = {**spec, "base_path": str(spec["base_path"]).replace("A", str(repos / "a"))}
    with pytest.raises(ConfigError) as err:
        apply_model_server_config(parse_config({}, repos), _server_config(spec))
    assert str(err.value).startswith(message), str(err.value)


def test_duplicates_custom_configs_and_the_where_prefix(repos):
    a = {"name": "a", "base_path": repos / "a"}
    with pytest.raises(ConfigError, match=r"^m.config: model_config_list.config\[1\].name: dup"):
        apply_model_server_config(parse_config({}, repos), _server_config(a, a), "m.config: ")
    with pytest.raises(ConfigError, match=r"^config: expected a model_config_list"):
        apply_model_server_config(
            parse_config({}, repos), model_server_config_pb2.ModelServerConfig()
        )
