"""Classify and Regress on the one data plane, end to end with the stock TF Serving stubs:
split by an active canary rollout, mirrored to a shadow with divergence records, and
checked against the versions' training statistics, exactly like Predict."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.bundle.export import export_version
from gateway.routing.router import routing_hash
from gateway.samples import build_estimator_example_model, make_example
from tests.support import wait_compared, wait_until

WEIGHTS = {1: ((1.0, -1.0), (0.5, 2.0)), 2: ((1.0, -1.0), (0.5, 1.0))}
BIAS = {1: 0.0, 2: 0.25}
REQUESTS = 120


@pytest.fixture(scope="session")
def estimator_bundles(tmp_path_factory):
    """Two TF1 Estimator-style versions (tf.Example signatures) that answer differently,
    each shipping training statistics of its raw feature `x` (2 floats, N(0, 1))."""
    root = tmp_path_factory.mktemp("estimator_bundles")
    train = {"x": np.random.default_rng(0).normal(size=(1000, 2)).astype(np.float32)}
    for version in (1, 2):
        src = build_estimator_example_model(root / f"src{version}", WEIGHTS[version], BIAS[version])
        export_version(src, root / "repo", version, train_features=train, golden_rows=0)
    return root / "repo"


def _expected_scores(version: int, x: np.ndarray) -> np.ndarray:
    logits = x @ np.asarray(WEIGHTS[version], dtype=np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def gw(estimator_bundles, tmp_path, gateway_factory):
    return gateway_factory(
        {
            "rollouts": {"state_dir": str(tmp_path / "state"), "tick_seconds": 0.05},
            "models": [
                {
                    "name": "est",
                    "base_path": str(estimator_bundles),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                    "primary": "stable",
                    "shadows": [{"version": "canary"}],
                    "divergence": {
                        "scores": {"kind": "probabilities", "max_abs": 0.001},
                        "outputs": {"kind": "regression", "max_abs": 0.001},
                    },
                    "rollout": {
                        "candidate": "canary",
                        "routing_key": {"header": "x-user-id"},
                        "steps": [50, 100],
                        "min_requests_per_step": 1_000_000,  # hold at 50 %
                        "min_step_seconds": 0,
                        "gates": {
                            "max_divergence_rate": None,
                            "max_error_rate_ratio": None,
                            "max_p99_latency_ratio": None,
                        },
                        "auto_start": True,
                    },
                }
            ],
        }
    )


def _running(gw) -> admin_pb2.RolloutStatus:
    admin = admin_pb2_grpc.AdminServiceStub(gw.channel)
    return wait_until(
        lambda: (
            (s := admin.GetRollout(admin_pb2.GetRolloutRequest(model="est"))).status == "running"
            and s
        ),
        60,
        "the rollout of 'est' to start",
    )


def _records(path: Path) -> list[dict]:
    out = []
    for file in sorted(path.parent.glob(path.name + "*")):
        out += [json.loads(line) for line in file.read_text().splitlines()]
    return out


def _xs(n: int) -> np.ndarray:
    xs = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32)
    xs[::10] = 50.0  # every tenth request is far outside the training range
    return xs


def _send(gw, method: str, xs: np.ndarray) -> list[tuple[str, int, object]]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    out = []
    for i, x in enumerate(xs):
        if method == "Classify":
            request = classification_pb2.ClassificationRequest()
        else:
            request = regression_pb2.RegressionRequest()
            request.model_spec.signature_name = "regress"
        request.model_spec.name = "est"
        request.input.example_list.examples.append(make_example(x.tolist()))
        key = f"user-{i}"
        response = getattr(stub, method)(request, metadata=[("x-user-id", key)], timeout=30)
        out.append((key, response.model_spec.version.value, response.result))
    return out


@pytest.mark.parametrize("method", ["Classify", "Regress"])
def test_split_mirrored_and_checked_like_predict(gw, method):
    status = _running(gw)
    xs = _xs(REQUESTS)
    answers = _send(gw, method, xs)

    # the canary split: every key goes where the routing hash says, and answers are right
    for (key, version, result), x in zip(answers, xs, strict=True):
        expected = 2 if routing_hash("est", key, status.rollout_id) < 0.5 else 1
        assert version == expected, key
        if method == "Classify":
            (classification,) = result.classifications
            assert [c.label for c in classification.classes] == ["neg", "pos"]
            scores = [c.score for c in classification.classes]
            np.testing.assert_allclose(scores, _expected_scores(version, x[None])[0], rtol=1e-5)
        else:
            (regression,) = result.regressions
            assert regression.value == pytest.approx(float(x.sum()) + BIAS[version], rel=1e-5)
    canary = sum(1 for _, v, _ in answers if v == 2)
    assert 0 < canary < REQUESTS

    # rollout statistics count every split request, per arm
    admin = admin_pb2_grpc.AdminServiceStub(gw.channel)
    stats = admin.GetRollout(admin_pb2.GetRolloutRequest(model="est"))
    assert (stats.primary.requests, stats.canary.requests) == (REQUESTS - canary, canary)

    # mirrored: primary answers to the shadow lane, canary answers compared with the primary
    wait_compared(gw, "est", REQUESTS - canary, lane="shadow:canary")
    wait_compared(gw, "est", canary, lane="canary")
    log = gw.gateway.mirror._log
    assert log is not None and log.flush(10)
    records = [r for r in _records(gw.divergence_log) if r["event"] == "divergence"]
    by_lane = {c: [r for r in records if r["comparison"] == c] for c in ("shadow", "canary")}
    assert len(by_lane["shadow"]) == REQUESTS - canary
    assert len(by_lane["canary"]) == canary
    for record in records:
        assert (record["primary_version"], record["shadow_version"]) == (1, 2)
        x = np.asarray([record["features"]["x"]], dtype=np.float32)
        gap = np.abs(_expected_scores(1, x) - _expected_scores(2, x)).max()
        if method == "Regress" or gap > 0.002:  # the scores rule's max_abs is 0.001
            assert record["diverged"] is True, json.dumps(record)
        elif gap < 0.0005:  # e.g. saturated by an outlier: both answer [1, 0]
            assert record["diverged"] is False, json.dumps(record)
        assert record["protocol"] == "tfs_grpc"
        assert record["rows"] == 1
        assert record["features"]["x"]  # the raw tf.Example feature, decoded
    # feature checks against training statistics, on both sides of each comparison
    flagged = [r for r in records if r["feature_mismatches"]["primary"]]
    assert len(flagged) == REQUESTS // 10
    for record in flagged:
        kinds = {
            m["kind"] for side in ("primary", "shadow") for m in record["feature_mismatches"][side]
        }
        assert "out_of_range" in kinds
        assert record["feature_mismatches"]["shadow"]


def test_classify_on_a_regress_signature_names_the_method(gw):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "est"
    request.model_spec.signature_name = "regress"
    request.input.example_list.examples.append(make_example([1.0, 2.0]))
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(request, timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "Expected classification signature outputs to contain at least one of "
        '"classes" or "scores"' in err.value.details()
    )


def _multi(tasks: list[tuple[str, str, str]], x=(1.0, 2.0)):
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.append(make_example(list(x)))
    return request


CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def test_multi_inference_runs_every_task_on_one_version(gw):
    _running(gw)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    x = np.array([1.0, 2.0], dtype=np.float32)
    response = stub.MultiInference(
        _multi([("est", "serving_default", CLASSIFY), ("est", "regress", REGRESS)], x),
        metadata=[("x-user-id", "user-7")],
        timeout=30,
    )
    classify, regress = response.results
    version = classify.model_spec.version.value
    assert regress.model_spec.version.value == version
    assert (classify.model_spec.signature_name, regress.model_spec.signature_name) == (
        "serving_default",
        "regress",
    )
    scores = [c.score for c in classify.classification_result.classifications[0].classes]
    np.testing.assert_allclose(scores, _expected_scores(version, x[None])[0], rtol=1e-5)
    (value,) = regress.regression_result.regressions
    assert value.value == pytest.approx(3.0 + BIAS[version])


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "tasks: expected at least one inference task"),
        (
            [("est", "serving_default", CLASSIFY), ("other", "regress", REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "must access the same model name",
        ),
        (
            [("est", "regress", REGRESS), ("est", "regress", REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress",
        ),
        (
            [("est", "predict", "tensorflow/serving/predict")],
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name",
        ),
    ],
)
def test_multi_inference_refuses_what_tf_serving_refuses(gw, tasks, code, message):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.MultiInference(_multi(tasks), timeout=30)
    assert err.value.code() is code
    assert message in err.value.details()
