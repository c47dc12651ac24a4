"""``gateway.v1.FeatureStatistics`` wire format <-> training statistics domain objects.

The domain classes (:mod:`gateway.analysis.statistics`) are pure numpy/dataclasses;
this module holds every conversion to and from their protobuf messages.
Decoding builds the domain objects through their constructors, so an invalid
message (e.g. a histogram with mismatched edges and counts) raises their
``ValueError``.
"""

from __future__ import annotations

from google.protobuf import text_format

from gateway._proto.gateway.v1 import statistics_pb2 as pb
from gateway.analysis.statistics import (
    CategoricalStats,
    FeatureStatistics,
    FeatureStats,
    Histogram,
    NumericStats,
)
from gateway.bundle.preprocessing_codec import kind_from_proto, kind_to_proto

__all__ = [
    "categorical_stats_from_proto",
    "categorical_stats_to_proto",
    "feature_stats_from_proto",
    "feature_stats_to_proto",
    "histogram_from_proto",
    "histogram_to_proto",
    "numeric_stats_from_proto",
    "numeric_stats_to_proto",
    "statistics_from_proto",
    "statistics_from_text",
    "statistics_to_proto",
    "statistics_to_text",
]


def histogram_to_proto(h: Histogram) -> pb.Histogram:
    """Serialize as ``gateway.v1.Histogram``."""
    return pb.Histogram(edges=h.edges, counts=h.counts)


def histogram_from_proto(msg: pb.Histogram) -> Histogram:
    """Deserialize ``gateway.v1.Histogram``."""
    return Histogram(tuple(msg.edges), tuple(int(c) for c in msg.counts))


def numeric_stats_to_proto(s: NumericStats) -> pb.NumericStats:
    """Serialize as ``gateway.v1.NumericStats``."""
    return pb.NumericStats(
        count=s.count,
        missing=s.missing,
        infinite=s.infinite,
        mean=s.mean,
        std=s.std,
        min=s.min,
        max=s.max,
        quantiles=[pb.Quantile(percentile=p, value=v) for p, v in s.quantiles],
        histogram=histogram_to_proto(s.histogram),
        quantile_histogram=histogram_to_proto(s.quantile_histogram),
    )


def numeric_stats_from_proto(msg: pb.NumericStats) -> NumericStats:
    """Deserialize ``gateway.v1.NumericStats``."""
    return NumericStats(
        count=int(msg.count),
        missing=int(msg.missing),
        infinite=int(msg.infinite),
        mean=msg.mean,
        std=msg.std,
        min=msg.min,
        max=msg.max,
        quantiles=tuple((q.percentile, q.value) for q in msg.quantiles),
        histogram=histogram_from_proto(msg.histogram),
        quantile_histogram=histogram_from_proto(msg.quantile_histogram),
    )


def categorical_stats_to_proto(s: CategoricalStats) -> pb.CategoricalStats:
    """Serialize as ``gateway.v1.CategoricalStats``."""
    msg = pb.CategoricalStats(
        count=s.count, missing=s.missing, unique=s.unique, other_count=s.other_count
    )
    for v, c in zip(s.values, s.counts, strict=True):
        if isinstance(v, str):
            msg.top_values.add(text=v, count=c)
        else:
            msg.top_values.add(integer=v, count=c)
    return msg


def categorical_stats_from_proto(msg: pb.CategoricalStats) -> CategoricalStats:
    """Deserialize ``gateway.v1.CategoricalStats``."""
    values: tuple[str, ...] | tuple[int, ...]
    if msg.top_values and msg.top_values[0].WhichOneof("value") == "integer":
        values = tuple(int(v.integer) for v in msg.top_values)
    else:
        values = tuple(v.text for v in msg.top_values)
    return CategoricalStats(
        count=int(msg.count),
        missing=int(msg.missing),
        unique=int(msg.unique),
        values=values,
        counts=tuple(int(v.count) for v in msg.top_values),
        other_count=int(msg.other_count),
    )


def feature_stats_to_proto(s: FeatureStats) -> pb.FeatureStats:
    """Serialize as ``gateway.v1.FeatureStats``."""
    msg = pb.FeatureStats(
        feature=s.feature, kind=kind_to_proto(s.kind), dtype=s.dtype, shape=s.shape
    )
    if s.numeric is not None:
        msg.numeric.CopyFrom(numeric_stats_to_proto(s.numeric))
    if s.categorical is not None:
        msg.categorical.CopyFrom(categorical_stats_to_proto(s.categorical))
    return msg


def feature_stats_from_proto(msg: pb.FeatureStats) -> FeatureStats:
    """Deserialize ``gateway.v1.FeatureStats``."""
    which = msg.WhichOneof("stats")
    return FeatureStats(
        feature=msg.feature,
        kind=kind_from_proto(msg.kind),
        dtype=msg.dtype,
        shape=tuple(int(d) for d in msg.shape),
        numeric=numeric_stats_from_proto(msg.numeric) if which == "numeric" else None,
        categorical=(
            categorical_stats_from_proto(msg.categorical) if which == "categorical" else None
        ),
    )


def statistics_to_proto(stats: FeatureStatistics) -> pb.FeatureStatistics:
    """Serialize as ``gateway.v1.FeatureStatistics`` (features sorted by name)."""
    return pb.FeatureStatistics(
        num_examples=stats.num_examples,
        features=[feature_stats_to_proto(f) for f in stats.features.values()],
    )


def statistics_from_proto(msg: pb.FeatureStatistics) -> FeatureStatistics:
    """Deserialize ``gateway.v1.FeatureStatistics``."""
    feats = [feature_stats_from_proto(f) for f in msg.features]
    return FeatureStatistics(int(msg.num_examples), {f.feature: f for f in feats})


def statistics_to_text(stats: FeatureStatistics) -> str:
    """Human-readable protobuf text format."""
    return str(text_format.MessageToString(statistics_to_proto(stats)))


def statistics_from_text(text: str) -> FeatureStatistics:
    """Parse the protobuf text format written by :func:`statistics_to_text`."""
    return statistics_from_proto(text_format.Parse(text, pb.FeatureStatistics()))
