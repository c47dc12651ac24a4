"""The request path in domain terms: resolve a version, validate, run, filter.

Works on numpy arrays and plain values only; the transport converts protobuf.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gateway.analysis.feature_checks import Action, Mismatch
from gateway.errors import GatewayError, InvalidInput
from gateway.lifecycle.manager import VersionManager
from gateway.routing.router import Arm, RouteDecision, key_hash_hex
from gateway.serving.checks import checked_inputs, mismatch_record
from gateway.serving.runner import VersionRunner
from gateway.serving.servable import CLASSIFY, REGRESS, Arrays, LoadedVersion, Signature
from gateway.sinks.logging import REQUEST_ID as CURRENT_REQUEST_ID

if TYPE_CHECKING:
    from gateway.routing.controller import RolloutController
    from gateway.serving.shadow import Mirror


@dataclass(frozen=True)
class Target:
    """Which model/version/signature a request asks for (version and label are optional)."""

    model: str
    version: int | None = None
    label: str | None = None
    signature: str = ""


@dataclass(frozen=True)
class Result:
    """Outputs of one request and who produced them."""

    model: str
    version: int
    signature: str
    outputs: Arrays


MismatchObserver = Callable[[str, int, list[Mismatch]], None]


class Predictor:
    """Executes Predict/Classify/Regress against the manager's current serving table."""

    def __init__(
        self, manager: VersionManager, on_mismatches: MismatchObserver | None = None
    ) -> None:
        self._manager = manager
        self._on_mismatches = on_mismatches
        self.mirror: Mirror | None = None
        """Set by the app: shadows, noise replay and canary comparisons."""
        self.rollouts: RolloutController | None = None
        """Set by the app: canary rollouts (routing and per-arm statistics)."""

    def check_features(
        self, runner: VersionRunner, inputs: Arrays
    ) -> tuple[Arrays, list[Mismatch]]:
        """Run the version's feature checks on raw inputs: report mismatches, raise
        `InvalidInput` for rejected ones, drop features the version was not trained on."""
        checker = runner.checker
        if checker is None:
            return inputs, []
        kept, mismatches = checked_inputs(checker, inputs)
        if not mismatches:
            return kept, []
        if self._on_mismatches is not None:
            self._on_mismatches(runner.loaded.model, runner.version, mismatches)
        rejected = [m for m in mismatches if m.action is Action.REJECT]
        if rejected:
            raise InvalidInput(
                "feature check failed: " + "; ".join(m.message() for m in rejected[:5])
            )
        return kept, mismatches

    def resolve(self, target: Target) -> VersionRunner:
        """The runner that should answer `target` (NotFound when none)."""
        return self._manager.view(target.model).resolve(target.version, target.label)

    def loaded(self, target: Target) -> LoadedVersion:
        """The version that would answer `target` (for metadata)."""
        return self.resolve(target).loaded

    async def predict(
        self,
        target: Target,
        inputs: Arrays,
        output_filter: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> Result:
        """Route, validate `inputs` against the signature, run it (batched), apply
        `output_filter`; then offer the answer to the mirror (shadows, canary comparison).

        A request naming neither version nor label is routed by the model's rollout (if
        any) using `headers` or its inputs for the routing key; the split's requests are
        recorded per arm for the rollout gates.
        """
        started = time.perf_counter()
        view = self._manager.view(target.model)
        route: RouteDecision | None = None
        key: str | None = None
        rollouts = self.rollouts
        if rollouts is not None and target.version is None and target.label is None:
            routed = rollouts.route(target.model, headers or {}, inputs)
            if routed is not None:
                route, key = routed
        if route is not None and route.version is not None:
            runner = view.versions.get(route.version)
            if runner is None and route.arm is Arm.CANARY and rollouts is not None:
                # the split chose a canary that is not available: the primary answers
                primary_version = rollouts.primary_of(target.model)
                route = RouteDecision(Arm.PRIMARY, primary_version, "fallback")
                if primary_version is not None:
                    runner = view.versions.get(primary_version)
            if runner is None:
                runner = view.resolve(route.version)  # NotFound naming what is available
        else:
            runner = view.resolve(target.version, target.label)
        runner.acquire()
        mismatches: list[Mismatch] = []
        raw = inputs
        code = "OK"
        try:
            sig = runner.loaded.signature(target.signature)
            if output_filter:
                unknown = [o for o in output_filter if o not in sig.outputs]
                if unknown:
                    raise InvalidInput(
                        "output_filter: unknown output alias "
                        f"{', '.join(repr(u) for u in unknown)};"
                        f" signature '{sig.name}' outputs: {', '.join(sorted(sig.outputs))}"
                    )
            if sig.prepare is not None:
                inputs, mismatches = self.check_features(runner, inputs)
            rows = sig.validate(inputs)
            outputs = await runner.run(sig, inputs, rows)
        except GatewayError as exc:
            code = exc.kind.status_name
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            runner.release()
            if route is not None and route.in_experiment and rollouts is not None:
                rollouts.record(
                    target.model, route.arm, runner.version, code, time.perf_counter() - started
                )
        if output_filter:
            outputs = {k: outputs[k] for k in dict.fromkeys(output_filter)}
        mirror = self.mirror
        if mirror is not None and mirror.has_lanes(target.model):
            canary = route is not None and route.arm is Arm.CANARY and route.in_experiment
            primary = view.primary_version()
            if canary or primary is None or primary == runner.version:
                from gateway.serving.shadow import MirrorTask

                task = MirrorTask(
                    request_id=CURRENT_REQUEST_ID.get(),
                    model=target.model,
                    signature=sig.name,
                    inputs=dict(raw),
                    primary_version=runner.version,
                    primary_outputs=outputs,
                    primary_latency_ms=(time.perf_counter() - started) * 1e3,
                    primary_mismatches=[mismatch_record(m) for m in mismatches],
                    routing_key_hash=key_hash_hex(target.model, key) if key else None,
                    served_inputs=inputs if inputs is not raw else None,
                )
                if canary:
                    assert rollouts is not None
                    task.compare_to = rollouts.primary_of(target.model)
                    mirror.offer_canary(task)
                else:
                    mirror.offer(task)
        return Result(target.model, runner.version, sig.name, outputs)

    async def classify(self, target: Target, examples: np.ndarray) -> Result:
        """Run a classify signature on serialized tf.Examples; outputs 'classes'/'scores'."""
        return await self._examples(target, examples, CLASSIFY)

    async def regress(self, target: Target, examples: np.ndarray) -> Result:
        """Run a regress signature on serialized tf.Examples; output 'outputs'."""
        return await self._examples(target, examples, REGRESS)

    async def _examples(self, target: Target, examples: np.ndarray, method: str) -> Result:
        runner = self.resolve(target)
        runner.acquire()
        try:
            sig = runner.loaded.signature(target.signature)
            _require_method(sig, method)
            (alias,) = sig.inputs
            outputs = await runner.run(sig, {alias: examples}, len(examples))
        finally:
            runner.release()
        return Result(target.model, runner.version, sig.name, outputs)


def _require_method(sig: Signature, method: str) -> None:
    if sig.method != method:
        raise InvalidInput(
            f"signature '{sig.name}' has method_name '{sig.method}'; this call needs a "
            f"'{method}' signature (set model_spec.signature_name)"
        )
    if len(sig.inputs) != 1:
        raise InvalidInput(
            f"signature '{sig.name}' must have exactly one input of serialized tf.Example"
        )
