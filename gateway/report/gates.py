"""``--fail-if`` gates: parsed with a regular expression (never eval'd), checked per group.

Grammar: ``METRIC OP NUMBER`` with OP one of ``> >= < <= == !=`` and NUMBER a
decimal or scientific literal, optionally ending in ``%`` (``1%`` = 0.01).
METRIC is one of

* a group number: ``requests``, ``diverged``, ``divergence_rate``,
  ``ci_low`` / ``ci_high`` (bounds of the 95% Wilson interval),
  ``label_flips``, ``label_flip_rate``, ``errors``, ``timeouts``, ``drops``,
  ``error_rate`` (errors / (requests + errors));
* ``STAT.METRIC`` with STAT in ``p50 p90 p99 max`` and METRIC an output
  metric (``max_abs``, ``max_rel``, ``js_mean``, ``js_max``,
  ``top1_agreement``, ``topk_overlap``, ``agreement``): the largest value of
  that statistic over the group's outputs;
* ``STAT.OUTPUT.METRIC``: the same for one output alias.

Gates are evaluated on every group whose comparison is not ``noise``. A
metric that has no value for a group (no requests, metric not logged) does
not fail the gate; its result has ``value: null``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.report.summary import OUTPUT_METRICS

GROUP_METRICS: Final = (
    "requests",
    "diverged",
    "divergence_rate",
    "ci_low",
    "ci_high",
    "label_flips",
    "label_flip_rate",
    "errors",
    "timeouts",
    "drops",
    "error_rate",
)
STATS: Final = ("p50", "p90", "p99", "max")
_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_GATE_RE: Final = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.\-]*?)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?P<pct>%?)\s*$"
)


@dataclass(frozen=True)
class Gate:
    """One parsed ``--fail-if`` expression."""

    expr: str
    metric: str
    op: str
    threshold: float
    stat: str | None = None
    output: str | None = None
    output_metric: str | None = None

    def value(self, group: dict[str, Any]) -> float | None:
        """The gated number for one report group (see module doc), or None."""
        if self.stat is None:
            return _group_metric(group, self.metric)
        best: float | None = None
        for output in group.get("outputs", []):
            if self.output is not None and output["output"] != self.output:
                continue
            stats = output.get("metrics", {}).get(self.output_metric)
            value = None if stats is None else stats.get(self.stat)
            if value is not None and (best is None or value > best):
                best = float(value)
        return best

    def failed(self, value: float | None) -> bool:
        """Whether `value` trips the gate (None never does)."""
        return value is not None and _OPS[self.op](value, self.threshold)


def _group_metric(group: dict[str, Any], metric: str) -> float | None:
    ci = group.get("divergence_ci95")
    if metric == "ci_low":
        return None if ci is None else float(ci[0])
    if metric == "ci_high":
        return None if ci is None else float(ci[1])
    if metric == "error_rate":
        total = group["requests"] + group["errors"]
        return group["errors"] / total if total else None
    value = group.get(metric)
    return None if value is None else float(value)


def parse_gate(text: str) -> Gate:
    """Parse one expression like ``divergence_rate>0.01`` or ``p99.max_abs > 0.1``.

    Raises ValueError with a message saying what is wrong.
    """
    match = _GATE_RE.match(text)
    if match is None:
        raise ValueError(
            f"--fail-if {text!r}: expected METRIC OP NUMBER, e.g. divergence_rate>0.01 "
            "(OP is one of > >= < <= == !=)"
        )
    metric, op = match["metric"], match["op"]
    threshold = float(match["num"]) / (100.0 if match["pct"] else 1.0)
    if not math.isfinite(threshold):
        raise ValueError(f"--fail-if {text!r}: threshold must be finite")
    if "." not in metric:
        if metric not in GROUP_METRICS:
            raise ValueError(
                f"--fail-if {text!r}: unknown metric {metric!r} "
                f"(expected one of {', '.join(GROUP_METRICS)} or STAT.METRIC)"
            )
        return Gate(expr=text.strip(), metric=metric, op=op, threshold=threshold)
    stat, _, rest = metric.partition(".")
    output, _, output_metric = rest.rpartition(".")
    if stat not in STATS:
        raise ValueError(
            f"--fail-if {text!r}: unknown statistic {stat!r} (expected one of {', '.join(STATS)})"
        )
    if output_metric not in OUTPUT_METRICS:
        raise ValueError(
            f"--fail-if {text!r}: unknown output metric {output_metric!r} "
            f"(expected one of {', '.join(OUTPUT_METRICS)})"
        )
    return Gate(
        expr=text.strip(),
        metric=metric,
        op=op,
        threshold=threshold,
        stat=stat,
        output=output or None,
        output_metric=output_metric,
    )


def evaluate(gates: Sequence[Gate], groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check each gate on each non-noise group; one JSON-ready result per (group, gate)."""
    results: list[dict[str, Any]] = []
    for group in groups:
        if group["comparison"] == "noise":
            continue
        for gate in gates:
            value = gate.value(group)
            results.append(
                {
                    "group": group.get("label"),
                    "model": group["model"],
                    "comparison": group["comparison"],
                    "primary_version": group["primary_version"],
                    "shadow_version": group["shadow_version"],
                    "expr": gate.expr,
                    "metric": gate.metric,
                    "op": gate.op,
                    "threshold": gate.threshold,
                    "value": value,
                    "failed": gate.failed(value),
                }
            )
    return results
