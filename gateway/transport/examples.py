"""tf.Example inputs of Classify/Regress requests: the batch of serialized strings the
SavedModel's classify/regress signature expects, and the raw features they carry.

A request of many small examples costs little more than its own size: the examples are
serialized in one call (the `ExampleList` as a whole) and cut at their length prefixes,
vectorised when every example has the same size; a large batch is then held as one
fixed-width bytes array (`S<width>`) instead of one Python bytes object per example
(which costs some 56 bytes each before the example's own)."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import input_pb2

from gateway.core.errors import InvalidInput
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.core.servable import Arrays

_KINDS = ("float_list", "int64_list", "bytes_list")

_RECORD_TAG = 0x0A
"""`ExampleList.examples` (field 1, length-delimited): the tag before each example."""

COMPACT_MIN_EXAMPLES = 1024
"""Batches of at least this many examples are held as one fixed-width bytes array when
that is exact and not much larger than the examples (see `_compact`); smaller ones as
an object array of bytes, like every other string tensor."""

_GATHER_BYTES = 1 << 20
"""Bytes copied per step when cutting examples of different sizes out of the list."""


def _object_array(values: Sequence[bytes]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class TfExampleBatch:
    """The examples of one `tensorflow.serving.Input` (an `ExampleBatch`): serialized for
    the model (context merged into each example, as TF Serving does); raw features
    decoded on demand in one vectorised `tf.io.parse_example` call."""

    def __init__(
        self,
        examples: Sequence[example_pb2.Example],
        serialized: np.ndarray,
        context: example_pb2.Example | None = None,
    ) -> None:
        self._examples = examples
        self._context = context
        self._serialized = serialized
        self._features: dict[str, np.ndarray] = {}

    @property
    def serialized(self) -> np.ndarray:
        """1-D array of serialized tf.Example: object (bytes), or for a large batch
        fixed-width bytes (`S<width>`, never with a value ending in a NUL byte, which
        that dtype would drop)."""
        return self._serialized

    def feature_names(self) -> frozenset[str]:
        """Names of the features of the first example, context included (TF Serving's
        examples of one request share a schema)."""
        if not self._examples:
            return frozenset()
        names = frozenset(self._examples[0].features.feature)
        if self._context is not None:
            names |= frozenset(self._context.features.feature)
        return names

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
        shared = self._context.features.feature if self._context is not None else {}
        for example in self._examples:
            own = example.features.feature
            # an example's feature replaces the context's of the same name
            feature = own.get(name) if name in own else shared.get(name)
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
        parsed = tf.io.parse_example(tf.constant(serialized, dtype=tf.string), spec)
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


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _same_size(blob: bytes, count: int) -> tuple[int, int] | None:
    """(header, size) when a serialized `ExampleList` is `count` examples of one size,
    each after the same tag and length (`header` bytes): checked vectorised."""
    if not blob or blob[0] != _RECORD_TAG:
        return None
    size, header = _varint(blob, 1)
    stride = header + size
    if stride * count != len(blob):
        return None
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(count, stride)
    # every record starts with the first one's tag and length: the list is these records
    if not bool((rows[:, :header] == rows[0, :header]).all()):
        return None
    return header, size


def _records(blob: bytes, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(starts, sizes) of the `count` examples of a serialized `ExampleList`, read off
    their length prefixes; None when it holds anything but examples (unknown fields)."""
    starts: list[int] = [0] * count
    sizes: list[int] = [0] * count
    pos = 0
    end = len(blob)
    for i in range(count):
        if pos >= end or blob[pos] != _RECORD_TAG:
            return None
        size = blob[pos + 1]
        if size < 0x80:
            pos += 2
        else:
            size, pos = _varint(blob, pos + 1)
        starts[i] = pos
        sizes[i] = size
        pos += size
    if pos != end:
        return None
    return np.asarray(starts, dtype=np.int64), np.asarray(sizes, dtype=np.int64)


def _compactable(sizes: np.ndarray) -> bool:
    """Whether examples of `sizes` are held cheaply as one `S<width>` array: a large
    batch, none empty, padding to the largest at most doubling the size. (Exact only if
    none ends in a NUL byte either: the dtype strips trailing NULs.)"""
    count = len(sizes)
    return (
        count >= COMPACT_MIN_EXAMPLES
        and int(sizes.min()) > 0
        and int(sizes.max()) * count <= 2 * int(sizes.sum())
    )


def _gather(flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`flat[starts[i]:starts[i] + sizes[i]]` for every i, as one `S<width>` array
    (copied a bounded number of bytes at a time)."""
    count, width = len(sizes), int(sizes.max())
    out = np.zeros((count, width), dtype=np.uint8)
    cols = np.arange(width, dtype=np.int64)
    step = max(1, _GATHER_BYTES // width)
    for a in range(0, count, step):
        keep = cols < sizes[a : a + step, None]
        out[a : a + step][keep] = flat[(starts[a : a + step, None] + cols)[keep]]
    return out.view(f"S{width}").reshape(count)


def _from_list(example_list: Any, count: int) -> tuple[np.ndarray, np.ndarray | int]:
    """(serialized, sizes: one per example, or the one size of all) of the examples of
    an `ExampleList`, serialized in one call and cut at their length prefixes."""
    blob: bytes = example_list.SerializeToString()
    flat = np.frombuffer(blob, dtype=np.uint8)
    same = _same_size(blob, count)
    if same is not None:
        header, size = same
        stride = header + size
        rows = flat.reshape(count, stride)
        if count >= COMPACT_MIN_EXAMPLES and size and not bool((rows[:, -1] == 0).any()):
            return np.ascontiguousarray(rows[:, header:]).view(f"S{size}").reshape(count), size
        cut = [blob[at + header : at + stride] for at in range(0, len(blob), stride)]
        return _object_array(cut), size
    found = _records(blob, count)
    if found is None:  # the list carries unknown fields: one example at a time
        return _from_values([e.SerializeToString() for e in example_list.examples])
    starts, sizes = found
    if _compactable(sizes) and not bool((flat[starts + sizes - 1] == 0).any()):
        return _gather(flat, starts, sizes), sizes
    ends = (starts + sizes).tolist()
    return _object_array([blob[s:e] for s, e in zip(starts.tolist(), ends, strict=True)]), sizes


def _from_values(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(serialized, sizes) of examples serialized one at a time."""
    count = len(values)
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=count)
    if _compactable(sizes):
        width = int(sizes.max())
        compact = np.array(values, dtype=f"S{width}")
        last = compact.view(np.uint8).reshape(count, width)[np.arange(count), sizes - 1]
        if not bool((last == 0).any()):
            return compact, sizes
    return _object_array(values), sizes


def _check_features(
    limits: DecodeLimits,
    where: str,
    examples: Sequence[example_pb2.Example],
    sizes: np.ndarray | int,
) -> None:
    """ResourceExhausted for an example naming over `max_features`. A feature takes at
    least 2 bytes of a serialized example, so only examples of at least twice that many
    bytes can: only those are counted (`sizes`: each example's, or the one of all)."""
    floor = 2 * limits.max_features
    large: Sequence[int]
    if isinstance(sizes, int):
        large = range(len(examples)) if sizes >= floor else ()
    else:
        large = np.flatnonzero(sizes >= floor).tolist()
    for i in large:
        limits.features(f"{where}[{i}]", len(examples[i].features.feature))


def example_batch(inp: input_pb2.Input, limits: DecodeLimits = DEFAULT_LIMITS) -> TfExampleBatch:
    """The examples of a Classify/Regress/MultiInference `input`; InvalidInput naming the
    field when there are none, ResourceExhausted (naming the limit) for more examples
    than `limits.max_examples` or an example or context naming more features than
    `limits.max_features`."""
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        examples: Sequence[example_pb2.Example] = inp.example_list.examples
        if not examples:
            raise InvalidInput("input.example_list: expected at least one example, got none")
        limits.examples(len(examples))
        serialized, sizes = _from_list(inp.example_list, len(examples))
        _check_features(limits, "input.example_list.examples", examples, sizes)
        return TfExampleBatch(examples, serialized)
    if kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context
        examples = inp.example_list_with_context.examples
        if not examples:
            raise InvalidInput(
                "input.example_list_with_context: expected at least one example, got none"
            )
        limits.examples(len(examples))
        limits.features("input.example_list_with_context.context", len(ctx.features.feature))
        values = []
        for example in examples:  # merged one at a time: no message per example is kept
            full = example_pb2.Example()
            full.CopyFrom(ctx)
            full.MergeFrom(example)
            values.append(full.SerializeToString())
        del full
        serialized, sizes = _from_values(values)
        del values
        # a merged example is at least as large as the example alone
        _check_features(limits, "input.example_list_with_context.examples", examples, sizes)
        return TfExampleBatch(examples, serialized, ctx)
    raise InvalidInput("input: expected example_list or example_list_with_context, got neither")
