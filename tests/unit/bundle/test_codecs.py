"""The bundle codecs cover the whole wire format and keep its validation errors."""

from __future__ import annotations

import pytest

from gateway._proto.gateway.v1 import preprocessing_pb2 as pb
from gateway._proto.gateway.v1 import statistics_pb2 as spb
from gateway.bundle.preprocessing_codec import (
    kind_from_proto,
    kind_to_proto,
    transform_from_proto,
    transform_kinds,
)
from gateway.bundle.statistics_codec import histogram_from_proto, statistics_from_proto
from gateway.preprocessing.transforms import ENCODING_MODES, transform_names
from gateway.preprocessing.values import ValueKind


def test_every_transform_oneof_field_and_registered_name_has_a_codec() -> None:
    oneof = [f.name for f in pb.Transform.DESCRIPTOR.oneofs_by_name["kind"].fields]
    assert sorted(transform_kinds()) == sorted(oneof)
    assert set(transform_names()) <= set(transform_kinds())


def test_every_encoding_mode_and_value_kind_has_a_wire_value() -> None:
    for mode in ENCODING_MODES:
        msg = pb.Transform(category_encoding=pb.CategoryEncoding(mode=mode.upper(), num_tokens=2))
        assert transform_from_proto(msg).mode == mode  # type: ignore[attr-defined]
    for kind in ValueKind:
        assert kind_from_proto(kind_to_proto(kind)) is kind


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        (pb.Transform(vocabulary=pb.Vocabulary()), "vocabulary: no tokens"),
        (pb.Transform(fill_missing=pb.FillMissing()), "fill_missing: no value"),
        (pb.Transform(category_encoding=pb.CategoryEncoding(num_tokens=2)), "unspecified mode"),
        (pb.Transform(hashing=pb.Hashing(num_bins=0)), "num_bins must be > 0"),
        (pb.Transform(hashing=pb.Hashing(num_bins=2, salt=[1, 2, 3])), "two integers"),
        (pb.Transform(bucketize=pb.Bucketize(boundaries=[2.0, 1.0])), "sorted"),
    ],
)
def test_invalid_transform_messages_raise_the_domain_errors(msg: pb.Transform, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        transform_from_proto(msg)


def test_invalid_statistics_messages_raise_the_domain_errors() -> None:
    with pytest.raises(ValueError, match="len\\(edges\\) == len\\(counts\\) \\+ 1"):
        histogram_from_proto(spb.Histogram(edges=[0.0], counts=[1]))
    no_stats = spb.FeatureStatistics(
        features=[spb.FeatureStats(feature="x", kind=pb.VALUE_KIND_FLOAT)]
    )
    with pytest.raises(ValueError, match="exactly one of numeric/categorical"):
        statistics_from_proto(no_stats)
    with pytest.raises(ValueError, match="unspecified or unknown value kind 0"):
        statistics_from_proto(spb.FeatureStatistics(features=[spb.FeatureStats(feature="x")]))
