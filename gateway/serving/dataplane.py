"""The data plane: one path for every request, whatever protocol or method it came in on.

`DataPlane.infer(request)`: route (one call into routing, which returns one decision,
the canary-unavailable fallback included) -> feature checks against the answering
version's training statistics -> run (the version's batcher; preprocessing and the
model on the model-call threads) -> output filter -> response hooks (rollout
statistics, mirroring to shadows and canary comparison, capture). Transports only
convert their wire format to an `InferenceRequest` and the `InferenceResult` back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.analysis.feature_checks import Action, Mismatch
from gateway.core.errors import GatewayError, InvalidInput
from gateway.core.inference import ExampleBatch, InferenceRequest, InferenceResult, Method
from gateway.core.model_view import ModelView, VersionTable
from gateway.core.servable import Arrays, Signature
from gateway.routing.router import Arm, FeatureSource, RouteDecision
from gateway.serving.admission import Admission
from gateway.serving.checks import checked_inputs
from gateway.serving.runner import VersionRunner

MismatchObserver = Callable[[str, int, list[Mismatch]], None]
"""Told of every request's feature-check mismatches (metrics, the log)."""


class Router(Protocol):
    """Routing as the data plane sees it (`routing.controller.RolloutController`)."""

    def route(
        self,
        model: str,
        headers: Mapping[str, str],
        feature: FeatureSource,
        available: Container[int],
    ) -> RouteDecision | None:
        """Where a request naming no version goes; None when the model has no rollout."""


@dataclass(frozen=True)
class Answer:
    """What happened to one request, for the response hooks (told after the answer is
    ready, before it is sent; hooks must not block)."""

    request: InferenceRequest
    version: int
    """The version that answered (or failed to)."""
    code: str
    """Status name: "OK", or the error's (e.g. "INVALID_ARGUMENT")."""
    seconds: float
    route: RouteDecision | None
    primary_version: int | None
    """The model's primary version when the request was served (None = newest)."""
    signature: str = ""
    features: Arrays | None = None
    """Raw features as the client sent them (Predict inputs; decoded tf.Example features
    when the version checks them), None when not decoded."""
    served_inputs: Arrays | None = None
    """The inputs the version ran on, when they differ from `features` (features its
    checks dropped; serialized examples)."""
    outputs: Arrays | None = None
    mismatches: Sequence[Mismatch] = ()


class ArmRecorder(Protocol):
    """Rollout step statistics (`routing.controller.RolloutController`)."""

    def record(self, model: str, arm: Arm, version: int, code: str, seconds: float) -> None:
        """Count one request the split assigned (its status name and latency)."""


class RolloutStatistics:
    """Response hook: every request a rollout's split assigned counts for its arm (the
    rollout gates' evidence); explicit-version requests do not."""

    def __init__(self, recorder: ArmRecorder) -> None:
        self._recorder = recorder

    def on_response(self, answer: Answer) -> None:
        """Record the answer when its route was part of the experiment."""
        route = answer.route
        if route is not None and route.in_experiment:
            self._recorder.record(
                answer.request.model, route.arm, answer.version, answer.code, answer.seconds
            )


class ResponseHook(Protocol):
    """Called once per request, success or failure (rollout statistics, mirroring)."""

    def on_response(self, answer: Answer) -> None:
        """Take note of one answer; O(1), never blocks, never raises."""


class DataPlane:
    """Executes `InferenceRequest`s against the serving table; see the module docstring."""

    def __init__(
        self,
        table: VersionTable[VersionRunner],
        router: Router | None = None,
        hooks: Sequence[ResponseHook] = (),
        on_mismatches: MismatchObserver | None = None,
        check_method_names: bool = False,
        admission: Admission | None = None,
    ) -> None:
        self._table = table
        self._admission = admission
        self._check_method_names = check_method_names
        self._router = router
        self._hooks = tuple(hooks)
        self._on_mismatches = on_mismatches

    def resolve(self, request: InferenceRequest) -> VersionRunner:
        """The runner that answers an explicit version/label or the primary (metadata)."""
        return self._table.view(request.model).resolve(request.version, request.label)

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Admit, route, check, run and filter one request; then tell the response hooks."""
        admission = self._admission
        if admission is None:
            return await self._infer(request)
        nbytes = request.size_bytes or sum(a.nbytes for a in request.inputs.values())
        admission.admit(nbytes)
        try:
            return await self._infer(request)
        finally:
            admission.release(nbytes)

    async def _infer(self, request: InferenceRequest) -> InferenceResult:
        started = time.perf_counter()
        view = self._table.view(request.model)
        route = self._route(request, view)
        if route is not None and route.version is not None:
            runner = view.resolve(route.version)  # NotFound naming what is available
        else:
            runner = view.resolve(request.version, request.label)
        runner.acquire()
        code = "OK"
        sig: Signature | None = None
        features: Arrays | None = None
        served: Arrays | None = None
        outputs: Arrays | None = None
        mismatches: list[Mismatch] = []
        try:
            sig = runner.loaded.signature(request.signature)
            _check_output_filter(sig, request.output_filter)
            if request.method is Method.PREDICT:
                features = request.inputs
                served = features
                if sig.prepare is not None and runner.checker is not None:
                    served, mismatches = checked_inputs(runner.checker, features)
            else:
                alias = example_alias(sig, request.method, self._check_method_names)
                served = {alias: _examples(request).serialized}
                if runner.checker is not None or runner.skew is not None:
                    # the raw features of tf.Example requests, for the version's checks
                    # and skew window (Predict's are fed on the model-call threads)
                    examples = _examples(request)
                    trained = runner.checker.features if runner.checker is not None else None
                    names = (trained or frozenset()) | examples.feature_names()
                    features = examples.features(names)
                    if runner.checker is not None:
                        mismatches = runner.checker.check(features)
                    if runner.skew is not None:
                        runner.skew.add(features)
            if mismatches:
                self._report(runner, mismatches)
            rows = sig.validate(served)
            outputs = _filtered(await runner.run(sig, served, rows), request.output_filter)
        except GatewayError as exc:
            code = exc.kind.status_name
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            runner.release()
            if self._hooks:
                answer = Answer(
                    request=request,
                    version=runner.version,
                    code=code,
                    seconds=time.perf_counter() - started,
                    route=route,
                    primary_version=view.primary_version(),
                    signature=sig.name if sig is not None else request.signature,
                    features=features,
                    served_inputs=served if served is not features else None,
                    outputs=outputs,
                    mismatches=mismatches,
                )
                for hook in self._hooks:
                    hook.on_response(answer)
        assert sig is not None and outputs is not None
        return InferenceResult(request.model, runner.version, sig.name, outputs, request.method)

    def _route(
        self, request: InferenceRequest, view: ModelView[VersionRunner]
    ) -> RouteDecision | None:
        """The rollout's decision for a request naming neither version nor label."""
        if self._router is None or request.version is not None or request.label:
            return None
        if request.method is Method.PREDICT:
            feature: FeatureSource = request.inputs.get
        else:

            def feature(name: str) -> np.ndarray | None:
                return _examples(request).features((name,)).get(name)

        return self._router.route(request.model, request.headers, feature, view.versions)

    def _report(self, runner: VersionRunner, mismatches: list[Mismatch]) -> None:
        """Tell the observer; refuse the request when a check's action is `reject`."""
        if self._on_mismatches is not None:
            self._on_mismatches(runner.loaded.model, runner.version, mismatches)
        rejected = [m for m in mismatches if m.action is Action.REJECT]
        if rejected:
            raise InvalidInput(
                "feature check failed: " + "; ".join(m.message() for m in rejected[:5])
            )


def _filtered(outputs: Arrays, output_filter: Sequence[str]) -> Arrays:
    if not output_filter:
        return outputs
    return {k: outputs[k] for k in dict.fromkeys(output_filter)}


def _check_output_filter(sig: Signature, output_filter: Sequence[str]) -> None:
    unknown = [o for o in output_filter if o not in sig.outputs]
    if unknown:
        raise InvalidInput(
            "output_filter: unknown output alias "
            f"{', '.join(repr(u) for u in unknown)};"
            f" signature '{sig.name}' outputs: {', '.join(sorted(sig.outputs))}"
        )


def _examples(request: InferenceRequest) -> ExampleBatch:
    if request.examples is None:
        raise InvalidInput(f"{request.method.value}: expected tf.Example input, got none")
    return request.examples


_EXAMPLE_OUTPUTS = {Method.CLASSIFY: ("classes", "scores"), Method.REGRESS: ("outputs",)}


def example_alias(sig: Signature, method: Method, check_method_name: bool = False) -> str:
    """The one input of a signature answering Classify/Regress (serialized tf.Example),
    by TF Serving's rules: with `check_method_name` (its
    `--enable_signature_method_name_check`) the method_name must match; otherwise any
    signature of the right shape answers (one input; Classify: outputs `classes` and/or
    `scores`; Regress: the one output `outputs`), as TF2's `tf.saved_model.save` writes
    such signatures with the predict method name."""
    want = method.signature_method
    verb = "classification" if method is Method.CLASSIFY else "regression"
    if check_method_name and sig.method != want:
        raise InvalidInput(
            f"Expected {verb} signature method_name to be {want}. Was: {sig.method} "
            f"(signature '{sig.name}'; set model_spec.signature_name)"
        )
    if len(sig.inputs) != 1:
        raise InvalidInput(
            f"Expected one input Tensor: signature '{sig.name}' has inputs "
            f"{', '.join(sorted(sig.inputs)) or 'none'}, a {verb} signature takes one tensor "
            "of serialized tf.Example"
        )
    names = _EXAMPLE_OUTPUTS[method]
    outputs = sorted(sig.outputs)
    if method is Method.CLASSIFY:
        ok = 1 <= len(outputs) <= 2 and any(n in sig.outputs for n in names)
        want_text = 'at least one of "classes" or "scores"'
    else:
        ok = outputs == ["outputs"]
        want_text = 'the one output "outputs"'
    if not ok:
        raise InvalidInput(
            f"Expected {verb} signature outputs to contain {want_text}: signature "
            f"'{sig.name}' (method_name {sig.method}) has outputs {', '.join(outputs)}; set "
            f"model_spec.signature_name to a {verb} signature (method_name {want})"
        )
    (alias,) = sig.inputs
    return alias
