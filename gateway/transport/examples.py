"""tf.Example inputs of Classify/Regress requests: the batch of serialized strings the
SavedModel's classify/regress signature expects, and the raw features they carry."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import input_pb2

from gateway.core.errors import InvalidInput
from gateway.core.servable import Arrays

_KINDS = ("float_list", "int64_list", "bytes_list")


def _object_array(values: Sequence[bytes]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class TfExampleBatch:
    """The examples of one `tensorflow.serving.Input` (an `ExampleBatch`): serialized for
    the model (context merged into each example, as TF Serving does); raw features
    decoded on demand in one vectorised `tf.io.parse_example` call."""

    def __init__(self, examples: Sequence[example_pb2.Example], serialized: np.ndarray) -> None:
        self._examples = examples
        self._serialized = serialized
        self._features: dict[str, np.ndarray] = {}

    @property
    def serialized(self) -> np.ndarray:
        """1-D object array of serialized tf.Example."""
        return self._serialized

    def feature_names(self) -> frozenset[str]:
        """Names of the features of the first example (TF Serving's examples of one
        request share a schema)."""
        return frozenset(self._examples[0].features.feature) if self._examples else frozenset()

    def features(self, names: Collection[str]) -> Arrays:
        """The named features present in the examples: [rows] when every example has
        exactly one value, else [rows, k] padded (NaN, 0 or b"")."""
        wanted = [n for n in names if n not in self._features]
        specs = {}
        for name in wanted:
            kind = self._kind(name)
            if kind is not None:
                specs[name] = kind
        if specs:
            self._features.update(_parse(self._serialized, specs))
        return {n: self._features[n] for n in names if n in self._features}

    def _kind(self, name: str) -> str | None:
        for example in self._examples:
            feature = example.features.feature.get(name)
            if feature is not None:
                kind: str | None = feature.WhichOneof("kind")
                if kind is not None:
                    return kind
        return None


def _parse(serialized: np.ndarray, kinds: dict[str, str]) -> Arrays:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    dtypes: dict[str, Any] = {"float_list": tf.float32, "int64_list": tf.int64}
    spec = {name: tf.io.VarLenFeature(dtypes.get(kind, tf.string)) for name, kind in kinds.items()}
    try:
        parsed = tf.io.parse_example(tf.constant(list(serialized), dtype=tf.string), spec)
    except (tf.errors.InvalidArgumentError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise InvalidInput(f"input: examples do not parse as tf.Example ({first})") from exc
    out: Arrays = {}
    rows = len(serialized)
    for name, sparse in parsed.items():
        kind = kinds[name]
        default: Any = np.nan if kind == "float_list" else (0 if kind == "int64_list" else b"")
        dense = tf.sparse.to_dense(sparse, default_value=default).numpy()
        counts = np.bincount(sparse.indices.numpy()[:, 0], minlength=rows)
        if dense.ndim == 2 and dense.shape[1] == 1 and bool(np.all(counts == 1)):
            dense = dense[:, 0]
        out[name] = dense
    return out


def example_batch(inp: input_pb2.Input) -> TfExampleBatch:
    """The examples of a Classify/Regress/MultiInference `input`; InvalidInput naming the
    field when there are none."""
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        examples: Sequence[example_pb2.Example] = inp.example_list.examples
        if not examples:
            raise InvalidInput("input.example_list: expected at least one example, got none")
        return TfExampleBatch(examples, _object_array([e.SerializeToString() for e in examples]))
    if kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context
        examples = inp.example_list_with_context.examples
        if not examples:
            raise InvalidInput(
                "input.example_list_with_context: expected at least one example, got none"
            )
        merged = []
        for example in examples:
            full = example_pb2.Example()
            full.CopyFrom(ctx)
            full.MergeFrom(example)
            merged.append(full)
        return TfExampleBatch(merged, _object_array([e.SerializeToString() for e in merged]))
    raise InvalidInput("input: expected example_list or example_list_with_context, got neither")
