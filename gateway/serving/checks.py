"""Feature checks and skew windows of a version, built from its bundle and the model config.

Checks run per request on the event loop (cheap, precomputed); skew windows are
fed per model call on the model-call threads; `SkewMonitor` evaluates every
window periodically, exports gauges and logs threshold crossings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import structlog

from gateway.analysis.feature_checks import CheckConfig, FeatureChecker, Mismatch
from gateway.analysis.skew import SkewWindow
from gateway.config import ModelConfig
from gateway.core.servable import LoadedVersion

log = structlog.get_logger("gateway.skew")


def build_checks(
    model: ModelConfig, loaded: LoadedVersion
) -> tuple[FeatureChecker | None, SkewWindow | None]:
    """Checker and skew window for a version that ships training statistics (else None)."""
    bundle = loaded.extensions.get("bundle")
    stats = getattr(bundle, "statistics", None)
    if stats is None:
        return None, None
    checker = None
    if model.feature_checks.enabled:
        checker = FeatureChecker(stats, CheckConfig.from_config(model.feature_checks))
    window = None
    if model.skew.enabled:
        window = SkewWindow.from_config(stats, model.skew)
    return checker, window


def checked_inputs(
    checker: FeatureChecker, inputs: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], list[Mismatch]]:
    """Run `checker` on raw inputs: the mismatches, and the inputs without the features the
    version was not trained on (they are reported per the `unexpected_feature` action and
    never reach the preprocessing; a `reject` action is the caller's to enforce)."""
    mismatches = checker.check(inputs)
    known = checker.features
    return {k: v for k, v in inputs.items() if k in known}, mismatches


def mismatch_record(m: Mismatch) -> dict[str, Any]:
    """A mismatch as a log/JSON record (values of sensitive features are already None)."""
    return {
        "feature": m.feature,
        "kind": str(m.kind),
        "action": str(m.action),
        "value": m.value,
        "count": m.count,
        "reference": m.reference,
    }


class SkewMonitor:
    """Periodic evaluation of every version's skew window: gauges and drift log records."""

    def __init__(self, metrics: Any) -> None:
        self._metrics = metrics
        self._drifted: set[tuple[str, int, str]] = set()

    def report(self, view: Any) -> dict[int, dict[str, Any]]:
        """{version: {feature: FeatureSkew}} for one ModelView."""
        out: dict[int, dict[str, Any]] = {}
        for version, runner in view.versions.items():
            if runner.skew is not None:
                out[version] = runner.skew.report()
        return out

    def check(self, table: Any) -> None:
        """Evaluate every window; update gauges; log crossings and recoveries once each."""
        for name, view in table.items():
            for version, features in self.report(view).items():
                for feature, skew in features.items():
                    for metric in ("js", "linf", "psi"):
                        self._metrics.feature_skew.labels(name, str(version), feature, metric).set(
                            getattr(skew, metric)
                        )
                    key = (name, version, feature)
                    self._metrics.feature_drift.labels(name, str(version), feature).set(
                        1.0 if skew.drifted else 0.0
                    )
                    if skew.drifted and key not in self._drifted:
                        self._drifted.add(key)
                        log.warning(
                            "feature_skew_drift",
                            model=name,
                            version=version,
                            feature=feature,
                            crossed=list(skew.crossed),
                            js=skew.js,
                            linf=skew.linf,
                            psi=skew.psi,
                            num_values=skew.num_values,
                            thresholds=vars(skew.thresholds),
                        )
                    elif not skew.drifted and key in self._drifted:
                        self._drifted.discard(key)
                        log.info(
                            "feature_skew_recovered", model=name, version=version, feature=feature
                        )
