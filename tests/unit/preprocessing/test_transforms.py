"""Named transforms: fitting, vectorized semantics, and proto round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._proto.gateway.v1 import preprocessing_pb2 as pb
from gateway.bundle.preprocessing_codec import transform_from_proto, transform_to_proto
from gateway.preprocessing.transforms import (
    Bucketize,
    CategoryEncoding,
    Clip,
    FillMissing,
    Hashing,
    Log1p,
    MinMax,
    Standardize,
    Transform,
    Vocabulary,
    fit_chain,
    fit_named,
    fit_spec,
    transform_names,
)
from gateway.preprocessing.values import PreprocessingError

TRAIN = np.array([[1.0], [2.0], [3.0], [np.nan], [4.0]])


def test_registry_names() -> None:
    assert set(transform_names()) >= {
        "standardize",
        "min_max",
        "clip",
        "log1p",
        "bucketize",
        "vocabulary",
        "fill_missing",
    }
    with pytest.raises(ValueError, match="unknown transform 'nope'"):
        fit_named("nope", TRAIN)
    with pytest.raises(ValueError, match="bad parameters"):
        fit_named("standardize", TRAIN, bogus=1)


def test_standardize_fit_and_apply() -> None:
    t = fit_named("standardize", TRAIN)
    assert isinstance(t, Standardize)
    assert t.mean == (2.5,)
    assert t.std[0] == pytest.approx(np.sqrt(1.25))
    out = t.apply(np.array([[2.5], [2.5 + np.sqrt(1.25)]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0], [1.0]], atol=1e-6)


def test_standardize_zero_std_divides_by_one_and_per_element() -> None:
    t = Standardize.of(5.0, 0.0)
    np.testing.assert_array_equal(t.apply(np.array([5.0, 7.0])), [0.0, 2.0])
    pe = Standardize.fit(np.array([[1.0, 10.0], [3.0, 10.0]]), per_element=True)
    assert pe.shape == (2,) and pe.mean == (2.0, 10.0) and pe.std == (1.0, 0.0)
    np.testing.assert_array_equal(pe.apply(np.array([[3.0, 12.0]])), [[1.0, 2.0]])
    with pytest.raises(PreprocessingError, match="expected"):
        pe.apply(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="need 2 value"):
        Standardize((1.0,), (1.0,), (2,))


def test_min_max() -> None:
    t = fit_named("min_max", TRAIN)
    assert (t.min, t.max) == (1.0, 4.0)  # type: ignore[attr-defined]
    np.testing.assert_allclose(t.apply(np.array([1.0, 2.5, 4.0, 7.0])), [0, 0.5, 1, 2])
    clipped = fit_named("min_max", TRAIN, clip_output=True)
    np.testing.assert_allclose(clipped.apply(np.array([0.0, 7.0])), [0, 1])
    np.testing.assert_array_equal(MinMax(3.0, 3.0).apply(np.array([3.0, 4.0])), [0.0, 1.0])


def test_clip_defaults_to_training_range_or_given_bounds() -> None:
    assert fit_named("clip", TRAIN) == Clip(1.0, 4.0)
    assert fit_spec({"name": "clip", "lo": 0, "hi": 10}, TRAIN) == Clip(0.0, 10.0)
    assert fit_spec({"kind": "clip", "hi": 3}, TRAIN) == Clip(1.0, 3.0)
    out = Clip(None, 3.0).apply(np.array([-100.0, 5.0, np.nan]))
    np.testing.assert_array_equal(out, [-100.0, 3.0, np.nan])
    with pytest.raises(ValueError, match="lo"):
        Clip(2.0, 1.0)


def test_log1p() -> None:
    out = fit_named("log1p", TRAIN).apply(np.array([0.0, np.e - 1]))
    np.testing.assert_allclose(out, [0.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32


def test_bucketize_semantics_equal_np_digitize() -> None:
    t = Bucketize((0.0, 1.0, 2.0))
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, np.nan])
    np.testing.assert_array_equal(t.apply(x), np.digitize(x, [0.0, 1.0, 2.0], right=False))
    assert t.apply(x).dtype == np.int64 and t.num_buckets == 4


def test_bucketize_fit_quantiles() -> None:
    x = np.arange(100, dtype=np.float64)
    t = fit_named("bucketize", x, num_buckets=4)
    assert t == Bucketize((24.75, 49.5, 74.25))
    counts = np.bincount(t.apply(x), minlength=4)
    assert counts.tolist() == [25, 25, 25, 25]
    assert fit_named("bucketize", x, boundaries=[1, 2]) == Bucketize((1.0, 2.0))
    # duplicate quantiles collapse
    assert fit_named("bucketize", np.zeros(10), num_buckets=4) == Bucketize((0.0,))


def test_vocabulary_fit_orders_by_frequency_then_value_like_keras() -> None:
    x = np.array(["b", "a", "a", "c", "c", "d"])
    t = fit_named("vocabulary", x)
    assert isinstance(t, Vocabulary)
    assert t.tokens == ("c", "a", "d", "b")
    assert fit_named("vocabulary", x, max_tokens=2).tokens == ("c", "a")  # type: ignore[attr-defined]
    ints = fit_named("vocabulary", np.array([5, 5, 3, 9]), num_oov_buckets=2)
    assert ints.tokens == (5, 9, 3) and ints.oov_hash == "floormod"  # type: ignore[attr-defined]


def test_vocabulary_lookup_index_layout() -> None:
    t = Vocabulary(("x", "y", "z"))
    batch = np.array([["y"], ["q"], ["x"], ["z"]])
    np.testing.assert_array_equal(t.apply(batch), [[2], [0], [1], [3]])
    masked = Vocabulary(("x", "y"), mask_token="")
    np.testing.assert_array_equal(masked.apply(np.array([b"", b"x", b"q"])), [0, 2, 1])
    dropped = Vocabulary(("x", "y"), mask_token="", drop_mask=True)
    np.testing.assert_array_equal(dropped.apply(np.array([b"", b"x", b"q"])), [-1, 1, 0])
    floormod = Vocabulary((10, 20), num_oov_buckets=3)
    np.testing.assert_array_equal(floormod.apply(np.array([20, 7, -1, 10])), [4, 1, 2, 3])
    strict = Vocabulary(("x",), num_oov_buckets=0)
    np.testing.assert_array_equal(strict.apply(np.array(["x", "x"])), [0, 0])
    with pytest.raises(PreprocessingError, match="1 value"):
        strict.apply(np.array(["x", "secret"]))
    with pytest.raises(PreprocessingError, match="expected strings"):
        t.apply(np.array([1, 2]))


def test_vocabulary_accepts_every_string_array_flavour() -> None:
    t = Vocabulary(("é", "b"))
    expected = [1, 2, 0]
    for arr in (
        np.array(["é", "b", "c"]),
        np.array(["é".encode(), b"b", b"c"]),
        np.array(["é", b"b", "c"], dtype=object),
    ):
        np.testing.assert_array_equal(t.apply(arr), expected)


def test_vocabulary_validation() -> None:
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(("a", "a"))
    with pytest.raises(ValueError, match="empty"):
        Vocabulary(())
    with pytest.raises(ValueError, match="mask token"):
        Vocabulary(("a", ""), mask_token="")
    with pytest.raises(ValueError, match="all str or all int"):
        Vocabulary(("a", 1))  # type: ignore[arg-type]


def test_fill_missing() -> None:
    assert fit_named("fill_missing", TRAIN) == FillMissing(2.5)
    out = FillMissing(0.0).apply(np.array([1.0, np.nan], dtype=np.float32))
    assert out.dtype == np.float32 and out.tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(FillMissing("?").apply(np.array(["a", ""])), ["a", "?"])
    np.testing.assert_array_equal(FillMissing("?").apply(np.array([b"a", b""])), [b"a", b"?"])
    obj = FillMissing("?").apply(np.array(["a", None, b""], dtype=object))
    assert obj.tolist() == ["a", b"?", b"?"]
    assert fit_named("fill_missing", np.array(["a", "", "b", "b"])) == FillMissing("b")
    ints = np.array([1, 2])
    assert FillMissing(0).apply(ints) is ints


def test_hashing_is_farmhash_fingerprint() -> None:
    import tensorflow as tf

    words = np.array([["a"], ["b"], ["hello"]])
    out = Hashing(13).apply(words)
    expected = tf.strings.to_hash_bucket_fast(words, 13).numpy()
    np.testing.assert_array_equal(out, expected)
    masked = Hashing(5, mask_value="a").apply(words)
    assert masked[0, 0] == 0 and np.all(masked[1:] >= 1)
    flags = np.array([True, False])
    expected = tf.strings.to_hash_bucket_fast(tf.strings.as_string(flags), 13).numpy()
    np.testing.assert_array_equal(Hashing(13).apply(flags), expected)


def test_category_encoding_modes() -> None:
    x = np.array([[0, 2, 2], [3, -1, 9]])
    np.testing.assert_array_equal(
        CategoryEncoding("count", 4).apply(x), [[1, 0, 2, 0], [0, 0, 0, 1]]
    )
    np.testing.assert_array_equal(
        CategoryEncoding("multi_hot", 4).apply(x), [[1, 0, 1, 0], [0, 0, 0, 1]]
    )
    one = CategoryEncoding("one_hot", 3).apply(np.array([[2], [0], [7]]))
    np.testing.assert_array_equal(one, [[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    assert CategoryEncoding("one_hot", 3).apply(np.array([[1, 2]])).shape == (1, 2, 3)
    # rank-1 input is one value per row
    np.testing.assert_array_equal(
        CategoryEncoding("multi_hot", 3).apply(np.array([1, 2])), [[0, 1, 0], [0, 0, 1]]
    )
    assert fit_named("category_encoding", np.array([0, 4]), mode="count").num_tokens == 5  # type: ignore[attr-defined]


def test_fit_chain_fits_each_step_on_the_previous_output() -> None:
    chain = fit_chain(["fill_missing", "standardize"], TRAIN)
    assert chain[0] == FillMissing(2.5)
    # the NaN was filled with the mean before standardize was fitted
    assert chain[1] == Standardize.of(2.5, float(np.std([1.0, 2.0, 3.0, 2.5, 4.0])))
    assert fit_chain("log1p", TRAIN) == (Log1p(),)
    given_t = Clip(0.0, 1.0)
    assert fit_chain([given_t], TRAIN) == (given_t,)
    with pytest.raises(ValueError, match="'kind'"):
        fit_spec({"lo": 1}, TRAIN)


EXAMPLES: list[Transform] = [
    Standardize.of([1.0, 2.0], [0.5, 0.0]),
    Standardize.of(3.0, 2.0, invert=True),
    MinMax(-1.0, 5.0, clip_output=True),
    Clip(None, 4.0),
    Clip(-1.0, None),
    Log1p(),
    Bucketize((0.5, 1.5)),
    Vocabulary(("a", "b"), num_oov_buckets=2, mask_token="", salt=(1, 2)),
    Vocabulary((3, 1), num_oov_buckets=0, mask_token=0, drop_mask=True, oov_hash="farmhash"),
    FillMissing(1.5),
    FillMissing(7),
    FillMissing(""),
    Hashing(10, mask_value="", salt=(3, 3)),
    Hashing(4, mask_value=0),
    CategoryEncoding("multi_hot", 6),
]


@pytest.mark.parametrize("t", EXAMPLES, ids=lambda t: t.kind)
def test_proto_round_trip(t: Transform) -> None:
    msg = transform_to_proto(t)
    assert transform_from_proto(msg) == t
    assert transform_from_proto(msg, type(t)) == t
    text = text_format.MessageToString(msg)
    assert transform_from_proto(text_format.Parse(text, pb.Transform())) == t
    assert t.kind in text


@settings(max_examples=25, deadline=None)
@given(
    mean=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=4),
    boundaries=st.lists(st.floats(-1e6, 1e6), max_size=5).map(sorted),
    tokens=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
    oov=st.integers(0, 3),
)
def test_proto_round_trip_property(
    mean: list[float], boundaries: list[float], tokens: list[str], oov: int
) -> None:
    for t in (
        Standardize.of(np.array(mean), np.abs(np.array(mean))),
        Bucketize(tuple(boundaries)),
        Vocabulary(tuple(tokens), num_oov_buckets=oov),
    ):
        assert transform_from_proto(transform_to_proto(t)) == t


def test_from_proto_rejects_the_wrong_kind() -> None:
    with pytest.raises(ValueError, match="expected a 'clip'"):
        transform_from_proto(transform_to_proto(Log1p()), Clip)
    with pytest.raises(ValueError, match="no kind"):
        transform_from_proto(pb.Transform())
