"""The data plane over the fake runtime: routing, checks, methods, hooks (no TensorFlow)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from dataclasses import replace

import numpy as np
import pytest

from gateway.analysis.feature_checks import Action, CheckConfig, FeatureChecker
from gateway.analysis.statistics import compute_statistics
from gateway.config import BatchingConfig, FeatureChecksConfig
from gateway.core.dtypes import DT_FLOAT, DT_STRING
from gateway.core.errors import InvalidInput, NotFound
from gateway.core.inference import InferenceRequest, Method
from gateway.routing.router import Arm, RouteDecision
from gateway.serving.dataplane import Answer, DataPlane, RolloutStatistics
from gateway.serving.runner import VersionRunner
from gateway.testing import StaticTable, numpy_signature, numpy_version

X = np.array([[1.0], [2.0]], dtype=np.float32)


def run(coro):
    return asyncio.run(coro)


def scaled(factor: float):
    return lambda a: {"y": a["x"] * factor, "z": a["x"] + factor}


def two_outputs():
    return {"y": (DT_FLOAT, (None, 1)), "z": (DT_FLOAT, (None, 1))}


def versions():
    return [
        numpy_version("m", v, None, numpy_signature(scaled(float(v)), outputs=two_outputs()))
        for v in (1, 2)
    ]


class Hooks:
    def __init__(self):
        self.answers: list[Answer] = []

    def on_response(self, answer: Answer) -> None:
        self.answers.append(answer)


class FixedRouter:
    """Routes every keyless request to `arm` (version from the decision) like the controller."""

    def __init__(self, decision: RouteDecision):
        self.decision = decision
        self.calls: list[tuple[str, dict, object]] = []

    def route(self, model, headers, feature, available):
        self.calls.append((model, dict(headers), feature))
        d = self.decision
        if d.arm is Arm.CANARY and d.version not in available:
            return RouteDecision(Arm.PRIMARY, d.primary, "fallback", d.key, d.primary)
        return d


class Recorder:
    def __init__(self):
        self.rows: list[tuple] = []

    def record(self, model, arm, version, code, seconds):
        self.rows.append((model, arm, version, code))


def plane_of(table, **kw):
    return DataPlane(table, **kw)


def test_primary_answers_a_request_naming_no_version():
    table = StaticTable.of(*versions(), primary=1)
    result = run(plane_of(table).infer(InferenceRequest("m", inputs={"x": X})))
    assert (result.version, result.signature) == (1, "serving_default")
    np.testing.assert_allclose(result.outputs["y"], X * 1.0)


def test_newest_version_without_a_primary_and_explicit_version_and_label():
    table = StaticTable.of(*versions(), labels={"stable": 1})
    plane = plane_of(table)
    assert run(plane.infer(InferenceRequest("m", inputs={"x": X}))).version == 2
    assert run(plane.infer(InferenceRequest("m", inputs={"x": X}, version=1))).version == 1
    assert run(plane.infer(InferenceRequest("m", inputs={"x": X}, label="stable"))).version == 1
    with pytest.raises(NotFound, match="version 7 is not available"):
        run(plane.infer(InferenceRequest("m", inputs={"x": X}, version=7)))
    with pytest.raises(NotFound, match="model 'nope' not found"):
        run(plane.infer(InferenceRequest("nope", inputs={"x": X})))


def test_output_filter_keeps_the_named_outputs_and_refuses_unknown_ones():
    plane = plane_of(StaticTable.of(*versions()))
    result = run(plane.infer(InferenceRequest("m", inputs={"x": X}, output_filter=("z",))))
    assert list(result.outputs) == ["z"]
    with pytest.raises(InvalidInput, match="output_filter: unknown output alias 'w'"):
        run(plane.infer(InferenceRequest("m", inputs={"x": X}, output_filter=("w",))))


def test_validation_errors_name_the_input():
    plane = plane_of(StaticTable.of(*versions()))
    with pytest.raises(InvalidInput, match="missing input 'x'"):
        run(plane.infer(InferenceRequest("m", inputs={"q": X})))
    with pytest.raises(InvalidInput, match="input 'x': expected dtype float32"):
        run(plane.infer(InferenceRequest("m", inputs={"x": X.astype(np.int32)})))


def test_hooks_see_every_answer_with_its_code_route_and_outputs():
    hooks = Hooks()
    table = StaticTable.of(*versions(), primary=1)
    plane = plane_of(table, hooks=[hooks])
    run(plane.infer(InferenceRequest("m", inputs={"x": X}, request_id="r1", protocol="rest")))
    with pytest.raises(InvalidInput):
        run(plane.infer(InferenceRequest("m", inputs={"x": X.astype(np.int32)})))
    ok, bad = hooks.answers
    assert (ok.code, ok.version, ok.primary_version, ok.signature) == (
        "OK",
        1,
        1,
        "serving_default",
    )
    assert ok.request.request_id == "r1" and ok.request.protocol == "rest"
    np.testing.assert_allclose(ok.outputs["y"], X)
    assert ok.features is not None and ok.served_inputs is None
    assert bad.code == "INVALID_ARGUMENT" and bad.outputs is None


def test_one_routing_call_decides_and_a_missing_canary_falls_back_to_the_primary():
    recorder = Recorder()
    canary = RouteDecision(Arm.CANARY, 2, "keyed", "k1", 1)
    router = FixedRouter(canary)
    table = StaticTable.of(*versions(), primary=1)
    plane = plane_of(table, router=router, hooks=[RolloutStatistics(recorder)])
    result = run(plane.infer(InferenceRequest("m", inputs={"x": X}, headers={"user": "k1"})))
    assert result.version == 2
    assert len(router.calls) == 1 and router.calls[0][1] == {"user": "k1"}
    assert recorder.rows == [("m", Arm.CANARY, 2, "OK")]
    # explicit versions bypass the split and are not part of the experiment
    assert run(plane.infer(InferenceRequest("m", inputs={"x": X}, version=1))).version == 1
    assert len(router.calls) == 1 and len(recorder.rows) == 1
    # the canary disappears: the primary answers, recorded as the primary arm
    only_v1 = StaticTable.of(versions()[0], primary=1)
    plane = plane_of(only_v1, router=router, hooks=[RolloutStatistics(recorder)])
    assert run(plane.infer(InferenceRequest("m", inputs={"x": X}))).version == 1
    assert router.decision is canary and recorder.rows[-1] == ("m", Arm.CANARY, 2, "OK")


def test_rollout_statistics_count_only_the_split_and_record_failures():
    recorder = Recorder()
    hook = RolloutStatistics(recorder)
    request = InferenceRequest("m")
    for reason, arm in (
        ("keyed", Arm.CANARY),
        ("random", Arm.PRIMARY),
        ("explicit", Arm.CANARY),
        ("fallback", Arm.PRIMARY),
        ("no_rollout", Arm.PRIMARY),
    ):
        hook.on_response(Answer(request, 2, "INTERNAL", 0.01, RouteDecision(arm, 2, reason), 1))
    hook.on_response(Answer(request, 1, "OK", 0.01, None, 1))
    assert recorder.rows == [("m", Arm.CANARY, 2, "INTERNAL"), ("m", Arm.PRIMARY, 2, "INTERNAL")]


class Examples:
    """An `ExampleBatch` over pre-decoded features (what the transport's decoder returns)."""

    def __init__(self, features: dict[str, np.ndarray]):
        self._features = features
        rows = len(next(iter(features.values())))
        self._serialized = np.array([f"ex{i}".encode() for i in range(rows)], dtype=object)
        self.decoded: list[frozenset[str]] = []

    @property
    def serialized(self):
        return self._serialized

    def feature_names(self) -> frozenset[str]:
        return frozenset(self._features)

    def features(self, names: Collection[str]):
        self.decoded.append(frozenset(names))
        return {n: self._features[n] for n in names if n in self._features}


def classify_version(version: int, alias: str, checker: FeatureChecker | None = None):
    def classify(a):
        rows = len(a[alias])
        return {
            "classes": np.array([[b"a", b"b"]] * rows, dtype=object),
            "scores": np.full((rows, 2), 0.5 * version, dtype=np.float32),
        }

    sig = numpy_signature(
        classify,
        {alias: (DT_STRING, (None,))},
        {"classes": (DT_STRING, (None, 2)), "scores": (DT_FLOAT, (None, 2))},
        method=Method.CLASSIFY,
    )
    loaded = numpy_version("m", version, None, sig)
    return loaded, (lambda v: VersionRunner(v, BatchingConfig(), checker=checker))


def test_classify_feeds_serialized_examples_to_the_signatures_own_alias():
    loaded, runner = classify_version(1, "examples")
    plane = plane_of(StaticTable.of(loaded, runner=runner))
    batch = Examples({"age": np.array([30.0, 40.0])})
    result = run(plane.infer(InferenceRequest("m", Method.CLASSIFY, examples=batch)))
    assert result.method is Method.CLASSIFY and result.outputs["scores"].shape == (2, 2)
    assert batch.decoded == []  # no checker: nothing decoded
    with pytest.raises(
        InvalidInput,
        match='Expected regression signature outputs to contain the one output "outputs"',
    ):
        run(plane.infer(InferenceRequest("m", Method.REGRESS, examples=batch)))
    with pytest.raises(InvalidInput, match=r"expected tf\.Example input"):
        run(plane.infer(InferenceRequest("m", Method.CLASSIFY)))


def test_classify_accepts_a_predict_method_signature_of_the_right_shape_unless_checked():
    loaded, runner = classify_version(1, "inputs")
    sig = replace(loaded.signatures["serving_default"], method="tensorflow/serving/predict")
    loaded = replace(loaded, signatures={"serving_default": sig})
    batch = Examples({"age": np.array([30.0])})
    lenient = plane_of(StaticTable.of(loaded, runner=runner))
    assert run(lenient.infer(InferenceRequest("m", Method.CLASSIFY, examples=batch))).version == 1
    strict = plane_of(StaticTable.of(loaded, runner=runner), check_method_names=True)
    with pytest.raises(
        InvalidInput,
        match=r"Expected classification signature method_name to be tensorflow/serving/classify\. Was: tensorflow/serving/predict",
    ):
        run(strict.infer(InferenceRequest("m", Method.CLASSIFY, examples=batch)))


def test_classify_examples_are_checked_against_training_statistics():
    stats = compute_statistics({"age": np.random.default_rng(0).normal(40, 5, 1000)})
    loaded, runner = classify_version(1, "inputs", FeatureChecker(stats))
    seen = []
    plane = plane_of(
        StaticTable.of(loaded, runner=runner),
        on_mismatches=lambda model, version, ms: seen.append((model, version, ms)),
    )
    batch = Examples({"age": np.array([41.0, 900.0]), "extra": np.array([1.0, 2.0])})
    run(plane.infer(InferenceRequest("m", Method.CLASSIFY, examples=batch)))
    ((model, version, mismatches),) = seen
    kinds = {(m.feature, str(m.kind)) for m in mismatches}
    assert (model, version) == ("m", 1)
    assert ("age", "out_of_range") in kinds and ("extra", "unexpected_feature") in kinds
    assert batch.decoded == [frozenset({"age", "extra"})]


def _raw_feature_plane(actions, hooks):
    """A version with a raw-feature (composed) signature `x` checked against statistics."""
    stats = compute_statistics({"x": np.random.default_rng(0).normal(0, 1, (1000, 1))})
    checker = FeatureChecker(stats, CheckConfig.from_config(FeatureChecksConfig(actions=actions)))
    plain = numpy_signature(lambda a: {"y": a["x"]})
    composed = replace(plain, prepare=dict)
    loaded = numpy_version("m", 1, None, composed)
    table = StaticTable.of(
        loaded, runner=lambda v: VersionRunner(v, BatchingConfig(), checker=checker)
    )
    return DataPlane(table, hooks=hooks)


def test_mismatches_are_reported_and_a_reject_action_refuses_the_request():
    bad = np.array([[np.nan]], dtype=np.float32)
    hooks = Hooks()
    run(_raw_feature_plane({}, [hooks]).infer(InferenceRequest("m", inputs={"x": bad})))
    (answer,) = hooks.answers
    assert answer.code == "OK"
    assert [(str(m.kind), m.action) for m in answer.mismatches] == [("nan_or_inf", Action.LOG)]
    plane = _raw_feature_plane({"nan_or_inf": "reject"}, [hooks])
    with pytest.raises(
        InvalidInput, match="feature check failed: feature 'x': value nan is not finite"
    ):
        run(plane.infer(InferenceRequest("m", inputs={"x": bad})))
    assert hooks.answers[-1].code == "INVALID_ARGUMENT"


def test_a_feature_routing_key_of_a_tf_example_request_decodes_only_that_feature():
    loaded, runner = classify_version(1, "inputs")
    keyed = RouteDecision(Arm.PRIMARY, 1, "keyed", None, 1)

    class KeyRouter(FixedRouter):
        def route(self, model, headers, feature, available):
            self.key = feature("user")
            return keyed

    router = KeyRouter(keyed)
    batch = Examples({"user": np.array([b"u1", b"u2"], dtype=object), "age": np.array([1.0, 2.0])})
    plane = plane_of(StaticTable.of(loaded, runner=runner), router=router)
    run(plane.infer(InferenceRequest("m", Method.CLASSIFY, examples=batch)))
    assert list(router.key) == [b"u1", b"u2"] and batch.decoded == [frozenset({"user"})]


def test_concurrent_requests_through_the_plane_are_batched_and_each_gets_its_rows():
    table = StaticTable.of(*versions(), primary=1)
    plane = plane_of(table)
    rng = random.Random(0)
    inputs = [np.full((rng.randint(1, 4), 1), i, dtype=np.float32) for i in range(20)]

    async def main():
        return await asyncio.gather(
            *(plane.infer(InferenceRequest("m", inputs={"x": x})) for x in inputs)
        )

    for x, result in zip(inputs, run(main()), strict=True):
        np.testing.assert_allclose(result.outputs["y"], x)
