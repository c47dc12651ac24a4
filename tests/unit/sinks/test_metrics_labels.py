"""Request metrics never take a label value a client made up (found by the fuzzer: every
random model name or version became a time series held forever)."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.core.states import VersionState, VersionStatus
from gateway.sinks.metrics import Metrics


def test_unknown_models_and_versions_are_bounded_labels():
    metrics = Metrics()
    metrics.on_state(VersionStatus("m", 1, VersionState.AVAILABLE))
    for i in range(500):
        metrics.observe_request("Predict", f"fuzz-{i}", str(i), "NOT_FOUND", 0.001, "tfs_grpc")
        metrics.observe_request("Predict", "m", str(1000 + i), "NOT_FOUND", 0.001, "tfs_grpc")
    metrics.observe_request("Predict", "m", "1", "OK", 0.001, "tfs_grpc")
    metrics.observe_request("Predict", "", "", "INVALID_ARGUMENT", 0.0, "tfs_grpc")
    series = {
        (s.labels["model"], s.labels["version"], s.labels["code"]): s.value
        for family in metrics.registry.collect()
        if family.name == "gateway_requests"
        for s in family.samples
        if s.name == "gateway_requests_total"
    }
    assert series == {
        ("(unknown)", "", "NOT_FOUND"): 500.0,
        ("m", "", "NOT_FOUND"): 500.0,
        ("m", "1", "OK"): 1.0,
        ("", "", "INVALID_ARGUMENT"): 1.0,
    }


def test_unexpected_feature_names_share_one_label():
    metrics = Metrics()
    mismatches = [
        SimpleNamespace(feature=f"junk{i}", kind="unexpected_feature", action="log")
        for i in range(100)
    ] + [SimpleNamespace(feature="age", kind="out_of_range", action="log")]
    metrics.on_mismatches("m", 1, mismatches)
    features = {
        s.labels["feature"]
        for family in metrics.registry.collect()
        if family.name == "gateway_feature_mismatches"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert features == {"(unexpected)", "age"}
