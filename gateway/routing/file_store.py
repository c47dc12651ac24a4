"""The `file` state store: `RolloutStore`'s directory of JSON state files (flock for the
read-modify-write), plus judging leases and per-replica step evidence as files beside
them, for replicas on one machine. Every file operation runs on a worker thread; an
OSError (a vanished or unwritable directory) is `StoreUnavailable`.

Layout under ``state_dir``::

    <model>.rollout.json                  the state (RolloutStore)
    .<model>.rollout.json.lock            its flock
    .<model>.lease                        {"holder", "expires_at"}, under the same flock
    .evidence/<model>/<sha1(step)>/<sha1(replica)>.json   {"replica", "step", "evidence"}
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.routing.rollout import RolloutState
from gateway.routing.state_store import Change, Evidence, StoreUnavailable
from gateway.routing.store import RolloutStore

EVIDENCE_TTL_SECONDS = 3600.0
"""Evidence of a step not written to for this long is removed."""


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:20]


class FileStateStore:
    """`StateStore` over a directory (see the module docstring)."""

    kind = "file"

    def __init__(self, directory: str | os.PathLike[str], clock: Any = time.time) -> None:
        self.files = RolloutStore(directory)
        self.directory = self.files.directory
        self._clock = clock

    @classmethod
    async def open(cls, directory: str | os.PathLike[str]) -> FileStateStore:
        """Create the directory if needed (on a worker thread)."""
        try:
            return await asyncio.to_thread(cls, directory)
        except OSError as exc:
            raise StoreUnavailable(f"rollout state directory {directory}: {exc}") from exc

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StoreUnavailable(f"rollout state directory {self.directory}: {exc}") from exc

    async def load(self, model: str) -> RolloutState | None:
        """The stored state (CorruptStateError when unreadable)."""
        state: RolloutState | None = await self._run(self.files.load, model)
        return state

    async def update(self, model: str, change: Change) -> RolloutState | None:
        """`RolloutStore.update`: under the model's flock, so `change` sees the newest."""
        state: RolloutState | None = await self._run(self.files.update, model, change)
        return state

    async def acquire_lease(self, model: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lease file under the model's flock."""
        held: bool = await self._run(self._lease, model, holder, ttl_seconds)
        return held

    def _lease(self, model: str, holder: str, ttl_seconds: float) -> bool:
        path = self.directory / f".{model}.lease"
        self.files.path(model)  # ValueError for a name that is not a safe file name
        with self.files.locked(model):
            now = self._clock()
            try:
                current = json.loads(path.read_text())
                taken = current["holder"] != holder and float(current["expires_at"]) > now
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                taken = False
            if taken:
                return False
            _write_atomic(path, {"holder": holder, "expires_at": now + ttl_seconds})
            return True

    def _step_dir(self, model: str, step: str) -> Path:
        self.files.path(model)  # ValueError for a name that is not a safe file name
        return self.directory / ".evidence" / model / _digest(step)

    async def put_evidence(self, model: str, step: str, replica: str, evidence: Evidence) -> None:
        """Replace the replica's evidence file of the step (atomic rename)."""
        await self._run(self._put, model, step, replica, evidence)

    def _put(self, model: str, step: str, replica: str, evidence: Evidence) -> None:
        step_dir = self._step_dir(model, step)
        step_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(
            step_dir / f"{_digest(replica)}.json",
            {"replica": replica, "step": step, "evidence": dict(evidence)},
        )
        self._expire(step_dir.parent, keep=step_dir)

    def _expire(self, model_dir: Path, keep: Path) -> None:
        cutoff = self._clock() - EVIDENCE_TTL_SECONDS
        for old in model_dir.iterdir():
            if old != keep:
                with contextlib.suppress(OSError):
                    if old.stat().st_mtime < cutoff:
                        shutil.rmtree(old)

    async def evidence(self, model: str, step: str) -> dict[str, Evidence]:
        """Every replica's evidence file of the step (unreadable files are skipped: a
        replica's next flush replaces them)."""
        found: dict[str, Evidence] = await self._run(self._read, model, step)
        return found

    def _read(self, model: str, step: str) -> dict[str, Evidence]:
        step_dir = self._step_dir(model, step)
        found: dict[str, Evidence] = {}
        if not step_dir.is_dir():
            return found
        for path in step_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                data = json.loads(path.read_text())
                if data["step"] == step:
                    found[str(data["replica"])] = data["evidence"]
        return found

    async def close(self) -> None:
        """Nothing to release."""


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
