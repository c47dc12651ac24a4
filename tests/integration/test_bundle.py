"""Bundles: each version applies its own preprocessing; a corrupted bundle file, a manifest
mismatch and a golden mismatch each fail the version with a specific reason while the
previous version keeps serving; named transforms, strings and graph transforms."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

import gateway
from gateway._proto.gateway.v1 import bundle_pb2, preprocessing_pb2
from gateway.bundle.format import GOLDEN, MANIFEST, PREPROCESSING, build_manifest
from gateway.lifecycle.states import VersionState
from tests.support import outputs_of, predict_request

RAW = np.array([[1.2], [2.5]], np.float32)


def _reseal(version_dir: Path) -> None:
    """Rewrite the manifest so only the tampering under test is detected."""
    (version_dir / MANIFEST).unlink()
    (version_dir / MANIFEST).write_bytes(
        build_manifest(version_dir, "training").SerializeToString()
    )


def _tamper_golden(v: Path) -> None:
    golden = bundle_pb2.GoldenRecords.FromString((v / GOLDEN).read_bytes())
    (name,) = golden.outputs.tensors
    t = golden.outputs.tensors[name]
    values = np.frombuffer(t.content, np.float32).copy()
    values[3] += 1.0
    t.content = values.tobytes()
    (v / GOLDEN).write_bytes(golden.SerializeToString())
    _reseal(v)


def _tamper_transform(v: Path) -> None:
    pre = preprocessing_pb2.Preprocessing.FromString((v / PREPROCESSING).read_bytes())
    std = pre.features[0].transforms[0].standardize
    std.mean[0] += 0.5  # serving would normalize differently from training
    (v / PREPROCESSING).write_bytes(pre.SerializeToString())
    _reseal(v)


def _wrong_checkpoint(v: Path, donor: Path) -> None:
    shutil.rmtree(v / "variables")
    shutil.copytree(donor / "variables", v / "variables")
    _reseal(v)


def _garbage_bundle_file(v: Path) -> None:
    (v / PREPROCESSING).write_bytes(os.urandom(200))
    _reseal(v)


def _unsealed_edit(v: Path) -> None:
    data = bytearray((v / PREPROCESSING).read_bytes())
    data[-1] ^= 0xFF
    (v / PREPROCESSING).write_bytes(bytes(data))


@pytest.fixture(scope="module")
def other_weights(seed_bundle, tmp_path_factory):
    """The same model with other weights (e.g. another training run): a 'wrong checkpoint'."""
    model = seed_bundle["model"]
    weights = model.get_weights()
    try:
        model.set_weights([w + 0.3 for w in weights])
        return gateway.export_version(model, tmp_path_factory.mktemp("donor") / "m", 1)
    finally:
        model.set_weights(weights)


CASES = {
    "manifest mismatch": (
        _unsealed_edit,
        "manifest mismatch: assets.extra/gateway/preprocessing.pb: sha256 does not match the manifest",
    ),
    "corrupted bundle file": (_garbage_bundle_file, "bundle file unreadable"),
    "golden mismatch": (
        _tamper_golden,
        "self test: output 'output_0' differs from the golden records",
    ),
    "serving transform differs from training": (
        _tamper_transform,
        "self test: feature 'x' differs from the golden records",
    ),
    "wrong checkpoint": (None, "self test: output 'output_0' differs"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_bundle_fails_with_reason_previous_keeps_serving(
    case, seed_bundle, other_weights, tmp_path, gateway_factory
):
    tamper, reason = CASES[case]
    base = tmp_path / "fraud"
    shutil.copytree(seed_bundle["with"], base)
    gw = gateway_factory({"models": [{"name": "fraud", "base_path": str(base)}]})
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    before = outputs_of(stub.Predict(predict_request("fraud", {"x": RAW})))
    staging = tmp_path / "staging"
    shutil.copytree(base / "1", staging)
    if tamper is None:
        _wrong_checkpoint(staging, other_weights)
    else:
        tamper(staging)
    os.rename(staging, base / "2")
    status = gw.monitor.wait_for("fraud", 2, {VersionState.FAILED})
    assert reason in status.error, status.error
    resp = stub.Predict(predict_request("fraud", {"x": RAW}))
    assert resp.model_spec.version.value == 1
    np.testing.assert_array_equal(outputs_of(resp)["output_0"], before["output_0"])


def test_each_version_uses_its_own_preprocessing(tmp_path, gateway_factory):
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input(shape=(1,), name="x")
    model = keras.Model(
        inp, keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")(inp)
    )
    rng = np.random.default_rng(1)
    x1 = rng.normal(10.0, 2.0, size=(300, 1)).astype(np.float32)
    x2 = rng.normal(-5.0, 0.5, size=(300, 1)).astype(np.float32)
    for version, x in ((1, x1), (2, x2)):
        norm = keras.layers.Normalization()
        norm.adapt(x)
        gateway.export_version(
            model, tmp_path / "m", version, preprocessing={"x": norm}, train_features={"x": x}
        )
    gw = gateway_factory(
        {"models": [{"name": "m", "base_path": str(tmp_path / "m"), "version_policy": {"all": {}}}]}
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    raw = np.array([[10.0], [-5.0]], np.float32)
    for version, x in ((1, x1), (2, x2)):
        got = outputs_of(stub.Predict(predict_request("m", {"x": raw}, version=version)))[
            "output_0"
        ]
        expected = (raw - x.mean()) / x.std()  # identity model: the output is the normalized input
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_named_transforms_strings_and_graph_transform(tmp_path, gateway_factory):
    """Two raw features (a float and a string category) with named transforms feeding a
    two-input Keras model, plus a tf.function graph transform producing an extra input."""
    import keras

    rng = np.random.default_rng(2)
    n = 400
    amount = rng.lognormal(3.0, 1.0, size=(n, 1)).astype(np.float64)
    country = rng.choice(np.array([b"DE", b"FR", b"US", b"JP"], dtype=object), size=(n,))
    a_in = keras.Input(shape=(1,), name="amount")
    c_in = keras.Input(shape=(), dtype="int64", name="country")
    r_in = keras.Input(shape=(1,), name="ratio")
    emb = keras.layers.Flatten()(keras.layers.Embedding(8, 2)(keras.layers.Reshape((1,))(c_in)))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()([a_in, emb, r_in]))
    model = keras.Model([a_in, c_in, r_in], out)

    @tf.function(input_signature=[{"amount": tf.TensorSpec([None, 1], tf.float32)}])
    def ratio(features):
        return {"ratio": features["amount"] / (1.0 + tf.abs(features["amount"]))}

    gateway.export_version(
        model,
        tmp_path / "m",
        1,
        preprocessing={
            "amount": ["log1p", "standardize"],
            "country": {"kind": "vocabulary", "num_oov_buckets": 1},
        },
        train_features={"amount": amount, "country": country},
        graph_transform=ratio,
        categorical=["country"],
    )
    gw = gateway_factory({"models": [{"name": "m", "base_path": str(tmp_path / "m")}]})
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    raw_amount = np.array([[20.0], [500.0], [3.0]])
    raw_country = np.array([b"FR", b"US", b"XX"], dtype=object)
    got = outputs_of(
        stub.Predict(predict_request("m", {"amount": raw_amount, "country": raw_country}))
    )["output_0"]
    la = np.log1p(amount)
    a = ((np.log1p(raw_amount) - la.mean()) / la.std()).astype(np.float32)
    vocab = sorted({b"DE", b"FR", b"US", b"JP"}, key=lambda v: (-list(country).count(v), v))
    idx = np.array([vocab.index(c) + 1 if c in vocab else 0 for c in raw_country], np.int64)
    expected = model.predict([a, idx, a / (1.0 + np.abs(a))], verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # unseen category "XX" is reported; a string sent for the float feature is rejected cleanly
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(
            predict_request(
                "m", {"amount": np.array([[b"1"]], dtype=object), "country": raw_country[:1]}
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "amount" in err.value.details()


def test_skew_window_drift_reported_by_admin(seed_bundle, gateway_factory):
    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "fraud",
                    "base_path": str(seed_bundle["with"]),
                    "skew": {
                        "window_values": 1000,
                        "min_values": 50,
                        "check_interval_seconds": 0.1,
                    },
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    admin = admin_pb2_grpc.AdminServiceStub(gw.channel)
    rng = np.random.default_rng(3)
    for _ in range(10):  # drawn from the training distribution
        stub.Predict(
            predict_request("fraud", {"x": rng.uniform(1, 3, size=(20, 1)).astype(np.float32)})
        )
    report = admin.GetFeatureSkew(admin_pb2.GetFeatureSkewRequest(model="fraud"))
    (feat,) = report.features
    assert feat.feature == "x" and feat.version == 1 and feat.num_values == 200 and not feat.drifted
    for _ in range(20):  # drifted: shifted to [2.5, 4]
        stub.Predict(
            predict_request("fraud", {"x": rng.uniform(2.5, 4, size=(20, 1)).astype(np.float32)})
        )
    (feat,) = admin.GetFeatureSkew(admin_pb2.GetFeatureSkewRequest(model="fraud")).features
    assert feat.drifted and feat.js > 0.1 and "js" in feat.crossed
