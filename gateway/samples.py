"""Small real SavedModels for the demo, tests and benchmarks (built locally, no downloads).

Each builder writes one TF Serving version directory and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tf() -> Any:
    import tensorflow as tf

    return tf


def build_keras_classifier(path: Path, seed: int = 0, features: int = 4, classes: int = 3) -> Path:
    """Keras 3 functional classifier `x: float32 [?, features] -> output_0: softmax [?, classes]`,
    saved with `model.export()`."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(features,), name="x")
    hidden = keras.layers.Dense(16, activation="relu")(inp)
    out = keras.layers.Dense(classes, activation="softmax")(hidden)
    model = keras.Model(inp, out)
    model.export(str(path), verbose=False)
    return path


def build_keras_bundle(
    base_path: Path, version: int, seed: int = 0, features: int = 4, classes: int = 3
) -> Path:
    """`build_keras_classifier`'s model trained on standardized features and exported
    with `gateway.export_version`: raw `x: float [?, features]` -> standardize -> model.
    Ships training statistics (feature checks and skew windows on), golden records."""
    import keras

    from gateway.bundle.export import export_version

    rng = np.random.default_rng(seed)
    raw = rng.normal(3.0, 2.0, size=(2000, features))
    labels = (raw[:, 0] > 3.0).astype(np.int64) + (raw[:, 1] > 5.0).astype(np.int64)
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(features,), name="x")
    hidden = keras.layers.Dense(16, activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    scaled = ((raw - raw.mean(axis=0)) / raw.std(axis=0)).astype(np.float32)
    model.fit(scaled, labels, epochs=2, batch_size=128, verbose=0)
    return export_version(
        model,
        base_path,
        version,
        preprocessing={"x": {"kind": "standardize", "per_element": True}},  # per column
        train_features={"x": raw},
        training_outputs=model.predict(scaled, verbose=0),
    )


def build_module_regressor(path: Path, seed: int = 0, features: int = 4) -> Path:
    """`tf.Module` with a serving signature: `x: float32 [?, features]` ->
    `{y: float32 [?, 2], argmax: int64 [?]}`."""
    tf = _tf()
    rng = np.random.default_rng(seed)

    class Regressor(tf.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(rng.normal(size=(features, 2)).astype(np.float32))
            self.b = tf.Variable(rng.normal(size=(2,)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, features], tf.float32, name="x")])  # type: ignore[untyped-decorator]
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": tf.matmul(x, self.w) + self.b, "argmax": tf.argmax(x, axis=1)}

    module = Regressor()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def build_estimator_example_model(path: Path) -> Path:
    """A TF1 SavedModel like Estimator's `export_saved_model`: signatures taking serialized
    tf.Example (`x`: 2 floats): `serving_default` (classify: classes/scores), `regress`
    (outputs = x0 + x1) and `predict` (examples -> probabilities, value)."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        features = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32)})
        weights = tf.compat.v1.get_variable("w", initializer=tf.constant([[1.0, -1.0], [0.5, 2.0]]))
        probs = tf.nn.softmax(tf.matmul(features["x"], weights))
        classes = tf.tile(tf.constant([[b"neg", b"pos"]]), [tf.shape(serialized)[0], 1])
        value = tf.reduce_sum(features["x"], axis=1, keepdims=True)
        sdu = tf.compat.v1.saved_model.signature_def_utils
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                sess,
                ["serve"],
                signature_def_map={
                    "serving_default": sdu.classification_signature_def(serialized, classes, probs),
                    "regress": sdu.regression_signature_def(serialized, value),
                    "predict": sdu.predict_signature_def(
                        {"examples": serialized}, {"probabilities": probs, "value": value}
                    ),
                },
            )
            builder.save()
    return path


def make_example(x: Iterable[float]) -> Any:
    """A tf.Example with float feature `x`."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.extend(float(v) for v in x)
    return example


def write_warmup(version_dir: Path, requests: Iterable[Any]) -> Path:
    """Write PredictRequests as TF Serving's `assets.extra/tf_serving_warmup_requests`."""
    from tensorflow_serving.apis import prediction_log_pb2

    tf = _tf()
    out = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(out)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return out


def fraud_training_data(seed: int, rows: int = 2000, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Raw training features of the demo fraud model: amount, age, country."""
    rng = np.random.default_rng(seed)
    countries = np.array([b"DE", b"FR", b"US", b"JP", b"BR"], dtype=object)
    return {
        "amount": rng.lognormal(3.0 + shift, 1.0, size=(rows, 1)),
        "age": rng.normal(40.0, 12.0, size=(rows, 1)).clip(18, 90),
        "country": rng.choice(countries, size=rows, p=[0.3, 0.2, 0.3, 0.1, 0.1]),
    }


def export_fraud_model(base_path: Path, version: int, seed: int, shift: float = 0.0) -> Path:
    """Train a small fraud classifier on preprocessed features and export it with
    `gateway.export_version` (log1p+standardize, a Keras Normalization, a vocabulary)."""
    import keras

    import gateway
    from gateway.preprocessing.transforms import fit_chain

    keras.utils.set_random_seed(seed)
    train = fraud_training_data(seed, shift=shift)
    norm = keras.layers.Normalization()
    norm.adapt(train["age"])
    amount_chain = fit_chain(["log1p", "standardize"], train["amount"])
    vocab = fit_chain([{"kind": "vocabulary", "num_oov_buckets": 1}], train["country"])
    amount = train["amount"]
    for t in amount_chain:
        amount = t.apply(amount)
    country = vocab[0].apply(train["country"])
    age = np.asarray(norm(train["age"]))
    label = ((amount[:, 0] > 1.0) | (country == 5)).astype(np.int64)
    a_in = keras.Input(shape=(1,), name="amount")
    g_in = keras.Input(shape=(1,), name="age")
    c_in = keras.Input(shape=(), dtype="int64", name="country")
    emb = keras.layers.Flatten()(keras.layers.Embedding(8, 3)(keras.layers.Reshape((1,))(c_in)))
    hidden = keras.layers.Dense(16, activation="relu")(
        keras.layers.Concatenate()([a_in, g_in, emb])
    )
    model = keras.Model([a_in, g_in, c_in], keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    features = {"amount": amount.astype(np.float32), "age": age, "country": country}
    model.fit(features, label, epochs=3, batch_size=128, verbose=0)
    outputs = model.predict(features, verbose=0)
    export: Any = gateway.export_version
    path: Path = export(
        model,
        base_path,
        version,
        preprocessing={"amount": list(amount_chain), "age": norm, "country": list(vocab)},
        train_features=train,
        training_outputs=outputs,
        categorical=["country"],
    )
    return path
