"""What travels through a mirror lane: one answered request (`MirrorTask`), and the
names of the three kinds of comparison."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.core.inference import ExampleBatch, Method
from gateway.core.servable import Arrays

NOISE = "noise"
"""The primary compared with itself (a replay): the noise floor."""
SHADOW = "shadow"
"""The primary's answer compared with a shadow version's."""
CANARY = "canary"
"""A canary's answer compared with the rollout's primary (recorded primary-first)."""


@dataclass(eq=False)
class MirrorTask:
    """One mirrored request: the raw inputs and what the answering version said.

    `primary_*` describe the version that answered the client: the primary for shadow
    and noise lanes, the canary for the canary lane (whose records put the rollout's
    primary first; see `outcomes.orient`)."""

    request_id: str
    model: str
    signature: str
    inputs: Arrays
    """Raw features as the client sent them (for tf.Example requests: the decoded
    features, empty when nothing decoded them)."""
    primary_version: int
    primary_outputs: Arrays
    primary_latency_ms: float
    primary_mismatches: list[dict[str, Any]]
    routing_key_hash: str | None
    compare_to: int | None = None
    """For canary tasks: the rollout's primary version, called as the "shadow"."""
    served_inputs: Arrays | None = None
    """The inputs the answering version used (without features its checks dropped); what
    a capture records, so that a capture is a valid warmup file. None = `inputs`."""
    method: Method = Method.PREDICT
    examples: ExampleBatch | None = None
    """Classify/Regress: the tf.Example batch, given to the other version's own
    classify/regress signature (whatever its input alias)."""
    protocol: str = "tfs_grpc"
    enqueued: float = field(default_factory=time.monotonic)

    def raw_features(self) -> Arrays:
        """The request's raw features (tf.Example requests: decoded here when the
        answering version did not decode them)."""
        if self.examples is not None and not self.inputs:
            return self.examples.features(self.examples.feature_names())
        return self.inputs

    def digest_inputs(self) -> Arrays:
        """What identifies the request's inputs (tf.Example requests: the serialized
        examples)."""
        if self.examples is not None:
            return {"examples": self.examples.serialized}
        return self.inputs

    @property
    def rows(self) -> int:
        """Batch size of the request."""
        if self.examples is not None:
            return len(self.examples.serialized)
        return rows_of(self.inputs)


def rows_of(arrays: Mapping[str, np.ndarray]) -> int:
    """Batch size of a request (first dimension of its first array; 0 without arrays)."""
    first = next(iter(arrays.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0


def concat(parts: list[Arrays]) -> Arrays:
    """Requests' arrays concatenated along the batch dimension (one part: as is)."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
