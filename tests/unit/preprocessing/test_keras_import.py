"""Transforms imported from Keras preprocessing layers equal the layers' own outputs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway._proto.gateway.v1 import preprocessing_pb2 as pb
from gateway.bundle.preprocessing_codec import (
    preprocessing_from_proto,
    preprocessing_to_proto,
    transform_from_proto,
    transform_to_proto,
)
from gateway.preprocessing.keras_import import from_keras_layer, preprocessing_from_keras
from gateway.preprocessing.pipeline import RawFeatureSpec
from gateway.preprocessing.transforms import (
    Bucketize,
    CategoryEncoding,
    Hashing,
    Standardize,
    Transform,
    Vocabulary,
)
from gateway.preprocessing.values import ValueKind

L = keras.layers
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RNG = np.random.default_rng(1234)
TRAIN_NUM = RNG.normal(3.0, 2.0, (200, 3)).astype("float32")
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "théta"]
TRAIN_WORDS = np.array(RNG.choice(WORDS[:6], 300))
TRAIN_INTS = RNG.integers(0, 12, 300)


def _chain(layer: object) -> list[Transform]:
    """The layer's transforms as serving applies them: imported, serialized to bytes (what
    the bundle stores) and parsed back, so every property below is about the served form."""
    return [
        transform_from_proto(pb.Transform.FromString(transform_to_proto(t).SerializeToString()))
        for t in from_keras_layer(layer)
    ]


def _apply(chain: list[Transform], x: np.ndarray) -> np.ndarray:
    for t in chain:
        x = t.apply(x)
    return x


def _assert_same(layer: object, chain: list[Transform], x: np.ndarray) -> None:
    expected = np.asarray(layer(x))  # type: ignore[operator]
    got = _apply(chain, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(
        got.astype(np.float64), expected.astype(np.float64), rtol=1e-6, atol=1e-6
    )


def _norm(**kw: object) -> keras.layers.Layer:
    layer = L.Normalization(**kw)
    layer.adapt(TRAIN_NUM)
    return layer


def _norm_col(**kw: object) -> keras.layers.Layer:
    layer = L.Normalization(**kw)
    layer.adapt(TRAIN_NUM[:, :1])
    return layer


NORMALIZATION = [
    _norm(),  # per column of [batch, 3]
    _norm(axis=None),  # one mean/variance
    _norm(invert=True),
    _norm_col(),  # [batch, 1]
    L.Normalization(mean=[1.0, 0.0, -2.0], variance=[4.0, 0.0, 0.25]),  # zero variance
]
NORMALIZATION[-1].build((None, 3))
NORM_CHAINS = [_chain(layer) for layer in NORMALIZATION]

floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@SETTINGS
@given(data=st.data(), batch=st.integers(1, 8))
def test_normalization_matches_keras(data: st.DataObject, batch: int) -> None:
    for layer, chain in zip(NORMALIZATION, NORM_CHAINS, strict=True):
        cols = 1 if layer is NORMALIZATION[3] else 3
        x = data.draw(hnp.arrays(np.float32, (batch, cols), elements=floats))
        _assert_same(layer, chain, x)


def _disc(mode: str, **kw: object) -> keras.layers.Layer:
    layer = L.Discretization(output_mode=mode, **kw)
    if "bin_boundaries" not in kw:
        layer.adapt(TRAIN_NUM[:, 0])
    return layer


DISCRETIZATION = [
    _disc("int", num_bins=6),
    _disc("int", bin_boundaries=[-1.0, 0.1, 0.2, 3.3, 7.0]),
    _disc("one_hot", num_bins=4),
    _disc("multi_hot", num_bins=5),
    _disc("count", bin_boundaries=[0.0, 2.5, 5.0]),
]
DISC_CHAINS = [_chain(layer) for layer in DISCRETIZATION]


@SETTINGS
@given(
    data=st.data(),
    batch=st.integers(1, 8),
    boundary_hits=st.lists(st.sampled_from([-1.0, 0.1, 0.2, 3.3, 7.0, 0.0, 2.5, 5.0]), max_size=4),
)
def test_discretization_matches_keras(
    data: st.DataObject, batch: int, boundary_hits: list[float]
) -> None:
    elements = st.one_of(st.floats(-10, 15, width=32), st.sampled_from(boundary_hits or [0.0]))
    for layer, chain in zip(DISCRETIZATION, DISC_CHAINS, strict=True):
        cols = 1 if layer.output_mode == "one_hot" else data.draw(st.integers(1, 3))
        x = data.draw(hnp.arrays(np.float32, (batch, cols), elements=elements))
        _assert_same(layer, chain, x)


def _string_lookup(**kw: object) -> keras.layers.Layer:
    layer = L.StringLookup(**kw)
    if "vocabulary" not in kw:
        layer.adapt(TRAIN_WORDS)
    return layer


STRING_LOOKUP = [
    _string_lookup(),
    _string_lookup(num_oov_indices=0, vocabulary=WORDS),
    _string_lookup(num_oov_indices=3),
    _string_lookup(mask_token=""),
    _string_lookup(mask_token="", num_oov_indices=2),
    _string_lookup(num_oov_indices=4, salt=(7, 11)),
    _string_lookup(vocabulary=["b", "a", "théta", "c"], max_tokens=None),
    _string_lookup(output_mode="one_hot"),
    _string_lookup(output_mode="multi_hot", mask_token=""),
    _string_lookup(output_mode="count", num_oov_indices=2),
    _string_lookup(output_mode="multi_hot", max_tokens=12, pad_to_max_tokens=True),
]
STRING_CHAINS = [_chain(layer) for layer in STRING_LOOKUP]
token_text = st.one_of(st.sampled_from([*WORDS, "", "a", "b"]), st.text(max_size=6))


@SETTINGS
@given(data=st.data(), batch=st.integers(1, 6))
def test_string_lookup_matches_keras(data: st.DataObject, batch: int) -> None:
    for layer, chain in zip(STRING_LOOKUP, STRING_CHAINS, strict=True):
        if layer.num_oov_indices == 0:
            text = st.sampled_from(WORDS)
        else:
            text = token_text.filter(lambda s: "\x00" not in s)
        cols = 1 if layer.output_mode == "one_hot" else data.draw(st.integers(1, 3))
        x = np.array(data.draw(st.lists(text, min_size=batch * cols, max_size=batch * cols)))
        x = x.astype(object).reshape(batch, cols)
        _assert_same(layer, chain, x)


def _integer_lookup(**kw: object) -> keras.layers.Layer:
    layer = L.IntegerLookup(**kw)
    if "vocabulary" not in kw:
        layer.adapt(TRAIN_INTS)
    return layer


INTEGER_LOOKUP = [
    _integer_lookup(),
    _integer_lookup(num_oov_indices=3),
    _integer_lookup(mask_token=0),
    _integer_lookup(num_oov_indices=3, oov_method="farmhash"),
    _integer_lookup(num_oov_indices=2, oov_method="farmhash", salt=5),
    _integer_lookup(num_oov_indices=0, vocabulary=list(range(-3, 20))),
    _integer_lookup(output_mode="one_hot"),
    _integer_lookup(output_mode="multi_hot", mask_token=0),
    _integer_lookup(output_mode="count"),
]
INTEGER_CHAINS = [_chain(layer) for layer in INTEGER_LOOKUP]


@SETTINGS
@given(data=st.data(), batch=st.integers(1, 6))
def test_integer_lookup_matches_keras(data: st.DataObject, batch: int) -> None:
    for layer, chain in zip(INTEGER_LOOKUP, INTEGER_CHAINS, strict=True):
        if layer.num_oov_indices == 0:
            ints = st.integers(-3, 19)
        else:
            ints = st.one_of(st.integers(-3, 15), st.integers(-(2**40), 2**40))
        cols = 1 if layer.output_mode == "one_hot" else data.draw(st.integers(1, 3))
        x = data.draw(hnp.arrays(np.int64, (batch, cols), elements=ints))
        _assert_same(layer, chain, x)


HASHING = [
    L.Hashing(num_bins=7),
    L.Hashing(num_bins=7, mask_value=""),
    L.Hashing(num_bins=9, salt=3),
    L.Hashing(num_bins=5, output_mode="multi_hot"),
    L.Hashing(num_bins=5, output_mode="count"),
]
HASH_CHAINS = [_chain(layer) for layer in HASHING]
INT_HASHING = [L.Hashing(num_bins=11), L.Hashing(num_bins=11, mask_value=0)]
INT_HASH_CHAINS = [_chain(layer) for layer in INT_HASHING]


@SETTINGS
@given(data=st.data(), batch=st.integers(1, 6), cols=st.integers(1, 3))
def test_hashing_matches_keras(data: st.DataObject, batch: int, cols: int) -> None:
    text = token_text.filter(lambda s: "\x00" not in s)
    words = data.draw(st.lists(text, min_size=batch * cols, max_size=batch * cols))
    x = np.array(words, dtype=object).reshape(batch, cols)
    for layer, chain in zip(HASHING, HASH_CHAINS, strict=True):
        _assert_same(layer, chain, x)
    xi = data.draw(hnp.arrays(np.int64, (batch, cols), elements=st.integers(-1000, 1000)))
    for layer, chain in zip(INT_HASHING, INT_HASH_CHAINS, strict=True):
        _assert_same(layer, chain, xi)


CATEGORY_ENCODING = [
    L.CategoryEncoding(num_tokens=6, output_mode="one_hot"),
    L.CategoryEncoding(num_tokens=6, output_mode="multi_hot"),
    L.CategoryEncoding(num_tokens=6, output_mode="count"),
]
CAT_CHAINS = [_chain(layer) for layer in CATEGORY_ENCODING]


@SETTINGS
@given(data=st.data(), batch=st.integers(1, 6))
def test_category_encoding_matches_keras(data: st.DataObject, batch: int) -> None:
    for layer, chain in zip(CATEGORY_ENCODING, CAT_CHAINS, strict=True):
        cols = data.draw(st.integers(1, 4))
        x = data.draw(hnp.arrays(np.int64, (batch, cols), elements=st.integers(0, 5)))
        _assert_same(layer, chain, x)


_NORM_SCALAR = L.Normalization(axis=None)
_NORM_SCALAR.adapt(TRAIN_NUM[:, 0])  # adapted on [batch] values: one mean/variance
RANK1 = [
    (_NORM_SCALAR, "float"),
    (DISCRETIZATION[0], "float"),
    (DISCRETIZATION[2], "float"),  # one_hot: [batch] -> [batch, bins]
    (STRING_LOOKUP[0], "text"),
    (STRING_LOOKUP[2], "text"),
    (STRING_LOOKUP[7], "text"),
    (INTEGER_LOOKUP[0], "int"),
    (INTEGER_LOOKUP[3], "int"),
    (INTEGER_LOOKUP[6], "int"),
    (HASHING[0], "text"),
    (HASHING[2], "text"),
    (INT_HASHING[1], "int"),
    (CATEGORY_ENCODING[0], "index"),
]
RANK1_CHAINS = [_chain(layer) for layer, _ in RANK1]


@SETTINGS
@given(data=st.data(), batch=st.integers(1, 8))
def test_rank1_batches_match_keras(data: st.DataObject, batch: int) -> None:
    """Scalar features arrive as [batch] arrays (e.g. a string category per row)."""
    elements = {
        "float": hnp.arrays(np.float32, (batch,), elements=st.floats(-10, 15, width=32)),
        "text": st.lists(
            token_text.filter(lambda s: "\x00" not in s), min_size=batch, max_size=batch
        ).map(lambda v: np.array(v, dtype=object)),
        "int": hnp.arrays(np.int64, (batch,), elements=st.integers(-5, 20)),
        "index": hnp.arrays(np.int64, (batch,), elements=st.integers(0, 5)),
    }
    for (layer, kind), chain in zip(RANK1, RANK1_CHAINS, strict=True):
        _assert_same(layer, chain, data.draw(elements[kind]))


def test_imported_chains_have_expected_types() -> None:
    norms = [chain[0] for chain in NORM_CHAINS[:3]]
    assert all(isinstance(t, Standardize) for t in norms)
    assert [t.shape for t in norms if isinstance(t, Standardize)] == [(3,), (), (3,)]
    assert [t.invert for t in norms if isinstance(t, Standardize)] == [False, False, True]
    assert [type(t) for t in DISC_CHAINS[2]] == [Bucketize, CategoryEncoding]
    lookup = STRING_CHAINS[3][0]
    assert isinstance(lookup, Vocabulary)
    assert lookup.mask_token == "" and lookup.oov_start == 1
    assert isinstance(STRING_CHAINS[8][0], Vocabulary) and STRING_CHAINS[8][0].drop_mask
    assert isinstance(INTEGER_CHAINS[1][0], Vocabulary)
    assert INTEGER_CHAINS[1][0].oov_hash == "floormod"
    assert [type(t) for t in HASH_CHAINS[3]] == [Hashing, CategoryEncoding]


def test_imported_chains_round_trip_through_protos() -> None:
    chains = NORM_CHAINS + DISC_CHAINS + STRING_CHAINS + INTEGER_CHAINS + HASH_CHAINS + CAT_CHAINS
    for chain in chains:
        for t in chain:
            assert transform_from_proto(transform_to_proto(t), type(t)) == t


@pytest.mark.parametrize(
    ("layer", "needle"),
    [
        (L.StringLookup(vocabulary=["a"], invert=True), "invert=True"),
        (L.StringLookup(vocabulary=["a"], output_mode="tf_idf", idf_weights=[1.0]), "tf_idf"),
        (L.Hashing(num_bins=3, output_mode="multi_hot", sparse=True), "sparse=True"),
        (L.Discretization(num_bins=3), "not adapted"),
        (L.Normalization(), "not adapted"),
        (L.Dense(2), "unsupported layer type"),
        (L.Rescaling(2.0), "unsupported layer type"),
    ],
)
def test_unsupported_layers_raise_clear_errors(layer: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        from_keras_layer(layer)
    assert type(layer).__name__ in str(info.value)


def test_preprocessing_from_keras_builds_a_pipeline() -> None:
    raw = {
        "x": RawFeatureSpec(ValueKind.FLOAT, (3,)),
        "word": RawFeatureSpec(ValueKind.STRING, (1,)),
        "id": RawFeatureSpec(ValueKind.INT, (1,)),
    }
    pre = preprocessing_from_keras({"x": NORMALIZATION[0], "word": STRING_LOOKUP[0]}, raw)
    assert pre.raw_signature() == raw
    assert pre.features["id"].transforms == ()
    batch = {
        "x": TRAIN_NUM[:4],
        "word": np.array([["alpha"], ["nope"], ["beta"], ["zeta"]], dtype=object),
        "id": np.arange(4).reshape(4, 1),
    }
    out = pre.apply(batch)
    np.testing.assert_allclose(out["x"], np.asarray(NORMALIZATION[0](batch["x"])), atol=1e-6)
    np.testing.assert_array_equal(out["word"], np.asarray(STRING_LOOKUP[0](batch["word"])))
    assert out["id"] is batch["id"]
    assert preprocessing_from_proto(preprocessing_to_proto(pre)) == pre
    with pytest.raises(ValueError, match="no raw signature"):
        preprocessing_from_keras({"other": HASHING[0]}, raw)
