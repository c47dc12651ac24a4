"""The training-side API: `export_version` writes a TF Serving version directory
plus the gateway bundle (preprocessing, training statistics, golden records,
manifest), atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway.analysis.statistics import compute_statistics
from gateway.bundle.format import (
    BUNDLE_DIR,
    GOLDEN,
    MANIFEST,
    PREPROCESSING,
    STATISTICS,
    TRANSFORM,
    build_manifest,
    tensors_to_proto,
)
from gateway.bundle.preprocessing_codec import preprocessing_to_proto
from gateway.bundle.statistics_codec import statistics_to_proto
from gateway.preprocessing.keras_import import from_keras_layer
from gateway.preprocessing.pipeline import FeaturePreprocessing, Preprocessing, RawFeatureSpec
from gateway.preprocessing.transforms import Transform, TransformSpec, fit_chain

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


def _is_keras_layer(value: Any) -> bool:
    return (
        hasattr(value, "get_config")
        and callable(value)
        and not isinstance(value, (str, Mapping, Transform))
    )


def _save_model(model: Any, target: Path, signatures: Any) -> None:
    import tensorflow as tf

    if isinstance(model, (str, os.PathLike)):
        source = Path(model)
        if not (source / "saved_model.pb").is_file():
            raise ValueError(f"model: {source} is not a SavedModel directory (no saved_model.pb)")
        shutil.copytree(source, target)
    elif hasattr(model, "export") and hasattr(model, "layers"):  # Keras 3 model
        model.export(str(target), verbose=False)
    elif isinstance(model, tf.Module):
        tf.saved_model.save(model, str(target), signatures=signatures)
    else:
        raise TypeError(
            "model: expected a Keras model, a tf.Module with a serving signature, or a "
            f"SavedModel path; got {type(model).__name__}"
        )


def _preprocessing(
    specs: Mapping[str, Any], train: Mapping[str, np.ndarray]
) -> tuple[Preprocessing, dict[str, list[Any]]]:
    """Build the serving Preprocessing; also return, per feature with a Keras layer, the
    training-side steps in order (Keras layers themselves, fitted named transforms)."""
    unknown = sorted(set(specs) - set(train))
    if unknown:
        raise ValueError(f"preprocessing: no train_features for {unknown}")
    features: dict[str, FeaturePreprocessing] = {}
    training_steps: dict[str, list[Any]] = {}
    for name, values in train.items():
        spec = specs.get(name)
        chain: list[Transform] = []
        items: Sequence[Any] = (
            list(spec) if isinstance(spec, (list, tuple)) else ([] if spec is None else [spec])
        )
        current = np.asarray(values)  # each step is fitted on the previous step's output
        for item in items:
            if _is_keras_layer(item):
                steps = from_keras_layer(item)
                training_steps.setdefault(name, []).append(item)
            else:
                steps = list(fit_chain([item], current))
                training_steps.setdefault(name, []).extend(s.apply for s in steps)
            for step in steps:
                current = step.apply(current)
            chain.extend(steps)
        features[name] = FeaturePreprocessing(RawFeatureSpec.of(np.asarray(values)), tuple(chain))
    keras_features = {
        name
        for name, spec in specs.items()
        if any(_is_keras_layer(i) for i in (spec if isinstance(spec, (list, tuple)) else [spec]))
    }
    return Preprocessing(features), {k: v for k, v in training_steps.items() if k in keras_features}


def _training_transformed(
    pre: Preprocessing, training_steps: Mapping[str, list[Any]], raw: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What training fed the model: Keras layers' own outputs where a layer was given."""
    out = pre.apply(raw)
    for name, steps in training_steps.items():
        x: Any = raw[name]
        for step in steps:
            x = np.asarray(step(x))
        out[name] = x
    return out


def _save_transform(transform: Any, target: Path) -> None:
    import tensorflow as tf

    if isinstance(transform, (str, os.PathLike)):
        from gateway.bundle.attach import transform_saved_model_dir

        source = Path(transform)
        if not (transform_saved_model_dir(source) / "saved_model.pb").is_file():
            raise ValueError(
                f"graph_transform: {source} is not a SavedModel directory (no saved_model.pb, "
                "nor transform_fn/saved_model.pb as in a TF Transform output directory)"
            )
        shutil.copytree(source, target)
        return
    if not hasattr(transform, "get_concrete_function"):
        raise TypeError(
            "graph_transform: expected a tf.function with an input_signature or a SavedModel path"
        )
    fn = transform
    specs = getattr(transform, "input_signature", None)
    if specs and len(specs) == 1 and isinstance(specs[0], Mapping):
        # A dict argument: name each TensorSpec after its key so the saved signature
        # takes one keyword per feature (TF Transform's transform_fn layout).
        named = {k: tf.TensorSpec(v.shape, v.dtype, name=k) for k, v in specs[0].items()}
        fn = tf.function(transform.python_function, input_signature=[named])
    module = tf.Module()
    module.transform = fn
    tf.saved_model.save(module, str(target), signatures={"serving_default": fn})


def _call_model(
    version_dir: Path, signature: str, transformed: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    from gateway.bundle.attach import _conformer
    from gateway.lifecycle.loader import load_saved_model

    loaded = load_saved_model("export", 0, version_dir)
    sig = loaded.signature(signature)
    inputs = {
        a: _conformer(a, spec)(transformed[a]) for a, spec in sig.inputs.items() if a in transformed
    }
    missing = sorted(set(sig.inputs) - set(inputs))
    if missing:
        raise ValueError(
            f"the model's signature '{signature}' needs input(s) {missing}, which neither "
            f"preprocessing nor train_features provide (features: {sorted(transformed)})"
        )
    return sig.run(inputs)


def export_version(
    model: Any,
    base_path: str | os.PathLike[str],
    version: int,
    preprocessing: Mapping[str, TransformSpec | Any | Sequence[Any]] | None = None,
    train_features: Mapping[str, np.ndarray] | None = None,
    *,
    training_outputs: Mapping[str, np.ndarray] | np.ndarray | None = None,
    graph_transform: Any = None,
    signatures: Any = None,
    signature_name: str = "serving_default",
    categorical: Sequence[str] = (),
    golden_rows: int = 256,
    warmup_rows: int = 4,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
    warmup_requests: str | os.PathLike[str] | None = None,
) -> Path:
    """Write `<base_path>/<version>`: the SavedModel plus the gateway bundle. Returns its path.

    `model` is a Keras model, a `tf.Module` (with `signatures=` or a
    serving-signature `tf.function`), or a path to an existing SavedModel.
    `preprocessing` maps raw feature names to an adapted Keras preprocessing
    layer, a named transform (`"standardize"`, `{"kind": "clip", "hi": 10}`, ...)
    or a list of those; raw features without an entry pass through. The output
    of a feature's preprocessing is fed to the model input of the same name.
    `train_features` (raw training values, batch first) produce the statistics
    and the golden records. `training_outputs` (the model's outputs on
    `train_features` as computed in training, an array or a dict per output)
    makes the load-time self test also catch preprocessing missing from the
    bundle; without it golden outputs are computed here. `graph_transform` (a
    `tf.function` taking and returning a dict, or a SavedModel path, like TF
    Transform's transform_fn) runs after the per-feature preprocessing; its
    outputs are added to (or replace) the features fed to the model.
    `preprocessing`, `graph_transform` and `training_outputs` need
    `train_features` (ValueError otherwise). `warmup_requests` is a TF Serving
    warmup file (PredictionLog TFRecords, e.g. a `gateway` capture) to ship as
    `assets.extra/tf_serving_warmup_requests` instead of the `warmup_rows`
    generated ones; it is covered by the manifest like every other file.
    `golden_rows=0` ships statistics without golden records (no self test, no
    generated warmup): for models whose signatures parse serialized tf.Example
    themselves (Estimator exports), whose raw features the checks still see.
    The directory appears atomically (written aside, then renamed).
    """
    if train_features is None:
        given = [
            name
            for name, value in (
                ("preprocessing", preprocessing),
                ("graph_transform", graph_transform),
                ("training_outputs", training_outputs),
            )
            if value is not None and (not isinstance(value, Mapping) or len(value) > 0)
        ]
        if given:
            # Without training values there is no raw-feature signature, no statistics and
            # no golden records: the preprocessing would silently not ship.
            raise ValueError(
                f"{', '.join(given)} given without train_features: pass the raw training "
                "features (the exporter derives the raw signature, the statistics and the "
                "golden records from them)"
            )
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    final = base / str(int(version))
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (pass overwrite=True to replace it)")
    staging = base / f".export-{version}-{uuid.uuid4().hex[:8]}"
    try:
        _save_model(model, staging, signatures)
        (staging / BUNDLE_DIR).mkdir(parents=True, exist_ok=True)
        if warmup_requests is not None:
            shutil.copyfile(warmup_requests, staging / WARMUP)
        source = "export"
        if graph_transform is not None:
            _save_transform(graph_transform, staging / TRANSFORM)
        if train_features is not None:
            train = {k: np.asarray(v) for k, v in train_features.items()}
            n = {len(v) for v in train.values()}
            if len(n) != 1:
                raise ValueError(
                    f"train_features: every feature needs the same number of rows, got {sorted(n)}"
                )
            rows = n.pop()
            pre, keras_layers = _preprocessing(preprocessing or {}, train)
            (staging / PREPROCESSING).write_bytes(preprocessing_to_proto(pre).SerializeToString())
            stats = compute_statistics(train, categorical=set(categorical))
            (staging / STATISTICS).write_bytes(statistics_to_proto(stats).SerializeToString())
            if golden_rows > 0:
                idx = np.sort(
                    np.random.default_rng(seed).permutation(rows)[: min(golden_rows, rows)]
                )
                raw = {k: v[idx] for k, v in train.items()}
                transformed = _training_transformed(pre, keras_layers, raw)
                if graph_transform is not None:
                    from gateway.bundle.attach import _load_transform

                    transformed = {
                        **transformed,
                        **_load_transform(staging / TRANSFORM)(transformed),
                    }
                if training_outputs is not None:
                    source = "training"
                    if isinstance(training_outputs, Mapping):
                        outputs = {k: np.asarray(v)[idx] for k, v in training_outputs.items()}
                    else:
                        computed = _call_model(staging, signature_name, transformed)
                        if len(computed) != 1:
                            raise ValueError(
                                f"training_outputs: the signature has outputs {sorted(computed)}; "
                                "pass a dict keyed by output name"
                            )
                        outputs = {next(iter(computed)): np.asarray(training_outputs)[idx]}
                else:
                    outputs = _call_model(staging, signature_name, transformed)
                from gateway._proto.gateway.v1 import bundle_pb2

                golden = bundle_pb2.GoldenRecords(
                    rows=len(idx), signature_name=signature_name, atol=atol, rtol=rtol
                )
                golden.raw.CopyFrom(tensors_to_proto(raw))
                golden.transformed.CopyFrom(tensors_to_proto(transformed))
                golden.outputs.CopyFrom(tensors_to_proto(outputs))
                (staging / GOLDEN).write_bytes(golden.SerializeToString())
            if golden_rows > 0 and warmup_rows > 0 and not (staging / WARMUP).exists():
                _write_warmup(
                    staging,
                    {k: v[: min(warmup_rows, len(v))] for k, v in raw.items()},
                    signature_name,
                )
        manifest = build_manifest(staging, source, metadata)
        (staging / MANIFEST).write_bytes(manifest.SerializeToString())
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _write_warmup(version_dir: Path, raw: Mapping[str, np.ndarray], signature: str) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from gateway.bundle.warmup import write_warmup

    requests = []
    for i in range(len(next(iter(raw.values())))):
        req = predict_pb2.PredictRequest()
        req.model_spec.signature_name = signature
        for name, values in raw.items():
            row = values[i : i + 1]
            req.inputs[name].CopyFrom(tf.make_tensor_proto(row))
        requests.append(req)
    write_warmup(version_dir, requests)
