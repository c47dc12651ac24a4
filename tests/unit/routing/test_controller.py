"""The routing key a request carries: a header, or its first row's feature value."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.routing.controller import routing_key
from gateway.routing.rollout import RolloutPlan
from tests.unit.routing.plans import plan


def _plan(source: str | None, name: str = "k") -> RolloutPlan:
    return plan(routing_key={source: name} if source else None)


@pytest.mark.parametrize(
    ("source", "headers", "inputs", "expected"),
    [
        (None, {"k": "u1"}, {}, None),
        ("header", {"k": "u1"}, {}, "u1"),
        ("header", {"other": "u1"}, {}, None),
        ("header", {"k": ""}, {}, None),
        ("feature", {}, {"k": np.array([[b"alice"], [b"bob"]], dtype=object)}, "alice"),
        ("feature", {}, {"k": np.array(["carol"])}, "carol"),
        ("feature", {}, {"k": np.array([[42], [7]], dtype=np.int64)}, "42"),
        ("feature", {}, {"k": np.array([1.5], dtype=np.float32)}, "1.5"),
        ("feature", {}, {"k": np.zeros((0, 1))}, None),
        ("feature", {}, {"x": np.ones((1, 1))}, None),
    ],
)
def test_routing_key(source, headers, inputs, expected):
    assert routing_key(_plan(source), headers, inputs.get) == expected


def test_header_names_are_lowercase_like_grpc_metadata():
    assert routing_key(_plan("header", "X-User-Id"), {"x-user-id": "u"}, {}.get) == "u"
