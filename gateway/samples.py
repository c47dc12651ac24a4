"""Small real SavedModels for the demo, tests and benchmarks (built locally, no downloads).

Each builder writes one TF Serving version directory and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
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


def build_estimator_example_model(
    path: Path,
    weights: tuple[tuple[float, float], tuple[float, float]] = ((1.0, -1.0), (0.5, 2.0)),
    bias: float = 0.0,
) -> Path:
    """A TF1 SavedModel like Estimator's `export_saved_model`: signatures taking serialized
    tf.Example (`x`: 2 floats): `serving_default` (classify: classes/scores =
    softmax(x @ weights)), `regress` (outputs = x0 + x1 + bias) and `predict` (examples ->
    probabilities, value)."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        features = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32)})
        weights = tf.compat.v1.get_variable("w", initializer=tf.constant(weights))
        probs = tf.nn.softmax(tf.matmul(features["x"], weights))
        classes = tf.tile(tf.constant([[b"neg", b"pos"]]), [tf.shape(serialized)[0], 1])
        value = tf.reduce_sum(features["x"], axis=1, keepdims=True) + bias
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


def build_half_plus_two(path: Path, a: float = 0.5, b: float = 2.0, c: float = 3.0) -> Path:
    """A TF1 graph shaped like TF Serving's own test model `half_plus_two` (built here with
    `tf.compat.v1`, not copied): a shapeless `tf_example` string placeholder parsed with
    `parse_example` into `x` (and `x2`, default 0), `y = a*x + b`, `y2 = a*x + c`,
    `y3 = a*x2 + c`. Signatures: `serving_default` (predict: x -> y, fed to the
    non-placeholder tensor `x`), `classify_x_to_y` (scores = y), `regress_x_to_y`,
    `regress_x_to_y2`, `regress_x2_to_y3` (tf.Example in). Variables `a`, `b`, `c`."""
    tf = _tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.io.parse_example(
            serialized,
            {
                "x": v1.io.FixedLenFeature([1], tf.float32),
                "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(parsed["x"], name="x")
        x2 = tf.identity(parsed["x2"], name="x2")
        va = v1.get_variable("a", initializer=tf.constant(a))
        vb = v1.get_variable("b", initializer=tf.constant(b))
        vc = v1.get_variable("c", initializer=tf.constant(c))
        y = tf.add(tf.multiply(va, x), vb, name="y")
        y2 = tf.add(tf.multiply(va, x), vc, name="y2")
        y3 = tf.add(tf.multiply(va, x2), vc, name="y3")
        info = v1.saved_model.utils.build_tensor_info
        sdu = v1.saved_model.signature_def_utils
        consts = v1.saved_model.signature_constants

        def regression(out: Any) -> Any:
            return sdu.build_signature_def(
                {consts.REGRESS_INPUTS: info(serialized)},
                {consts.REGRESS_OUTPUTS: info(out)},
                consts.REGRESS_METHOD_NAME,
            )

        signatures = {
            "serving_default": sdu.build_signature_def(
                {"x": info(x)}, {"y": info(y)}, consts.PREDICT_METHOD_NAME
            ),
            "classify_x_to_y": sdu.build_signature_def(
                {consts.CLASSIFY_INPUTS: info(serialized)},
                {consts.CLASSIFY_OUTPUT_SCORES: info(y)},
                consts.CLASSIFY_METHOD_NAME,
            ),
            "regress_x_to_y": regression(y),
            "regress_x_to_y2": regression(y2),
            "regress_x2_to_y3": regression(y3),
        }
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


def build_half_plus_two_tf2(path: Path, a: float = 0.5, b: float = 2.0, c: float = 3.0) -> Path:
    """`build_half_plus_two` re-exported with TF2's `tf.saved_model.save`: the same
    signatures as `tf.function`s (tf.Example-taking ones parse their input), which TF2
    writes with the predict method name."""
    tf = _tf()
    spec = {
        "x": tf.io.FixedLenFeature([1], tf.float32),
        "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
    }

    class HalfPlusTwo(tf.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(a)
            self.b = tf.Variable(b)
            self.c = tf.Variable(c)

        def _parse(self, examples: Any) -> Any:
            return tf.io.parse_example(examples, spec)

    module = HalfPlusTwo()
    examples = tf.TensorSpec([None], tf.string, name="inputs")

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])  # type: ignore[untyped-decorator]
    def predict(x: Any) -> dict[str, Any]:
        return {"y": module.a * x + module.b}

    @tf.function(input_signature=[examples])  # type: ignore[untyped-decorator]
    def classify(inputs: Any) -> dict[str, Any]:
        return {"scores": module.a * module._parse(inputs)["x"] + module.b}

    def regress(out: Callable[[Any], Any]) -> Any:
        @tf.function(input_signature=[examples])  # type: ignore[untyped-decorator]
        def fn(inputs: Any) -> dict[str, Any]:
            return {"outputs": out(module._parse(inputs))}

        return fn

    signatures = {
        "serving_default": predict,
        "classify_x_to_y": classify,
        "regress_x_to_y": regress(lambda f: module.a * f["x"] + module.b),
        "regress_x_to_y2": regress(lambda f: module.a * f["x"] + module.c),
        "regress_x2_to_y3": regress(lambda f: module.a * f["x2"] + module.c),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def make_example(x: Iterable[float]) -> Any:
    """A tf.Example with float feature `x`."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.extend(float(v) for v in x)
    return example


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
