"""The availability-preserving version policy, as a table."""

from __future__ import annotations

import pytest

from gateway.core.states import VersionState as S
from gateway.lifecycle.policy import Load, Unload, plan

A, F, L, E = S.AVAILABLE, S.FAILED, S.LOADING, S.END

CASES = [
    ("first load", {1}, {}, set(), [Load(1)]),
    ("newest first", {1, 2}, {}, set(), [Load(2), Load(1)]),
    ("new version loads before old unloads", {2}, {1: A}, set(), [Load(2)]),
    ("old unloads once new is available", {2}, {1: A, 2: A}, set(), [Unload(1)]),
    ("new still loading keeps old", {2}, {1: A, 2: L}, set(), []),
    ("new failed keeps old", {2}, {1: A, 2: F}, set(), []),
    ("failed retried only when allowed", {2}, {1: A, 2: F}, {2}, [Load(2)]),
    ("ended version reloads when aspired again", {1}, {1: E}, set(), [Load(1)]),
    ("nothing aspired unloads nothing", set(), {1: A}, set(), []),
    ("steady state", {1, 2}, {1: A, 2: A}, set(), []),
]


@pytest.mark.parametrize(
    ("name", "aspired", "states", "retry", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_plan(name, aspired, states, retry, expected):
    assert plan(aspired, states, retry) == expected
