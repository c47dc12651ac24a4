"""Durable rollout state: one JSON file per model, replaced atomically.

``<directory>/<model>.rollout.json`` holds ``RolloutState.to_dict()``. A save
writes a temporary file in the same directory, fsyncs it, ``os.replace``-s it
over the old file (atomic on POSIX: a reader sees the old or the new content,
never a mix) and fsyncs the directory so the rename itself survives a power
loss. A crash before the rename leaves the old state intact (plus an orphan
``.<model>.*.tmp`` file, ignored by :meth:`RolloutStore.load`, removable with
:meth:`RolloutStore.remove_stale_temp_files`).

Several replicas may share the directory (a ReadWriteMany volume):
:meth:`RolloutStore.update` does a read-modify-write under an exclusive
``fcntl.flock`` on ``.<model>.lock`` so a transition is always applied to the
newest state (e.g. an automatic advance can never overwrite another
replica's rollback). Network file systems must support POSIX locks for that
(NFSv4 and CephFS do).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from gateway.routing.rollout import RolloutState

__all__ = ["CorruptStateError", "RolloutStore"]

SUFFIX: Final = ".rollout.json"
_MODEL_RE: Final = re.compile(r"^[A-Za-z0-9_.-]+$")


class CorruptStateError(ValueError):
    """A state file exists but cannot be read as a rollout state; names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: corrupt rollout state ({reason}); fix or remove the file to continue"
        )
        self.path = path
        self.reason = reason


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RolloutStore:
    """Persists each model's :class:`RolloutState` under ``directory`` (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, model: str) -> Path:
        """The state file of ``model``; ValueError for a name that is not a safe file name."""
        if not _MODEL_RE.match(model) or model in (".", ".."):
            raise ValueError(f"model name {model!r} cannot be used as a file name")
        return self.directory / f"{model}{SUFFIX}"

    def load(self, model: str) -> RolloutState | None:
        """The stored state, or None when there is none.

        Raises :class:`CorruptStateError` (naming the file) for unreadable
        JSON, a state that does not validate, or a state of another model.
        """
        path = self.path(model)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptStateError(path, f"not JSON: {exc}") from exc
        try:
            state = RolloutState.from_dict(data)
        except ValueError as exc:
            raise CorruptStateError(path, str(exc)) from exc
        if state.model != model:
            raise CorruptStateError(path, f"holds model {state.model!r}, expected {model!r}")
        return state

    def save(self, state: RolloutState) -> Path:
        """Atomically replace ``state.model``'s file with ``state``; returns the path."""
        path = self.path(state.model)
        text = json.dumps(state.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{state.model}.", suffix=".tmp", dir=self.directory
        )
        tmp = Path(tmp_name)
        try:
            os.fchmod(fd, 0o644)  # mkstemp creates 0600; let sidecars and operators read it
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self.directory)
        return path

    def delete(self, model: str) -> bool:
        """Remove ``model``'s state; True if there was one."""
        path = self.path(model)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.directory)
        return True

    def models(self) -> list[str]:
        """Models with a stored state, sorted."""
        return sorted(
            p.name[: -len(SUFFIX)]
            for p in self.directory.glob(f"*{SUFFIX}")
            if not p.name.startswith(".")
        )

    @contextlib.contextmanager
    def locked(self, model: str) -> Iterator[None]:
        """Hold the exclusive cross-process lock of ``model`` (blocking)."""
        lock_path = self.directory / f".{self.path(model).name}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def update(
        self, model: str, change: Callable[[RolloutState | None], RolloutState | None]
    ) -> RolloutState | None:
        """Read-modify-write under :meth:`locked`.

        ``change`` gets the newest stored state (or None) and returns the state
        to store; returning None or the very same object stores nothing.
        Returns the state in force afterwards. CorruptStateError propagates.
        """
        with self.locked(model):
            current = self.load(model)
            new = change(current)
            if new is None or new is current:
                return current
            if new.model != model:
                raise ValueError(f"update of {model!r} returned a state of {new.model!r}")
            self.save(new)
            return new

    def remove_stale_temp_files(self, older_than_seconds: float, now: float) -> list[Path]:
        """Delete orphan temporary files (left by a crash) last modified before
        ``now - older_than_seconds``; returns what was removed.

        Use a generous age: a younger file may be another replica's save in progress.
        """
        removed: list[Path] = []
        for tmp in self.directory.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if tmp.stat().st_mtime < now - older_than_seconds:
                    tmp.unlink()
                    removed.append(tmp)
        return removed
