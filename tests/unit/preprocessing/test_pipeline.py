"""Preprocessing pipeline: fitting, batch application, raw signature, serialization."""

from __future__ import annotations

import numpy as np
import pytest

from gateway._proto.gateway.v1 import preprocessing_pb2 as pb
from gateway.bundle.preprocessing_codec import (
    preprocessing_from_proto,
    preprocessing_from_text,
    preprocessing_to_proto,
    preprocessing_to_text,
)
from gateway.preprocessing.pipeline import (
    FeaturePreprocessing,
    Preprocessing,
    PreprocessingError,
    RawFeatureSpec,
)
from gateway.preprocessing.transforms import (
    Clip,
    FillMissing,
    Standardize,
    TransformSpec,
    Vocabulary,
)
from gateway.preprocessing.values import ValueKind

TRAIN = {
    "age": np.array([[20.0], [30.0], [np.nan], [40.0]], dtype=np.float32),
    "city": np.array([["paris"], ["oslo"], ["paris"], [""]], dtype=object),
    "clicks": np.array([[1, 2], [3, 4], [5, 6], [7, 8]]),
    "raw_id": np.array([10, 11, 12, 13]),
}
SPECS: dict[str, TransformSpec | list[TransformSpec]] = {
    "age": ["fill_missing", "standardize"],
    "city": [{"kind": "fill_missing", "value": "unknown"}, {"kind": "vocabulary"}],
    "clicks": {"kind": "clip", "lo": 0, "hi": 6},
}


@pytest.fixture(scope="module")
def pre() -> Preprocessing:
    return Preprocessing.fit(TRAIN, SPECS)


def test_fit_builds_chains_and_raw_signature(pre: Preprocessing) -> None:
    assert pre.raw_signature() == {
        "age": RawFeatureSpec(ValueKind.FLOAT, (1,)),
        "city": RawFeatureSpec(ValueKind.STRING, (1,)),
        "clicks": RawFeatureSpec(ValueKind.INT, (2,)),
        "raw_id": RawFeatureSpec(ValueKind.INT, ()),
    }
    age = pre.features["age"].transforms
    assert age[0] == FillMissing(30.0)
    assert isinstance(age[1], Standardize)
    city = pre.features["city"].transforms
    assert city == (FillMissing("unknown"), Vocabulary(("paris", "unknown", "oslo")))
    assert pre.features["clicks"].transforms == (Clip(0.0, 6.0),)
    assert pre.features["raw_id"].transforms == ()


def test_apply_transforms_whole_batch_and_passes_through_the_rest(pre: Preprocessing) -> None:
    batch = {
        "age": np.array([[30.0], [np.nan], [50.0]], dtype=np.float32),
        "city": np.array([[b"oslo"], [b""], [b"rome"]], dtype=object),
        "clicks": np.array([[-1, 2], [9, 3], [0, 0]]),
        "raw_id": np.array([1, 2, 3]),
        "extra": np.array([0.5, 0.5, 0.5]),
    }
    out = pre.apply(batch)
    assert set(out) == set(batch)
    std = float(np.std([20.0, 30.0, 30.0, 40.0]))
    np.testing.assert_allclose(out["age"], [[0.0], [0.0], [20.0 / std]], rtol=1e-6)
    np.testing.assert_array_equal(out["city"], [[3], [2], [0]])
    np.testing.assert_array_equal(out["clicks"], [[0, 2], [6, 3], [0, 0]])
    assert out["raw_id"] is batch["raw_id"]
    assert out["extra"] is batch["extra"]
    # missing features are simply absent (the feature checker reports them)
    assert set(pre.apply({"raw_id": batch["raw_id"]})) == {"raw_id"}


def test_apply_errors_name_the_feature(pre: Preprocessing) -> None:
    with pytest.raises(PreprocessingError, match="feature 'age'"):
        pre.apply({"age": np.array([["x"]])})
    with pytest.raises(PreprocessingError, match="feature 'city'"):
        pre.apply({"city": np.array([[1.5]])})


def test_proto_and_text_round_trip(pre: Preprocessing) -> None:
    msg = preprocessing_to_proto(pre)
    assert [f.feature for f in msg.features] == ["age", "city", "clicks", "raw_id"]
    assert preprocessing_from_proto(msg) == pre
    back = preprocessing_from_proto(pb.Preprocessing.FromString(msg.SerializeToString()))
    assert back == pre
    text = preprocessing_to_text(pre)
    assert 'feature: "city"' in text
    assert "kind: VALUE_KIND_STRING" in text
    assert 'fill_missing {\n      text: "unknown"' in text
    assert 'values: "paris"' in text
    assert preprocessing_from_text(text) == pre


def test_from_proto_rejects_duplicates_and_unspecified_kind() -> None:
    msg = pb.Preprocessing()
    msg.features.add(feature="a", raw=pb.RawFeatureSpec(kind=pb.VALUE_KIND_FLOAT))
    msg.features.add(feature="a", raw=pb.RawFeatureSpec(kind=pb.VALUE_KIND_FLOAT))
    with pytest.raises(ValueError, match="duplicate"):
        preprocessing_from_proto(msg)
    bad = pb.Preprocessing()
    bad.features.add(feature="a")
    with pytest.raises(ValueError, match="unspecified"):
        preprocessing_from_proto(bad)


def test_fit_rejects_specs_without_training_values() -> None:
    with pytest.raises(ValueError, match="no training values"):
        Preprocessing.fit(TRAIN, {"nope": "standardize"})


def test_manual_construction() -> None:
    pre = Preprocessing(
        {
            "x": FeaturePreprocessing(
                RawFeatureSpec(ValueKind.FLOAT), (Standardize.of(1.0, 2.0), Clip(-1.0, 1.0))
            )
        }
    )
    np.testing.assert_allclose(pre.apply({"x": np.array([1.0, 3.0, 9.0])})["x"], [0, 1, 1])
    assert "x: [standardize, clip]" in repr(pre)
