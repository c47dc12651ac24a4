"""The seed problem on Estimator-style TF1 exports (tf.Example signatures, session
semantics), end to end with the stock TF Serving stubs:

1. preprocessing skew: the model was trained on normalized features (the normalization
   lived in the training input pipeline); clients send raw values, and every request is
   flagged against the training statistics and the skew window drifts;
2. version divergence: two differently initialised versions, the second mirrored as a
   shadow, diverge request by request in the divergence log;
3. a broken artifact: a version whose `variables.index` was deleted is FAILED with the
   file named, and the previous version keeps answering.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.bundle.export import export_version
from gateway.core.states import VersionState
from gateway.samples import build_estimator_example_model, make_example
from tests.support import wait_compared

RAW_MEAN, RAW_STD = 50.0, 10.0
N = 120


@pytest.fixture(scope="session")
def tf1_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed_tf1")
    rng = np.random.default_rng(0)
    raw = rng.normal(RAW_MEAN, RAW_STD, size=(2000, 2)).astype(np.float32)
    normalized = (raw - RAW_MEAN) / RAW_STD  # what the model was trained on
    for version in (1, 2):
        w = np.random.default_rng(version).normal(size=(2, 2)).round(3)  # its own init
        src = build_estimator_example_model(root / f"src{version}", tuple(map(tuple, w)))
        export_version(src, root / "repo", version, train_features={"x": normalized}, golden_rows=0)
    return root / "repo"


def _classify(stub, x):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "est"
    request.input.example_list.examples.append(make_example(x.tolist()))
    return stub.Classify(request, timeout=30)


def test_the_seed_problem_on_tf1_exports(tf1_repo, tmp_path, gateway_factory):
    repo = tmp_path / "repo"
    shutil.copytree(tf1_repo, repo)
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "est",
                    "base_path": str(repo),
                    "version_policy": {"all": {}},
                    "primary": 1,
                    "shadows": [{"version": 2}],
                    "divergence": {"scores": {"kind": "probabilities", "max_abs": 0.01}},
                    "skew": {"min_values": 50},
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    admin = admin_pb2_grpc.AdminServiceStub(gw.channel)
    status = admin.GetStatus(admin_pb2.GetStatusRequest(model="est"), timeout=10)
    assert {v.runtime for v in status.models[0].versions} == {"tf1_session"}

    # 1. raw values where the model expects normalized ones: flagged, and the window drifts
    raw = np.random.default_rng(1).normal(RAW_MEAN, RAW_STD, size=(N, 2)).astype(np.float32)
    for x in raw:
        assert _classify(stub, x).model_spec.version.value == 1
    skew = admin.GetFeatureSkew(admin_pb2.GetFeatureSkewRequest(model="est"), timeout=10)
    (v1,) = [f for f in skew.features if f.version == 1 and f.feature == "x"]
    assert v1.num_values == 2 * N and v1.drifted and "js" in v1.crossed

    wait_compared(gw, "est", N, lane="shadow:2")
    log = gw.gateway.mirror._log
    assert log is not None and log.flush(10)
    records = [json.loads(line) for line in gw.divergence_log.read_text().splitlines()]
    flagged = [r for r in records if r["event"] == "divergence"]
    assert len(flagged) == N
    assert all(r["feature_mismatches"]["primary"] for r in flagged)  # every one out of range
    kinds = {m["kind"] for r in flagged for m in r["feature_mismatches"]["primary"]}
    assert "out_of_range" in kinds

    # 2. normalized requests (what training saw) are not flagged, and the shadow (its
    # own initialisation) diverges from the primary request by request
    for x in (raw - RAW_MEAN) / RAW_STD:
        _classify(stub, x)
    wait_compared(gw, "est", 2 * N, lane="shadow:2")
    assert log.flush(10)
    records = [json.loads(line) for line in gw.divergence_log.read_text().splitlines()]
    fresh = [r for r in records if r["event"] == "divergence"][N:]
    assert len(fresh) == N and not any(r["feature_mismatches"]["primary"] for r in fresh)
    diverged = sum(r["diverged"] for r in fresh)
    assert diverged > N // 2, diverged

    # 3. a version copied without its variables.index fails, naming the file
    shutil.copytree(repo / "2", repo / "3")
    (repo / "3" / "variables" / "variables.index").unlink()
    failed = gw.monitor.wait_for("est", 3, {VersionState.FAILED})
    assert "variables/variables.index" in failed.error
    assert _classify(stub, raw[0]).model_spec.version.value == 1
    status = admin.GetStatus(admin_pb2.GetStatusRequest(model="est"), timeout=10)
    states = {v.version: v.state for v in status.models[0].versions}
    assert states == {1: "AVAILABLE", 2: "AVAILABLE", 3: "FAILED"}
