"""deploy/: every YAML parses, and the manifests agree with the gateway and each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ModelConfig, parse_config
from gateway.routing.arm_stats import SERVER_ERROR_CODES
from gateway.routing.rollout import RolloutPlan

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def _docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _by_kind() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in YAML_FILES:
        for doc in _docs(path):
            out[doc["kind"]] = doc
    return out


def test_there_are_manifests():
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/configmap.yaml",
        "k8s/pvc.yaml",
        "argo/analysis-template.yaml",
    } <= names
    assert (DEPLOY / "README.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yaml_parses(path: Path):
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def test_deployment():
    k = _by_kind()
    dep = k["Deployment"]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"] == dep["spec"]["selector"]["matchLabels"]
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8502"
    (c,) = pod["spec"]["containers"]
    assert [*c["command"], *c["args"]] == [
        "gateway",
        "serve",
        "--config",
        "/etc/gateway/gateway.yaml",
    ]
    assert {p["containerPort"] for p in c["ports"]} == {8500, 8502}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == 8500
    # every volume mount refers to a declared volume; the PVC and ConfigMap exist
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert {m["name"] for m in c["volumeMounts"]} <= set(volumes)
    assert (
        volumes["data"]["persistentVolumeClaim"]["claimName"]
        == k["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert volumes["config"]["configMap"]["name"] == k["ConfigMap"]["metadata"]["name"]


def test_service_and_pvc():
    k = _by_kind()
    svc = k["Service"]
    grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert (grpc["port"], grpc["appProtocol"]) == (8500, "grpc")
    assert svc["spec"]["selector"] == k["Deployment"]["spec"]["selector"]["matchLabels"]
    assert k["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_configmap_gateway_config_and_rollout_block(tmp_path):
    k = _by_kind()
    config = yaml.safe_load(k["ConfigMap"]["data"]["gateway.yaml"])
    assert config["server"]["port"] == 8500 and config["server"]["metrics_port"] == 8502
    (model,) = config["models"]
    plan = RolloutPlan.from_config(ModelConfig.model_validate(model))
    assert (plan.candidate, plan.primary) == (2, 1)
    # the gateway's own config loader accepts the whole file (paths aside) and agrees
    checked = parse_config({**config, "models": [{**model, "base_path": str(tmp_path)}]}, tmp_path)
    assert RolloutPlan.from_config(checked.models[0]) == plan
    assert checked.server.admin_token_env == "GATEWAY_ADMIN_TOKEN"
    assert plan.steps == (1.0, 5.0, 25.0, 50.0, 100.0)
    assert plan.gates.max_error_rate_ratio == 1.5
    # paths in the config live on the mounts of the Deployment
    (c,) = k["Deployment"]["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert any(model["base_path"].startswith(m + "/") for m in mounts)
    assert config["rollouts"]["state_dir"] in mounts
    # readiness asks the health service about the configured model
    assert c["readinessProbe"]["grpc"]["service"] == model["name"]


def test_analysis_template():
    tpl = _by_kind()["AnalysisTemplate"]
    assert tpl["apiVersion"] == "argoproj.io/v1alpha1"
    metrics = {m["name"]: m for m in tpl["spec"]["metrics"]}
    assert set(metrics) == {"divergence-rate", "error-rate-ratio", "p99-latency-ratio"}
    queries = {name: m["provider"]["prometheus"]["query"] for name, m in metrics.items()}
    assert "gateway_divergence_diverged_total" in queries["divergence-rate"]
    assert "gateway_divergence_compared_total" in queries["divergence-rate"]
    assert "gateway_arm_requests_total" in queries["error-rate-ratio"]
    assert "gateway_arm_latency_seconds_bucket" in queries["p99-latency-ratio"]
    for code in SERVER_ERROR_CODES:  # same server-error definition as ArmStats
        assert code in queries["error-rate-ratio"]
    declared = {a["name"] for a in tpl["spec"]["args"]}
    for query in queries.values():
        assert query.count("(") == query.count(")")
        for used in {part.split("}}")[0] for part in query.split("{{args.")[1:]}:
            assert used in declared
    for m in metrics.values():
        assert "result[0]" in m["successCondition"] and "result[0]" in m["failureCondition"]
