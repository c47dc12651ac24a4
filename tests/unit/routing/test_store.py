"""RolloutStore: JSON round trip, atomic replace, corrupt files, locked updates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.routing import rollout as ro
from gateway.routing import store as store_mod
from gateway.routing.rollout import RolloutState, Status
from gateway.routing.store import CorruptStateError, RolloutStore
from tests.unit.routing.plans import plan

PLAN = plan(steps=[10.0, 100.0])
T0 = 1_700_000_000.0


def running(model: str = "demo") -> RolloutState:
    state, _ = ro.start(RolloutState.new(model, PLAN), PLAN, T0)
    return state


def test_round_trip(tmp_path: Path):
    store = RolloutStore(tmp_path / "state")  # created if missing
    assert store.load("demo") is None
    state = running()
    path = store.save(state)
    assert path == tmp_path / "state" / "demo.rollout.json"
    assert store.load("demo") == state
    assert json.loads(path.read_text())["rollout_id"] == "demo/2/1"
    paused, _ = ro.pause(state, T0 + 5)
    store.save(paused)
    assert store.load("demo") == paused
    assert store.models() == ["demo"]
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["demo.rollout.json"]
    assert store.delete("demo") and store.load("demo") is None and not store.delete("demo")


def test_crash_between_write_and_rename_keeps_old_state(tmp_path: Path, monkeypatch):
    store = RolloutStore(tmp_path)
    old = running()
    store.save(old)
    new, _ = ro.pause(old, T0 + 1)

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(store_mod.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.save(new)
    monkeypatch.undo()
    assert store.load("demo") == old
    assert not list(tmp_path.glob(".*.tmp"))  # our own temp file was cleaned up


def test_orphan_temp_file_from_a_hard_crash_is_ignored(tmp_path: Path):
    store = RolloutStore(tmp_path)
    old = running()
    store.save(old)
    # what a killed process leaves behind: a complete or partial temp file, never renamed
    orphan = tmp_path / ".demo.abc123.tmp"
    orphan.write_text('{"partial": ')
    assert store.load("demo") == old
    assert store.models() == ["demo"]
    os.utime(orphan, (T0 - 7200, T0 - 7200))
    assert store.remove_stale_temp_files(3600, now=T0) == [orphan]
    assert not orphan.exists()


def test_save_fsyncs_file_and_directory(tmp_path: Path, monkeypatch):
    calls: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", spy)
    RolloutStore(tmp_path).save(running())
    assert len(calls) == 2  # the temp file, then the directory


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"schema": 1}', "rollout_id: missing"),
        (b"[]", "expected a mapping"),
    ],
)
def test_corrupt_file_raises_naming_the_file(tmp_path: Path, content, message):
    store = RolloutStore(tmp_path)
    path = tmp_path / "demo.rollout.json"
    path.write_bytes(content)
    with pytest.raises(CorruptStateError, match=message) as info:
        store.load("demo")
    assert str(path) in str(info.value)
    assert info.value.path == path


def test_state_of_another_model_is_corrupt(tmp_path: Path):
    store = RolloutStore(tmp_path)
    (tmp_path / "demo.rollout.json").write_text(json.dumps(running("other").to_dict()))
    with pytest.raises(CorruptStateError, match="holds model 'other'"):
        store.load("demo")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "x y"])
def test_unsafe_model_names(tmp_path: Path, bad):
    with pytest.raises(ValueError, match="cannot be used as a file name"):
        RolloutStore(tmp_path).load(bad)


def test_update_applies_change_to_newest_state(tmp_path: Path):
    store = RolloutStore(tmp_path)
    assert store.update("demo", lambda s: None) is None
    created = store.update("demo", lambda s: running() if s is None else s)
    assert created == running()
    unchanged = store.update("demo", lambda s: s)
    assert unchanged == created
    paused = store.update("demo", lambda s: ro.pause(s, T0 + 1)[0] if s else None)
    assert paused is not None and paused.status is Status.PAUSED
    assert store.load("demo") == paused
    with pytest.raises(ValueError, match="returned a state of 'other'"):
        store.update("demo", lambda s: running("other"))


WORKER = """
import sys
from gateway.routing import rollout as ro
from gateway.routing.rollout import Status
from gateway.routing.store import RolloutStore

store = RolloutStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    def change(s, i=i):
        # a read-modify-write that would lose updates without the lock
        if s.status is Status.RUNNING:
            return ro.pause(s, 1e9 + i)[0]
        return ro.resume(s, 1e9 + i)[0]
    store.update("demo", change)
"""


def test_update_is_serialised_across_processes(tmp_path: Path):
    store = RolloutStore(tmp_path)
    store.save(running())
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), "25"]) for _ in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    state = store.load("demo")
    assert state is not None
    assert len(state.history) == 1 + 3 * 25  # start + every update, none lost


def test_state_file_is_readable_by_others(tmp_path: Path):
    path = RolloutStore(tmp_path).save(running())
    assert path.stat().st_mode & 0o777 == 0o644
