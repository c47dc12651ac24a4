"""Classify/Regress results encoded with numpy parse to exactly the messages TF
Serving's result building (one protobuf message per class) gives, and the gRPC
responses carrying them parse as TF Serving's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

from gateway.core.errors import InternalError
from gateway.core.inference import InferenceResult, Method
from gateway.transport.prediction import EncodedMultiInferenceResponse, EncodedResultResponse
from gateway.transport.tfs_common import (
    classification_result_wire,
    fill_classifications,
    fill_regressions,
    fill_spec,
    regression_result_wire,
)

RNG = np.random.default_rng(0)


def _classified(**outputs: np.ndarray) -> InferenceResult:
    return InferenceResult("m", 3, "serving_default", outputs, Method.CLASSIFY)


def _reference(outputs: dict[str, np.ndarray]) -> classification_pb2.ClassificationResult:
    """TF Serving's way: a Class message per label/score."""
    out = classification_pb2.ClassificationResult()
    classes, scores = outputs.get("classes"), outputs.get("scores")
    rows = len(classes) if classes is not None else len(scores)  # type: ignore[arg-type]
    labels = classes.reshape(rows, -1).tolist() if classes is not None else None
    values = scores.reshape(rows, -1).tolist() if scores is not None else None
    width = len((values or labels)[0]) if rows else 0  # type: ignore[index]
    for i in range(rows):
        row = out.classifications.add()
        for j in range(width):
            c = row.classes.add()
            if labels is not None:
                label = labels[i][j]
                c.label = label.decode() if isinstance(label, bytes) else str(label)
            if values is not None:
                c.score = values[i][j]
    return out


def _same(a: object, b: object) -> bool:
    return a == b or str(a) == str(b)  # NaN scores: equal as printed


def _labels(rows: int, width: int, varied: bool) -> np.ndarray:
    out = np.empty((rows, width), dtype=object)
    if varied:
        choices = [b"a", b"bb", "été".encode(), b"x" * 200, b""]
        for i in range(rows):
            for j in range(width):
                out[i, j] = choices[int(RNG.integers(len(choices)))]
    else:
        out[:] = [f"class-{j}".encode() for j in range(width)]
    return out


CASES = []
for rows in (1, 3, 5000):
    for width in (0, 1, 2, 5):
        scores = RNG.random((rows, width)).astype(np.float32)
        scores[0, :1] = 0.0
        same, varied = _labels(rows, width, False), _labels(rows, width, True)
        CASES += [
            {"classes": same, "scores": scores},
            {"scores": scores},
            {"classes": varied},
            {"classes": varied, "scores": scores.astype(np.float64)},
            {"classes": RNG.integers(0, 4, size=(rows, width)), "scores": scores},
            {"classes": RNG.random((rows, width))},
            {"classes": varied.astype("S"), "scores": scores},
        ]
CASES += [
    {"classes": np.array([[b"a", b"b", b"c"]] * 4, dtype=object), "scores": RNG.random((4, 2))},
    {"scores": np.array([[math.nan, -0.0, math.inf, 1e40]])},
    {"classes": _labels(7, 3, False)[:, :, None], "scores": RNG.random((7, 3, 1))},
]


@pytest.mark.parametrize("outputs", CASES)
def test_classifications_equal_tf_servings(outputs):
    ours = classification_pb2.ClassificationResult()
    fill_classifications(ours, _classified(**outputs))
    assert _same(ours, _reference(outputs))
    field = classification_pb2.ClassificationResponse.FromString(
        bytes(classification_result_wire(_classified(**outputs), 1))
    )
    assert _same(field.result, ours)


def test_classes_narrower_than_scores_are_an_internal_error():
    result = _classified(classes=_labels(2, 1, False), scores=RNG.random((2, 2)))
    with pytest.raises(InternalError, match="'classes' has 1 values per example, 'scores' 2"):
        classification_result_wire(result)


@pytest.mark.parametrize(
    "values",
    [
        RNG.random((5, 1)),
        RNG.random(7).astype(np.float32),
        np.array([0.0, -0.0, math.nan, 1e40, -1e40]),
        RNG.integers(0, 9, (4, 3)),
    ],
)
def test_regressions_equal_tf_servings(values):
    result = InferenceResult("m", 3, "regress", {"outputs": values}, Method.REGRESS)
    reference = regression_pb2.RegressionResult()
    for value in values.reshape(len(values), -1)[:, 0].tolist():
        reference.regressions.add(value=float(value))
    ours = regression_pb2.RegressionResult()
    fill_regressions(ours, result)
    assert _same(ours, reference)


def test_encoded_responses_parse_as_tf_servings():
    classified = _classified(classes=_labels(3, 2, False), scores=RNG.random((3, 2)))
    regressed = InferenceResult("m", 3, "regress", {"outputs": RNG.random((3, 1))}, Method.REGRESS)
    response = EncodedResultResponse()
    response.MergeFromString(classification_result_wire(classified, 1))
    fill_spec(response.model_spec, classified)
    theirs = classification_pb2.ClassificationResponse.FromString(response.SerializeToString())
    assert theirs.model_spec.name == "m" and theirs.model_spec.version.value == 3
    assert _same(theirs.result, _reference(classified.outputs))

    multi = EncodedMultiInferenceResponse()
    for result, wire in (
        (classified, classification_result_wire(classified, 2)),
        (regressed, regression_result_wire(regressed, 3)),
    ):
        out = multi.results.add()
        fill_spec(out.model_spec, result)
        out.MergeFromString(wire)
    parsed = inference_pb2.MultiInferenceResponse.FromString(multi.SerializeToString())
    assert [r.model_spec.signature_name for r in parsed.results] == ["serving_default", "regress"]
    assert _same(parsed.results[0].classification_result, _reference(classified.outputs))
    expected = regression_pb2.RegressionResult()
    fill_regressions(expected, regressed)
    assert parsed.results[1].regression_result == expected
    # what the gRPC handler's serializer does with the response it is given
    stock = classification_pb2.ClassificationResponse.SerializeToString(response)
    assert stock == response.SerializeToString()
