"""Rollout plans for the routing tests, built the one way the gateway builds them: from a
validated model config (`RolloutPlan.from_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import GatesConfig, GatewayConfig, ModelConfig, parse_config
from gateway.routing.gates import Gates
from gateway.routing.rollout import RolloutPlan

HERE = Path(__file__).resolve().parent

NO_GATES = {
    "max_divergence_rate": None,
    "max_error_rate_ratio": None,
    "max_p99_latency_ratio": None,
    "max_feature_skew": None,
}
"""A `rollout.gates` block with every gate off."""


def gates(**on: float) -> Gates:
    """Gates with only these thresholds on (every other gate off)."""
    return Gates.from_config(GatesConfig.model_validate({**NO_GATES, **on}))


def parse(rollout: Any, labels: dict[str, int] | None = None, **model: Any) -> GatewayConfig:
    """`parse_config` of one model named `demo` with this `rollout` block (raises
    `ConfigError` naming the key, as `gateway serve` would)."""
    doc = {"name": "demo", "base_path": ".", "version_labels": labels or {}, **model}
    return parse_config({"models": [{**doc, "rollout": rollout}]}, HERE)


def model_config(
    rollout: dict[str, Any], labels: dict[str, int] | None = None, **model: Any
) -> ModelConfig:
    """A validated model config named `demo` with this `rollout` block."""
    return ModelConfig.model_validate(
        {
            "name": "demo",
            "base_path": ".",
            "version_labels": labels or {},
            **model,
            "rollout": rollout,
        }
    )


def plan(**rollout: Any) -> RolloutPlan:
    """The plan of a `rollout` block with these keys (candidate 2 and primary 1 unless given)."""
    return RolloutPlan.from_config(model_config({"candidate": 2, "primary": 1, **rollout}))
