"""A fake runtime of equal standing: versions whose signatures are plain numpy functions,
and a static serving table, so the data plane, the mirror and the rollout controller run
without TensorFlow or a model repository (unit tests, tools, examples).

    v1 = numpy_version("m", 1, lambda x: {"y": x["x"] * 2.0})
    table = StaticTable.of(v1, v2, primary=1)
    plane = DataPlane(table)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from gateway.config import BatchingConfig
from gateway.core.dtypes import DT_FLOAT, DT_STRING
from gateway.core.inference import Method
from gateway.core.model_view import ModelView, view_of
from gateway.core.servable import (
    DEFAULT_SIGNATURE,
    Arrays,
    LoadedVersion,
    Signature,
    TensorSpec,
)
from gateway.core.states import VersionState, VersionStatus
from gateway.serving.runner import VersionRunner

Spec = tuple[int, tuple[int | None, ...] | None]
"""(DataType value, shape) of one tensor."""


def numpy_signature(
    fn: Callable[[Mapping[str, np.ndarray]], Arrays],
    inputs: Mapping[str, Spec] | None = None,
    outputs: Mapping[str, Spec] | None = None,
    *,
    name: str = DEFAULT_SIGNATURE,
    method: Method = Method.PREDICT,
) -> Signature:
    """A signature running `fn` (defaults: `x: float32 [?, 1] -> y: float32 [?, 1]`;
    Classify/Regress: one string input `inputs: [?]`)."""
    if inputs is None:
        inputs = (
            {"x": (DT_FLOAT, (None, 1))}
            if method is Method.PREDICT
            else {"inputs": (DT_STRING, (None,))}
        )
    outputs = outputs or {"y": (DT_FLOAT, (None, 1))}
    return Signature(
        name=name,
        method=method.signature_method,
        inputs={k: TensorSpec(d, s) for k, (d, s) in inputs.items()},
        outputs={k: TensorSpec(d, s) for k, (d, s) in outputs.items()},
        run=lambda arrays: {k: np.asarray(v) for k, v in fn(arrays).items()},
    )


def numpy_version(
    model: str,
    version: int,
    fn: Callable[[Mapping[str, np.ndarray]], Arrays] | None = None,
    *signatures: Signature,
    extensions: Mapping[str, Any] | None = None,
) -> LoadedVersion:
    """A `LoadedVersion` whose serving_default runs `fn` (plus any `signatures`)."""
    sigs = {s.name: s for s in signatures}
    if fn is not None:
        sigs.setdefault(DEFAULT_SIGNATURE, numpy_signature(fn))
    return LoadedVersion(
        model=model,
        version=version,
        path=Path(f"/fake/{model}/{version}"),
        signatures=sigs,
        signature_defs={},
        extensions=dict(extensions or {}),
    )


class StaticTable:
    """A serving table (`VersionTable`, `ServingControls`) over fixed runners; `pin`,
    `set_primary` and `set_label` take effect at once, as on the real manager."""

    def __init__(self, views: Mapping[str, ModelView[VersionRunner]]) -> None:
        self.table: Mapping[str, ModelView[VersionRunner]] = MappingProxyType(dict(views))
        self.pins: dict[str, frozenset[int]] = {}

    @classmethod
    def of(
        cls,
        *versions: LoadedVersion,
        primary: int | str | None = None,
        labels: Mapping[str, int] | None = None,
        batching: BatchingConfig | None = None,
        runner: Callable[[LoadedVersion], VersionRunner] | None = None,
    ) -> StaticTable:
        """One model's versions, each with its own `VersionRunner` (batched by default)."""
        make = runner or (lambda v: VersionRunner(v, batching or BatchingConfig()))
        runners = {v.version: make(v) for v in versions}
        name = versions[0].model
        view = ModelView(
            name, MappingProxyType(runners), MappingProxyType(dict(labels or {})), primary
        )
        return cls({name: view})

    def view(self, name: str) -> ModelView[VersionRunner]:
        """The view of `name`; NotFound like the manager's."""
        return view_of(self.table, name)

    def _replace(self, name: str, **changes: Any) -> None:
        old = self.view(name)
        fields = {
            "name": old.name,
            "versions": old.versions,
            "labels": old.labels,
            "primary": old.primary,
            **changes,
        }
        self.table = MappingProxyType({**self.table, name: ModelView(**fields)})

    def pin(self, name: str, versions: frozenset[int]) -> None:
        """Remember the pins (every version here is always loaded)."""
        self.pins[name] = versions

    def set_primary(self, name: str, primary: int | str | None) -> None:
        """Point the primary at a version or label."""
        self._replace(name, primary=primary)

    def set_label(self, name: str, label: str, version: int | None) -> None:
        """Point a label at a version (None removes it)."""
        labels = dict(self.view(name).labels)
        if version is None:
            labels.pop(label, None)
        else:
            labels[label] = version
        self._replace(name, labels=MappingProxyType(labels))

    def statuses(self, name: str) -> list[VersionStatus]:
        """Every version AVAILABLE."""
        return [VersionStatus(name, v, VersionState.AVAILABLE) for v in self.view(name).versions]

    def model_names(self) -> list[str]:
        """The models."""
        return sorted(self.table)

    def labels(self, name: str) -> dict[str, int]:
        """The model's labels."""
        return dict(self.view(name).labels)

    def base_path(self, name: str) -> Path:
        """A made-up path."""
        return Path(f"/fake/{name}")

    async def close(self) -> None:
        """Stop every runner."""
        for view in self.table.values():
            for runner in view.versions.values():
                await runner.close()
