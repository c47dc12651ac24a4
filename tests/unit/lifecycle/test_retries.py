"""`lifecycle.max_load_retries` (TF Serving's --max_num_load_retries): a version that failed
N+1 times with the same files stays FAILED until its files change; None retries only on
change. Real VersionManager, a pre-check that always fails instead of TensorFlow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.core.errors import VersionLoadError
from gateway.core.states import VersionState
from gateway.lifecycle.manager import VersionManager
from tests.support import wait_until_async

QUIET_POLLS = 20
"""Poll cycles during which no further load may start."""


def _run(tmp_path: Path, max_load_retries: int | None) -> list[int]:
    """Load counts: after the first round of retries, after QUIET_POLLS more polls, and
    after the version's files changed (and QUIET_POLLS more polls)."""
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"not a model")
    config = parse_config(
        {
            "lifecycle": {
                "poll_interval_seconds": 0.01,
                "retry_initial_seconds": 0.001,
                "retry_max_seconds": 0.001,
                "max_load_retries": max_load_retries,
            },
            "models": [{"name": "m", "base_path": "m"}],
        },
        tmp_path,
    )
    loads: list[Path] = []

    def broken(path: Path) -> None:
        loads.append(path)
        raise VersionLoadError("broken on purpose")

    expected = 1 + (max_load_retries or 0)

    async def run() -> list[int]:
        manager = VersionManager(config, lambda m, v: None, pre_checks=[broken])
        counts = []
        await manager.start()
        try:
            for _ in range(2):
                target = len(loads) + expected
                await wait_until_async(
                    lambda target=target: (
                        len(loads) >= target
                        and manager.monitor.get("m", 1).state is VersionState.FAILED
                    ),
                    30,
                    f"{target} failed loads",
                    seen=lambda: len(loads),
                )
                await manager.wait_polls(QUIET_POLLS)
                counts.append(len(loads))
                (version / "variables.index").write_bytes(b"changed files")  # a new artifact
        finally:
            await manager.stop()
        return counts

    return asyncio.run(run())


@pytest.mark.parametrize("retries", [0, 2])
def test_a_version_failing_n_plus_one_times_stays_failed_until_its_files_change(tmp_path, retries):
    first, after_change = _run(tmp_path, retries)
    assert first == retries + 1  # the load and N retries, then nothing for QUIET_POLLS polls
    assert after_change == 2 * (retries + 1)  # changed files: a fresh budget


def test_without_a_limit_unchanged_files_are_not_retried(tmp_path):
    assert _run(tmp_path, None) == [1, 2]
