"""``gateway rollout status|start|pause|resume|set-weight|promote|rollback|release MODEL``.

A thin client of ``AdminService.GetRollout`` / ``UpdateRollout``. Mutating actions send
the admin bearer token (``--token-file`` or ``$GATEWAY_ADMIN_TOKEN``). Exit codes: 0 on
success, 1 when the gateway refuses (the gRPC status and message are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

PROG = "gateway rollout"

_ACTIONS = {
    "start": "START",
    "pause": "PAUSE",
    "resume": "RESUME",
    "set-weight": "SET_WEIGHT",
    "promote": "PROMOTE",
    "rollback": "ROLLBACK",
    "release": "RELEASE",
}
_HELP = {
    "status": "show the rollout: state, per-arm figures, gates, recent decisions",
    "start": "start the rollout at its first step (after a rollback: a new attempt)",
    "pause": "freeze the current weight (no automatic steps)",
    "resume": "continue a paused rollout (the current step restarts)",
    "set-weight": "route PERCENT of split traffic to the canary now",
    "promote": "make the candidate the primary now",
    "rollback": "send all traffic to the primary (after a promotion: revert it)",
    "release": "after a promotion, let the old primary be unloaded",
}


def add_rollout_parser(
    subparsers: Any, parent: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]
) -> None:
    """Register ``rollout`` with one sub-command per action (``args.func = func``)."""
    rollout = subparsers.add_parser(
        "rollout", help="canary rollout status and manual control", description=__doc__
    )
    actions = rollout.add_subparsers(dest="rollout_action", required=True)
    for name, text in _HELP.items():
        p = actions.add_parser(name, parents=[parent], help=text, description=text)
        p.add_argument("model")
        if name == "set-weight":
            p.add_argument("percent", type=float, help="percent in (0, 100]")
        if name != "status":
            p.add_argument("--reason", default="", help="recorded in the decision history")
        p.add_argument("--json", action="store_true", help="print the status as JSON")
        p.set_defaults(func=func)


def run_rollout(args: argparse.Namespace, channel: Any, metadata: Sequence[tuple[str, str]]) -> int:
    """Execute one ``gateway rollout`` command over `channel`."""
    import grpc
    from google.protobuf import json_format

    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    stub = admin_pb2_grpc.AdminServiceStub(channel)
    try:
        if args.rollout_action == "status":
            reply = stub.GetRollout(admin_pb2.GetRolloutRequest(model=args.model), timeout=10)
        else:
            request = admin_pb2.UpdateRolloutRequest(
                model=args.model,
                action=_ACTIONS[args.rollout_action],  # type: ignore[arg-type]
                weight=getattr(args, "percent", 0.0) or 0.0,
                reason=args.reason,
            )
            reply = stub.UpdateRollout(request, timeout=30, metadata=list(metadata))
    except grpc.RpcError as exc:
        print(f"{PROG}: error: {exc.code().name}: {exc.details()}")
        return 1
    if args.json:
        print(json.dumps(json_format.MessageToDict(reply), indent=2, sort_keys=True))
    else:
        print(format_status(reply))
    return 0


def _num(value: float, fmt: str = "{:.4g}", unit: str = "") -> str:
    return "-" if math.isnan(value) else fmt.format(value) + unit


def format_status(s: Any) -> str:
    """A RolloutStatus as a few readable lines."""
    if s.error:
        return f"{s.model}: rollout state unreadable: {s.error}"
    steps = "/".join(f"{x:g}" for x in s.steps)
    lines = [
        f"{s.model}  {s.rollout_id}  {s.status.upper()}  canary weight {s.weight:g}%"
        f"  (steps {steps})",
        f"  primary v{s.primary_version}  candidate v{s.candidate_version}"
        + (f"  previous primary v{s.previous_primary} (held)" if s.previous_primary else "")
        + f"  routing key: {s.routing_key or 'none (random split)'}  replica: {s.replica}",
    ]
    if s.step_started_at and s.status in ("running", "paused"):
        age = time.time() - s.step_started_at
        lines.append(
            f"  step {s.step_index + 1}/{len(s.steps)} running for {age:.0f}s"
            f" (min {s.min_step_seconds:g}s, {s.min_requests_per_step} canary requests)"
        )
    if s.failed_gate:
        lines.append(f"  FAILED GATE: {s.failed_gate}")
    if s.missing:
        lines.append(f"  not available: {s.missing}")
    if s.waiting_for:
        lines.append(f"  {s.waiting_for}")
    lines.append(
        f"  {'arm':<8}{'requests':>9}{'errors':>8}{'err rate':>10}{'p50':>10}{'p99':>10}"
        f"{'compared':>10}{'diverged':>10}"
    )
    for name, arm in (("primary", s.primary), ("canary", s.canary)):
        lines.append(
            f"  {name:<8}{arm.requests:>9}{arm.errors:>8}{_num(arm.error_rate):>10}"
            f"{_num(arm.p50_ms, '{:.2f}', 'ms'):>10}{_num(arm.p99_ms, '{:.2f}', 'ms'):>10}"
            f"{arm.compared:>10}{arm.diverged:>10}"
        )
    if len(s.replicas) > 1:
        lines.append(f"  fleet totals above; by replica ({len(s.replicas)}):")
        for part in s.replicas:
            lines.append(
                f"    {part.replica or '(unnamed)':<20} primary {part.primary.requests:>7}"
                f"  canary {part.canary.requests:>7}  compared {part.canary.compared:>6}"
                f"  diverged {part.canary.diverged:>5}"
            )
    if s.store and not s.store_up:
        lines.append(f"  STATE STORE ({s.store}) UNREACHABLE: the rollout holds until it is back")
    for g in s.gates:
        verdict = "pass" if g.passed and g.judged else ("FAIL" if g.judged else "wait")
        lines.append(
            f"  gate {g.name:<18} {verdict:<5} {_num(g.value):>8} <= {g.threshold:g}  {g.detail}"
        )
    for d in list(s.history)[-8:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.at))
        lines.append(
            f"  {when}  {d.action:<10} {d.actor:<5} {d.from_weight:g}% -> {d.to_weight:g}%"
            f"  {d.reason}"
        )
    return "\n".join(lines)
