"""The version manager over the fake runtime: versions are directories whose `factor`
file says what the fake model multiplies by (no TensorFlow). Waits are on the monitor's
state changes, never on time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.config import BatchingConfig, parse_config
from gateway.core.errors import NotFound, VersionLoadError
from gateway.core.inference import InferenceRequest
from gateway.core.states import VersionState
from gateway.lifecycle.manager import VersionManager
from gateway.serving.dataplane import DataPlane
from gateway.serving.runner import VersionRunner
from gateway.testing import numpy_version

X = np.array([[1.0], [2.0]], dtype=np.float32)


def fake_load(name: str, version: int, path: Path):
    if (path / "broken").exists():
        raise VersionLoadError("variables/variables.index: missing")
    factor = float((path / "factor").read_text())
    return numpy_version(name, version, lambda a: {"y": a["x"] * factor}), 0


def write_version(base: Path, version: int, factor: float, broken: bool = False) -> None:
    d = base / str(version)
    d.mkdir(parents=True, exist_ok=True)
    (d / "factor").write_text(str(factor))
    if broken:
        (d / "broken").write_text("")


def manager_of(tmp_path: Path, **model) -> VersionManager[VersionRunner]:
    config = parse_config(
        {
            "lifecycle": {"poll_interval_seconds": 0.01, "retry_initial_seconds": 0.01},
            "models": [{"name": "m", "base_path": "repo", **model}],
        },
        tmp_path,
    )
    return VersionManager(config, lambda cfg, v: VersionRunner(v, BatchingConfig()), load=fake_load)


async def state(manager, version, *states, min_failures=0):
    return await asyncio.to_thread(
        manager.monitor.wait_for, "m", version, states, 10.0, min_failures
    )


async def answer(manager, **request) -> tuple[int, float]:
    result = await DataPlane(manager).infer(InferenceRequest("m", inputs={"x": X}, **request))
    return result.version, float(result.outputs["y"][0, 0])


@pytest.fixture
def repo(tmp_path):
    base = tmp_path / "repo"
    write_version(base, 1, 1.0)
    return base


def test_newest_version_is_served_and_a_new_one_swaps_in(tmp_path, repo):
    async def main():
        manager = manager_of(tmp_path)
        await manager.start()
        await state(manager, 1, VersionState.AVAILABLE)
        assert await answer(manager) == (1, 1.0)
        write_version(repo, 2, 2.0)
        await state(manager, 2, VersionState.AVAILABLE)
        await state(manager, 1, VersionState.END)  # latest: 1 unloads the old one
        assert await answer(manager) == (2, 2.0)
        with pytest.raises(NotFound, match=r"Specific\(m, 1\)"):
            await answer(manager, version=1)
        await manager.stop()

    asyncio.run(main())


def test_a_broken_version_fails_with_its_reason_and_the_old_one_keeps_serving(tmp_path, repo):
    async def main():
        manager = manager_of(tmp_path)
        await manager.start()
        await state(manager, 1, VersionState.AVAILABLE)
        write_version(repo, 2, 2.0, broken=True)
        failed = await state(manager, 2, VersionState.FAILED)
        assert failed.error == "variables/variables.index: missing"
        assert await answer(manager) == (1, 1.0)
        (repo / "2" / "broken").unlink()  # fixed in place: retried, then swapped in
        await state(manager, 2, VersionState.AVAILABLE)
        assert await answer(manager) == (2, 2.0)
        await manager.stop()

    asyncio.run(main())


def test_pins_labels_and_primary_at_run_time(tmp_path, repo):
    write_version(repo, 2, 2.0)

    async def main():
        manager = manager_of(tmp_path, version_labels={"stable": 1})
        await manager.start()
        await state(manager, 2, VersionState.AVAILABLE)
        manager.pin("m", frozenset({1}))  # e.g. a rollout's primary arm
        await state(manager, 1, VersionState.AVAILABLE)
        await manager.wait_loaded()
        assert sorted(manager.view("m").versions) == [1, 2]
        assert await answer(manager, label="stable") == (1, 1.0)
        manager.set_primary("m", "stable")
        assert await answer(manager) == (1, 1.0)
        manager.set_label("m", "stable", 2)
        assert await answer(manager) == (2, 2.0)
        manager.pin("m", frozenset())
        await state(manager, 1, VersionState.END)
        await manager.stop()

    asyncio.run(main())
