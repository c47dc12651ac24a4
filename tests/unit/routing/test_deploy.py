"""deploy/: every YAML parses, and the manifests agree with the gateway and each other.

Two kustomize variants share deploy/k8s/common/ (Service, PodDisruptionBudget):
`file-store` (rollout state in a directory on a ReadWriteMany volume, flock) and
`redis-store` (rollout state in Redis: a StatefulSet, or an external server; no RWX)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import ModelConfig, parse_config
from gateway.routing.arm_stats import SERVER_ERROR_CODES
from gateway.routing.rollout import RolloutPlan

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S = DEPLOY / "k8s"
VARIANTS = ("file-store", "redis-store")
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
GATEWAY = "tf-gateway"
REDIS = "tf-gateway-redis"

Objects = dict[tuple[str, str], dict[str, Any]]


def _docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _resources(directory: Path) -> list[Path]:
    """The manifest files a kustomization lists, following directory resources."""
    (kustomization,) = _docs(directory / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    out: list[Path] = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml: {resource} does not exist"
        out += _resources(path) if path.is_dir() else [path]
    return out


def _objects(variant: str) -> Objects:
    """(kind, name) -> object, for everything `kubectl apply -k deploy/k8s/<variant>` creates."""
    out: Objects = {}
    for path in _resources(K8S / variant):
        for doc in _docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{variant}: {key} declared twice"
            out[key] = doc
    return out


def _of_kind(objs: Objects, kind: str) -> list[dict[str, Any]]:
    return [o for (k, _), o in objs.items() if k == kind]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """env name -> (Secret name, key), for the env vars taken from Secrets."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def _gateway_config(objs: Objects) -> dict[str, Any]:
    return yaml.safe_load(objs["ConfigMap", "tf-gateway-config"]["data"]["gateway.yaml"])


def _access_modes(objs: Objects) -> list[str]:
    """Access modes of every PVC and StatefulSet volume claim template."""
    modes = [
        m for pvc in _of_kind(objs, "PersistentVolumeClaim") for m in pvc["spec"]["accessModes"]
    ]
    for sts in _of_kind(objs, "StatefulSet"):
        for tpl in sts["spec"].get("volumeClaimTemplates", []):
            modes += tpl["spec"]["accessModes"]
    return modes


def test_there_are_manifests():
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {
        "k8s/common/kustomization.yaml",
        "k8s/common/service.yaml",
        "k8s/common/pdb.yaml",
        "k8s/file-store/kustomization.yaml",
        "k8s/file-store/deployment.yaml",
        "k8s/file-store/configmap.yaml",
        "k8s/file-store/pvc.yaml",
        "k8s/redis-store/kustomization.yaml",
        "k8s/redis-store/deployment.yaml",
        "k8s/redis-store/configmap.yaml",
        "k8s/redis-store/models-pvc.yaml",
        "k8s/redis-store/redis.yaml",
        "argo/analysis-template.yaml",
    } <= names
    assert (DEPLOY / "README.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yaml_parses(path: Path):
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def test_every_manifest_is_in_a_kustomization():
    listed = {p for variant in VARIANTS for p in _resources(K8S / variant)}
    for path in K8S.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path in listed, f"{path.relative_to(DEPLOY)} is in no kustomization"


@pytest.mark.parametrize("variant", VARIANTS)
def test_kubectl_kustomize_renders_the_same_objects(variant: str):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: the kustomizations are checked by hand only")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / variant)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout) if d}
    assert rendered == set(_objects(variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment(variant: str):
    k = _objects(variant)
    (dep,) = _of_kind(k, "Deployment")
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"] == dep["spec"]["selector"]["matchLabels"]
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8502"
    c = _container(dep)
    assert [*c["command"], *c["args"]] == [
        "gateway",
        "serve",
        "--config",
        "/etc/gateway/gateway.yaml",
    ]
    assert {p["containerPort"] for p in c["ports"]} == {8500, 8502}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == 8500
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert _secret_refs(c)["GATEWAY_ADMIN_TOKEN"] == ("tf-gateway-admin", "token")
    # every volume mount refers to a declared volume; the PVC and ConfigMap exist
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {m["name"] for m in mounts.values()} <= set(volumes)
    assert volumes["config"]["configMap"]["name"] == "tf-gateway-config"
    assert ("ConfigMap", "tf-gateway-config") in k
    models = volumes[mounts["/models"]["name"]]
    assert mounts["/models"]["readOnly"] is True
    (pvc,) = _of_kind(k, "PersistentVolumeClaim")
    assert models["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    if variant == "file-store":
        assert mounts["/models"]["name"] == "data"
        assert mounts["/var/lib/gateway/rollouts"]["name"] == "data"
    else:
        # nothing in the pod is shared with the other replicas but the read-only models
        claims = [v for v in volumes.values() if "persistentVolumeClaim" in v]
        assert claims == [models]
        assert models["persistentVolumeClaim"]["readOnly"] is True


@pytest.mark.parametrize("variant", VARIANTS)
def test_service_and_pdb(variant: str):
    k = _objects(variant)
    (dep,) = _of_kind(k, "Deployment")
    labels = dep["spec"]["selector"]["matchLabels"]
    svc = k["Service", GATEWAY]
    grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert (grpc["port"], grpc["appProtocol"]) == (8500, "grpc")
    assert svc["spec"]["selector"] == labels
    assert k["PodDisruptionBudget", GATEWAY]["spec"]["selector"]["matchLabels"] == labels


def test_file_store_shares_a_read_write_many_volume():
    k = _objects("file-store")
    assert k["PersistentVolumeClaim", "tf-gateway-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert not _of_kind(k, "StatefulSet")


def test_redis_store_has_no_read_write_many_volume():
    k = _objects("redis-store")
    modes = _access_modes(k)
    assert modes and "ReadWriteMany" not in modes
    assert k["PersistentVolumeClaim", "tf-gateway-models"]["spec"]["accessModes"] == [
        "ReadOnlyMany"
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_configmap_gateway_config_and_rollout_block(variant: str, tmp_path, monkeypatch):
    k = _objects(variant)
    config = _gateway_config(k)
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
    (dep,) = _of_kind(k, "Deployment")
    c = _container(dep)
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert any(model["base_path"].startswith(m + "/") for m in mounts)
    # readiness asks the health service about the configured model
    assert c["readinessProbe"]["grpc"]["service"] == model["name"]
    store = checked.rollouts.store
    if variant == "file-store":
        assert store.kind == "file"
        assert config["rollouts"]["state_dir"] in mounts
        return
    assert store.kind == "redis" and "state_dir" not in config["rollouts"]
    # the url names the Redis Service of the variant, on its port
    url = urlsplit(store.url)
    svc = k["Service", url.hostname]
    assert url.port in {p["port"] for p in svc["spec"]["ports"]}
    assert svc["spec"]["selector"] == k["StatefulSet", REDIS]["spec"]["selector"]["matchLabels"]
    # the password comes from the Secret the Redis server uses, through password_env
    assert store.password_env is not None and store.password_file is None
    assert store.password_env in _secret_refs(c)
    # and the store the gateway would open from it accepts it (it connects lazily)
    from gateway.routing.redis_store import RedisStateStore

    monkeypatch.setenv(store.password_env, "secret")
    assert RedisStateStore.from_config(store).key_prefix == store.key_prefix


def test_redis_secret_references_match():
    k = _objects("redis-store")
    config = _gateway_config(k)
    gateway_refs = _secret_refs(_container(k["Deployment", GATEWAY]))
    redis_refs = _secret_refs(_container(k["StatefulSet", REDIS]))
    secret = gateway_refs[config["rollouts"]["store"]["password_env"]]
    assert secret == (REDIS, "password")
    assert redis_refs == {"REDIS_PASSWORD": secret, "REDISCLI_AUTH": secret}


def test_redis_statefulset():
    k = _objects("redis-store")
    sts = k["StatefulSet", REDIS]
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == REDIS
    pod = sts["spec"]["template"]
    labels = sts["spec"]["selector"]["matchLabels"]
    assert pod["metadata"]["labels"] == labels
    # the gateway's Service, PDB and pods never select the Redis pod, and vice versa
    gateway_labels = k["Deployment", GATEWAY]["spec"]["selector"]["matchLabels"]
    assert labels != gateway_labels
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    c = _container(sts)
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("redis", 6379)
    (svc_port,) = k["Service", REDIS]["spec"]["ports"]
    assert (svc_port["port"], svc_port["targetPort"]) == (6379, "redis")
    assert "redis-cli ping" in " ".join(c["readinessProbe"]["exec"]["command"])
    assert c["livenessProbe"]["tcpSocket"]["port"] == "redis"
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # mounts: the data claim template, the config map, the memory volume for auth.conf
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert set(mounts.values()) <= set(volumes) | claims
    assert mounts["/data"] in claims
    assert volumes[mounts["/etc/redis"]]["configMap"]["name"] == "tf-gateway-redis-config"
    assert volumes[mounts["/run/redis"]]["emptyDir"]["medium"] == "Memory"
    script = c["args"][0]
    assert "/etc/redis/redis.conf" in script and "/run/redis/auth.conf" in script
    # only the gateway's pods may connect
    policy = k["NetworkPolicy", REDIS]["spec"]
    assert policy["podSelector"]["matchLabels"] == labels
    (rule,) = policy["ingress"]
    assert [f["podSelector"]["matchLabels"] for f in rule["from"]] == [gateway_labels]
    assert [p["port"] for p in rule["ports"]] == [6379]


def _redis_conf(k: Objects) -> dict[str, str]:
    text = k["ConfigMap", "tf-gateway-redis-config"]["data"]["redis.conf"]
    lines = [ln.split(None, 1) for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
    return {ln[0]: ln[1] if len(ln) > 1 else "" for ln in lines if ln[0] != "rename-command"}


def test_redis_persistence_and_memory_policy():
    conf = _redis_conf(_objects("redis-store"))
    # AOF, no RDB snapshots: a restarted Redis keeps every rollout
    assert (conf["appendonly"], conf["appendfsync"], conf["save"]) == ("yes", "everysec", '""')
    assert conf["dir"] == "/data"
    # rollout state has no TTL: nothing may be evicted
    assert conf["maxmemory-policy"] == "noeviction"
    limit = _container(_objects("redis-store")["StatefulSet", REDIS])["resources"]["limits"]
    assert limit["memory"].endswith("Mi") and conf["maxmemory"].endswith("mb")
    assert int(conf["maxmemory"][:-2]) < int(limit["memory"][:-2])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_starts_from_the_manifest_and_the_gateway_config_reaches_it(tmp_path, monkeypatch):
    """The StatefulSet's start script and redis.conf, run by a real redis-server (data
    dir, port and bind address moved for the test), and the gateway's store, opened from
    the ConfigMap's `rollouts.store` with the password from the same variable."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make sysdeps installs it)")
    import asyncio

    import redis

    from gateway.config import RolloutStoreConfig
    from gateway.routing.redis_store import RedisStateStore

    k = _objects("redis-store")
    port = _free_port()
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    conf = k["ConfigMap", "tf-gateway-redis-config"]["data"]["redis.conf"]
    conf = (
        conf.replace("port 6379", f"port {port}")
        .replace("bind 0.0.0.0", "bind 127.0.0.1")
        .replace("dir /data", f"dir {tmp_path / 'data'}")
    )
    (tmp_path / "etc" / "redis.conf").write_text(conf)
    script = (
        _container(k["StatefulSet", REDIS])["args"][0]
        .replace("/etc/redis/", f"{tmp_path / 'etc'}/")
        .replace("/run/redis/", f"{tmp_path / 'run'}/")
    )
    password = "0123abcd" * 8
    proc = subprocess.Popen(
        ["sh", "-c", script],
        env={**os.environ, "REDIS_PASSWORD": password},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        authed = redis.Redis(port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert authed.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        assert authed.config_get("appendonly") == {"appendonly": "yes"}
        assert authed.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert (tmp_path / "run" / "auth.conf").stat().st_mode & 0o077 == 0
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()

        store_cfg = _gateway_config(k)["rollouts"]["store"]
        local = RolloutStoreConfig.model_validate(
            {**store_cfg, "url": f"redis://127.0.0.1:{port}/0"}
        )
        assert local.password_env is not None
        monkeypatch.setenv(local.password_env, password)

        async def ping() -> None:
            store = RedisStateStore.from_config(local)
            try:
                await store.ping()
            finally:
                await store.close()

        asyncio.run(ping())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def test_analysis_template():
    (tpl,) = _docs(DEPLOY / "argo" / "analysis-template.yaml")
    assert tpl["kind"] == "AnalysisTemplate"
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
