"""tf.Example batches: the limits (examples per request, features per example and
context) and the serialized examples (one call for the whole list, cut vectorised; a
large batch as one fixed-width bytes array) equal to serializing each example."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import input_pb2

from gateway.core.errors import ResourceExhausted
from gateway.core.limits import DecodeLimits
from gateway.transport.examples import COMPACT_MIN_EXAMPLES, example_batch

LIMITS = DecodeLimits(max_examples=4, max_features=3)


def _example(features: dict[str, list[float]]) -> example_pb2.Example:
    example = example_pb2.Example()
    for name, values in features.items():
        example.features.feature[name].float_list.value.extend(values)
    return example


def _list(*examples: example_pb2.Example) -> input_pb2.Input:
    inp = input_pb2.Input()
    inp.example_list.examples.extend(examples)
    return inp


def _with_context(context: example_pb2.Example, *examples: example_pb2.Example) -> input_pb2.Input:
    inp = input_pb2.Input()
    inp.example_list_with_context.context.CopyFrom(context)
    inp.example_list_with_context.examples.extend(examples)
    return inp


def _named(n: int, prefix: str = "f") -> dict[str, list[float]]:
    return {f"{prefix}{i}": [1.0] for i in range(n)}


def test_more_examples_than_the_limit_are_refused_naming_the_key():
    with pytest.raises(ResourceExhausted, match=r"5 examples; at most 4 .*server\.max_examples"):
        example_batch(_list(*[_example({"x": [1.0]})] * 5), LIMITS)
    with pytest.raises(ResourceExhausted, match=r"server\.max_examples"):
        example_batch(_with_context(_example({}), *[_example({"x": [1.0]})] * 5), LIMITS)
    assert len(example_batch(_list(*[_example({"x": [1.0]})] * 4), LIMITS).serialized) == 4


@pytest.mark.parametrize("same_size", [True, False])
def test_an_example_with_more_features_than_the_limit_is_refused(same_size):
    # same-size examples are cut vectorised (one size for all), others one by one
    small = _named(4) if same_size else {"x": [1.0]}
    inp = _list(_example(small), _example(_named(4)))
    with pytest.raises(
        ResourceExhausted,
        match=r"input\.example_list\.examples\[\d\] has 4 features; at most 3 .*server\.max_features",
    ):
        example_batch(inp, LIMITS)
    at_limit = example_batch(_list(_example(_named(3)), _example({"x": [1.0, 2.0]})), LIMITS)
    assert len(at_limit.serialized) == 2


def test_a_context_or_example_with_more_features_than_the_limit_is_refused():
    with pytest.raises(
        ResourceExhausted,
        match=r"input\.example_list_with_context\.context has 4 features.*server\.max_features",
    ):
        example_batch(_with_context(_example(_named(4, "c")), _example({"x": [1.0]})), LIMITS)
    with pytest.raises(
        ResourceExhausted,
        match=r"input\.example_list_with_context\.examples\[0\] has 4 features",
    ):
        example_batch(_with_context(_example({}), _example(_named(4))), LIMITS)
    # at the limit each: accepted (the merged example may name more)
    batch = example_batch(_with_context(_example(_named(3, "c")), _example(_named(3))), LIMITS)
    assert batch.feature_names() == frozenset(_named(3, "c")) | frozenset(_named(3))


def _merged(inp: input_pb2.Input) -> list[bytes]:
    if inp.WhichOneof("kind") == "example_list":
        return [e.SerializeToString() for e in inp.example_list.examples]
    ctx = inp.example_list_with_context.context
    out = []
    for example in inp.example_list_with_context.examples:
        full = example_pb2.Example()
        full.CopyFrom(ctx)
        full.MergeFrom(example)
        out.append(full.SerializeToString())
    return out


def _examples(kind: str, n: int) -> list[example_pb2.Example]:
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        example = example_pb2.Example()
        features = example.features.feature
        if kind == "same_size":
            features["x"].float_list.value.extend(rng.normal(size=2).tolist())
        elif kind == "varied":  # varints of different sizes, never 0
            features["k"].int64_list.value.extend(rng.integers(1, 10**9, size=2).tolist())
        elif kind == "nul":  # some end in a NUL byte: not held as fixed-width bytes
            features["k"].int64_list.value.append(i % 2)
        elif kind == "ragged":  # one large example: padding would cost too much
            features["s"].bytes_list.value.append(b"s" * (50_000 if i == 0 else 3))
        out.append(example)
    return out


@pytest.mark.parametrize("kind", ["same_size", "varied", "nul", "ragged"])
@pytest.mark.parametrize("n", [1, 3, COMPACT_MIN_EXAMPLES + 5])
def test_serialized_examples_are_those_of_each_example(kind, n):
    inp = _list(*_examples(kind, n))
    serialized = example_batch(inp).serialized
    assert serialized.shape == (n,)
    assert serialized.tolist() == _merged(inp)
    compact = n >= COMPACT_MIN_EXAMPLES and kind in ("same_size", "varied")
    assert serialized.dtype.kind == ("S" if compact else "O")


def test_serialized_examples_with_a_context_are_merged_like_tf_serving():
    context = _example({"c": [2.5], "x": [9.0]})
    inp = _with_context(context, *[_example({"x": [float(i + 1)]}) for i in range(3000)])
    batch = example_batch(inp)
    assert batch.serialized.tolist() == _merged(inp)
    features = batch.features(["x", "c"])
    np.testing.assert_array_equal(features["x"], np.arange(1, 3001, dtype=np.float32))
    np.testing.assert_array_equal(features["c"], np.full(3000, 2.5, dtype=np.float32))


def test_an_example_list_with_unknown_fields_is_serialized_one_example_at_a_time():
    examples = _examples("same_size", COMPACT_MIN_EXAMPLES)
    inp = _list(*examples)
    raw = inp.example_list.SerializeToString() + b"\x28\x01"  # field 5: unknown
    odd = input_pb2.Input()
    odd.example_list.MergeFromString(raw)
    assert example_batch(odd).serialized.tolist() == [e.SerializeToString() for e in examples]


def test_features_decode_from_fixed_width_serialized_examples():
    inp = _list(*[_example({"x": [float(i), -1.0]}) for i in range(COMPACT_MIN_EXAMPLES)])
    batch = example_batch(inp)
    assert batch.serialized.dtype.kind == "S"
    x = batch.features(["x"])["x"]
    assert x.shape == (COMPACT_MIN_EXAMPLES, 2)
    np.testing.assert_array_equal(x[:, 0], np.arange(COMPACT_MIN_EXAMPLES, dtype=np.float32))
