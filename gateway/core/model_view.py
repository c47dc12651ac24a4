"""One model's servable versions as an immutable snapshot, and how a request picks one.

The lifecycle builds a new `ModelView` on every change and swaps it in whole; the
request path only reads it. A view is generic in what it holds per version (the
serving layer's runner), so the core needs to know nothing about batching or TF.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.core.errors import NotFound
from gateway.core.servable import LoadedVersion


class Servable(Protocol):
    """What the lifecycle needs of a per-version runner: its version, and a way to stop
    it once the requests that resolved it are done."""

    @property
    def version(self) -> int:
        """The version number it serves."""

    @property
    def loaded(self) -> LoadedVersion:
        """The loaded model version."""

    async def close(self, timeout: float = 30.0) -> None:
        """Wait for requests in flight (up to `timeout`), then release the version."""


S_co = TypeVar("S_co", bound=Servable, covariant=True)


def servable_not_found(model: str, version: int | None = None) -> str:
    """TF Serving's wording for a request no loaded version can answer (readiness probes
    written for TF Serving match on it): `Servable not found for request: Latest(m)` or
    `Specific(m, 3)`. The gateway's own detail follows it."""
    request = f"Latest({model})" if version is None else f"Specific({model}, {version})"
    return f"Servable not found for request: {request}"


@dataclass(frozen=True)
class ModelView(Generic[S_co]):
    """Immutable snapshot of one model's servable versions and labels."""

    name: str
    versions: Mapping[int, S_co]
    labels: Mapping[str, int]
    primary: int | str | None = None
    """Version or label answering requests that name neither (None = newest available)."""

    def primary_version(self) -> int | None:
        """The version number the primary currently refers to (None = newest available)."""
        if isinstance(self.primary, str):
            return self.labels.get(self.primary)
        return self.primary

    def resolve(self, version: int | None = None, label: str | None = None) -> S_co:
        """Pick the runner for an explicit version, a label, or the primary (by default
        the newest available); NotFound naming what is available."""
        if version is not None:
            runner = self.versions.get(version)
            if runner is None:
                raise NotFound(
                    f"{servable_not_found(self.name, version)}: model '{self.name}' version "
                    f"{version} is not available; available versions: "
                    f"{sorted(self.versions) or 'none'}"
                )
            return runner
        if label:
            target = self.labels.get(label)
            if target is None:
                raise NotFound(
                    f"model '{self.name}' has no version label '{label}'; labels: "
                    f"{', '.join(f'{k}={v}' for k, v in sorted(self.labels.items())) or 'none'}"
                )
            runner = self.versions.get(target)
            if runner is None:
                raise NotFound(
                    f"model '{self.name}' label '{label}' points to version {target}, which is "
                    f"not available; available versions: {sorted(self.versions) or 'none'}"
                )
            return runner
        if self.primary is not None:
            if isinstance(self.primary, str):
                return self.resolve(None, self.primary)
            return self.resolve(self.primary)
        if not self.versions:
            raise NotFound(
                f"{servable_not_found(self.name)}: model '{self.name}' has no available version"
            )
        return self.versions[max(self.versions)]


def view_of(table: Mapping[str, ModelView[S_co]], name: str) -> ModelView[S_co]:
    """`table[name]`, or NotFound in TF Serving's words naming the served models."""
    view = table.get(name)
    if view is None:
        raise NotFound(
            f"{servable_not_found(name)}: model '{name}' not found; served models: "
            f"{', '.join(sorted(table)) or 'none'}"
        )
    return view


class VersionTable(Protocol[S_co]):
    """The serving table: the current `ModelView` of every model (read-only)."""

    @property
    def table(self) -> Mapping[str, ModelView[S_co]]:
        """Every model's current view, replaced as a whole on every change."""

    def view(self, name: str) -> ModelView[S_co]:
        """The current view of model `name`; NotFound naming the served models."""
