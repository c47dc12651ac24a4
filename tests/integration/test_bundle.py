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
from gateway.core.states import VersionState
from tests.support import in_process, outputs_of, predict_request

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


def _truncated_bundle_file(v: Path) -> None:
    data = (v / PREPROCESSING).read_bytes()
    (v / PREPROCESSING).write_bytes(data[: len(data) // 2])  # cut inside the one feature entry
    _reseal(v)


def _manifest_deleted(v: Path) -> None:
    (v / MANIFEST).unlink()  # must not switch verification off


def _unlisted_file(v: Path) -> None:
    (v / "assets.extra" / "gateway" / "notes.txt").write_text("added after export")


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
    "corrupted bundle file": (
        _truncated_bundle_file,
        "assets.extra/gateway/preprocessing.pb: cannot parse as gateway.v1.Preprocessing",
    ),
    "manifest deleted": (
        _manifest_deleted,
        "manifest mismatch: assets.extra/gateway/manifest.pb: missing, but the version has "
        "gateway bundle files",
    ),
    "file added after export": (
        _unlisted_file,
        "manifest mismatch: assets.extra/gateway/notes.txt: not listed in the manifest",
    ),
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
    assert status.error.startswith(reason), status.error
    resp = stub.Predict(predict_request("fraud", {"x": RAW}))
    assert resp.model_spec.version.value == 1
    np.testing.assert_array_equal(outputs_of(resp)["output_0"], before["output_0"])
    v1 = gw.monitor.get("fraud", 1)
    assert v1 is not None and v1.state is VersionState.AVAILABLE


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


def test_skew_window_drift_reported_by_admin(seed_bundle, gateway_factory, capsys):
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

    from gateway.cli import main

    assert main(["stats", "fraud", "--target", f"127.0.0.1:{gw.gateway.port}"]) == 0
    lines = capsys.readouterr().out.splitlines()  # the gateway's own log lines go there too
    (header,) = [line for line in lines if line.split()[:1] == ["version"]]
    (row,) = [line for line in lines if line.split()[:2] == ["1", "x"]]
    assert header.split() == ["version", "feature", "values", "js", "linf", "psi", "drift"]
    assert row.split()[:3] == ["1", "x", str(feat.num_values)]
    assert row.split()[3:6] == [f"{feat.js:.4f}", f"{feat.linf:.4f}", f"{feat.psi:.4f}"]
    assert row.endswith("DRIFT (" + ", ".join(feat.crossed) + ")")


def test_tf_module_model_with_tf_transform_style_graph_transform(tmp_path, gateway_factory):
    """A `tf.Module` model fed by a graph transform saved in TF Transform's output layout
    (`<dir>/transform_fn/` holding a SavedModel whose `transform_fn` takes one dict of raw
    features); the client sends raw features and gets model(transform(raw))."""

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[2.0], [0.1]])
            self.b = tf.Variable(0.25)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 1], tf.float32, name="ratio"),
                tf.TensorSpec([None, 1], tf.float32, name="city_len"),
            ]
        )
        def __call__(self, ratio, city_len):
            return {"score": tf.matmul(tf.concat([ratio, city_len], axis=1), self.w) + self.b}

    tft = tf.Module()
    tft.transform_fn = tf.function(
        lambda f: {
            "ratio": f["amount"] / (1.0 + tf.abs(f["amount"])),
            "city_len": tf.cast(tf.strings.length(f["city"]), tf.float32)[:, None],
        },
        input_signature=[
            {
                "amount": tf.TensorSpec([None, 1], tf.float32),
                "city": tf.TensorSpec([None], tf.string),
            }
        ],
    )
    tf.saved_model.save(tft, str(tmp_path / "tft_output" / "transform_fn"))

    def reference(amount, city):  # the transform and the model, in numpy
        ratio = amount / (1.0 + np.abs(amount))
        city_len = np.array([[len(c)] for c in city], np.float64)
        return 2.0 * ratio + 0.1 * city_len + 0.25

    rng = np.random.default_rng(4)
    amount = rng.normal(5.0, 3.0, size=(300, 1)).astype(np.float32)
    city = rng.choice(np.array([b"oslo", b"lima", b"montevideo"], dtype=object), size=300)
    gateway.export_version(
        Scorer(),
        tmp_path / "m",
        1,
        train_features={"amount": amount, "city": city},
        graph_transform=tmp_path / "tft_output",
        training_outputs={"score": reference(amount, city)},
    )
    gw = gateway_factory({"models": [{"name": "m", "base_path": str(tmp_path / "m")}]})
    assert gw.monitor.get("m", 1).state is VersionState.AVAILABLE  # self test passed
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    raw_amount = np.array([[1.0], [-4.0], [20.0]], np.float32)
    raw_city = np.array([b"lima", b"oslo", b"montevideo"], dtype=object)
    got = outputs_of(stub.Predict(predict_request("m", {"amount": raw_amount, "city": raw_city})))
    np.testing.assert_allclose(got["score"], reference(raw_amount, raw_city), rtol=1e-5, atol=1e-6)
    # GetModelMetadata advertises what clients send (raw features), not the model's inputs
    from tensorflow_serving.apis import get_model_metadata_pb2

    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "m"
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(req).metadata["signature_def"].Unpack(sigmap)
    advertised = sigmap.signature_def["serving_default"].inputs
    assert {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in advertised.items()} == {
        "amount": (tf.float32.as_datatype_enum, [-1, 1]),
        "city": (tf.string.as_datatype_enum, [-1]),
    }
    assert list(sigmap.signature_def["serving_default"].outputs) == ["score"]


def test_saved_model_path_with_named_transforms_and_positional_tf_function(
    models_dir, tmp_path, gateway_factory
):
    """An existing SavedModel (path) taking x: float32 [?, 4], four raw scalar features with
    named transforms, and a tf.function with positional arguments assembling x."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=n) for n in "abcd"])
    def assemble(a, b, c, d):
        return {"x": tf.stack([a, b, c, d], axis=1)}

    rng = np.random.default_rng(6)
    train = {
        "a": rng.normal(10.0, 2.0, 400),
        "b": rng.uniform(-1.0, 5.0, 400),
        "c": rng.normal(0.0, 4.0, 400),
        "d": np.where(rng.uniform(size=400) < 0.1, np.nan, rng.normal(1.0, 1.0, 400)),
    }
    gateway.export_version(
        models_dir / "module",
        tmp_path / "m",
        1,
        preprocessing={
            "a": "standardize",
            "b": "min_max",
            "c": {"kind": "clip", "lo": -2.0, "hi": 2.0},
            "d": {"kind": "fill_missing", "value": -1.0},
        },
        train_features=train,
        graph_transform=assemble,
    )
    gw = gateway_factory({"models": [{"name": "m", "base_path": str(tmp_path / "m")}]})
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    raw = {
        "a": np.array([10.0, 14.0]),
        "b": np.array([0.0, 9.0]),
        "c": np.array([-7.0, 1.5]),
        "d": np.array([np.nan, 0.5]),
    }
    got = outputs_of(stub.Predict(predict_request("m", raw)))
    b_lo, b_hi = train["b"].min(), train["b"].max()
    x = np.stack(
        [
            (raw["a"] - train["a"].mean()) / train["a"].std(),
            (raw["b"] - b_lo) / (b_hi - b_lo),
            np.clip(raw["c"], -2.0, 2.0),
            np.where(np.isnan(raw["d"]), -1.0, raw["d"]),
        ],
        axis=1,
    ).astype(np.float32)
    expected = in_process(models_dir / "module", "serving_default", {"x": x})
    np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["argmax"], expected["argmax"])


def test_preprocessing_without_train_features_is_refused(seed_bundle, tmp_path):
    with pytest.raises(ValueError, match="preprocessing given without train_features"):
        gateway.export_version(
            seed_bundle["model"], tmp_path / "m", 1, preprocessing={"x": seed_bundle["norm"]}
        )
    assert not (tmp_path / "m" / "1").exists()
    with pytest.raises(ValueError, match="not a SavedModel directory"):
        gateway.export_version(
            seed_bundle["model"],
            tmp_path / "m",
            1,
            train_features={"x": seed_bundle["x"]},
            graph_transform=tmp_path,
        )
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == []  # staging cleaned up


def test_gateway_inspect_prints_the_bundle_and_fails_on_tampering(seed_bundle, tmp_path, capsys):
    from gateway.cli import main

    v = tmp_path / "1"
    shutil.copytree(seed_bundle["with"] / "1", v)
    x = seed_bundle["x"]
    assert main(["inspect", str(v)]) == 0
    out = capsys.readouterr().out
    assert "golden outputs from 'training'" in out
    assert "  verification: OK (every file matches its sha256)" in out
    manifest = bundle_pb2.BundleManifest.FromString((v / MANIFEST).read_bytes())
    for f in manifest.files:  # every file of the version, with its digest
        assert f"{f.sha256[:16]}  {f.size:>10}  {f.path}" in out
    assert {f.path for f in manifest.files} >= {"saved_model.pb", PREPROCESSING.as_posix()}
    assert 'feature: "x"' in out and "standardize {" in out
    assert "training statistics (512 examples):" in out
    assert (
        f"  x: float float32 shape=[1] count=512 missing=0 mean={x.mean():.6g} "
        f"std={x.std():.6g} min={x.min():.6g} max={x.max():.6g}"
    ) in out
    assert "golden records: 256 rows for signature 'serving_default'" in out

    _unsealed_edit(v)
    assert main(["inspect", str(v)]) == 1
    out = capsys.readouterr().out
    assert (
        "verification: FAILED: assets.extra/gateway/preprocessing.pb: sha256 does not match" in out
    )
    assert main(["inspect", "--no-verify", str(v)]) == 0
    capsys.readouterr()
    _truncated_bundle_file(v)
    assert main(["inspect", "--no-verify", str(v)]) == 1
    assert (
        "assets.extra/gateway/preprocessing.pb: UNREADABLE (DecodeError" in capsys.readouterr().out
    )
    (v / MANIFEST).unlink()
    assert main(["inspect", str(v)]) == 1
    assert "verification: FAILED: assets.extra/gateway/manifest.pb: missing" in (
        capsys.readouterr().out
    )
