"""Protocol-independent request and result types of the data plane.

Every transport (TF Serving's gRPC API and the Open Inference Protocol over gRPC; REST
next) converts its wire format into an `InferenceRequest`, calls the data plane, and
converts the `InferenceResult` back. Nothing here knows a wire format.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np

from gateway.core.servable import CLASSIFY, PREDICT, REGRESS, Arrays


class Method(enum.StrEnum):
    """What a request asks a signature to do."""

    PREDICT = "predict"
    CLASSIFY = "classify"
    REGRESS = "regress"

    @property
    def signature_method(self) -> str:
        """The SignatureDef `method_name` of this method's signatures."""
        return _SIGNATURE_METHODS[self]


_SIGNATURE_METHODS = {Method.PREDICT: PREDICT, Method.CLASSIFY: CLASSIFY, Method.REGRESS: REGRESS}


class ExampleBatch(Protocol):
    """A batch of tf.Example inputs (Classify/Regress), decoded by the transport that
    received them: serialized for the model, and as named raw features on demand (for
    feature checks, a feature routing key and the divergence log)."""

    @property
    def serialized(self) -> np.ndarray:
        """1-D object array of serialized tf.Example, one per row (context merged in)."""

    def feature_names(self) -> frozenset[str]:
        """The names of the features the examples carry."""

    def features(self, names: Collection[str]) -> Arrays:
        """The named features that are present, as arrays with one row per example
        ([rows] when every example has one value, else [rows, k])."""


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class InferenceRequest:
    """One request, whatever protocol it came in on.

    `version` and `label` are optional (neither: the model's primary, or its rollout's
    split); `inputs` are named tensors for Predict, `examples` the tf.Example batch for
    Classify/Regress.
    """

    model: str
    method: Method = Method.PREDICT
    inputs: Arrays = field(default_factory=dict)
    examples: ExampleBatch | None = None
    version: int | None = None
    label: str | None = None
    signature: str = ""
    output_filter: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    """Request metadata (lowercase keys): routing-key headers of a canary rollout."""
    request_id: str = ""
    protocol: str = "tfs_grpc"
    """Which protocol the request came in on (metrics, the divergence log)."""
    size_bytes: int = 0
    """Bytes the request's inputs hold, for the in-flight limits; 0: the data plane sums
    the inputs' `nbytes` (a tf.Example request's transport gives its message size)."""


@dataclass(frozen=True)
class InferenceResult:
    """The outputs of one request and who produced them."""

    model: str
    version: int
    signature: str
    outputs: Arrays
    method: Method = Method.PREDICT
