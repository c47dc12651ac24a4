"""Open the HTML divergence report in headless Chromium: it renders and its script runs.

Needs a ``chromium`` binary (Debian: ``apt-get install -y chromium``; the Makefile
installs it). Without one the test is skipped, or fails when ``CI`` is set.
Set ``UPDATE_SCREENSHOT=1`` to refresh ``docs/report-screenshot.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from gateway.report.cli import main
from loadtest.gen_divergence_log import generate

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str:
    for name in ("/usr/bin/chromium", *CANDIDATES):
        found = shutil.which(name)
        if found:
            return found
    message = (
        "chromium not found: install it with `apt-get update && apt-get install -y chromium` "
        "(Debian/Ubuntu; `make test` on CI does this)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _run_chromium(binary: str, tmp: Path, *mode: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2000",
            *mode,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp,
    )


def _png_info(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct sampled bytes of the decoded image data)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return width, height, len(set(raw[::101]))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("html-report")
    generate(tmp / "logs" / "divergence.jsonl", 6000, seed=7, files=2, gz=True)
    out = tmp / "report.html"
    code = main([str(tmp / "logs"), "--html", str(out), "--min-count", "10", "--json"])
    assert code == 0
    return out


def test_report_renders_in_chromium(page: Path, tmp_path: Path) -> None:
    binary = _chromium()
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"(?:src|href)\s*=|https?://|url\(", html), "page must be self-contained"

    shot = tmp_path / "shot.png"
    proc = _run_chromium(binary, tmp_path, f"--screenshot={shot}", url=page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    assert shot.exists()
    data = shot.read_bytes()
    width, height, distinct = _png_info(data)
    assert (width, height) == (1280, 2000)
    assert len(data) > 30_000, "screenshot looks blank"
    assert distinct > 20, "screenshot looks blank"

    dom = _run_chromium(binary, tmp_path, "--dump-dom", url=page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    status = re.search(r'<span id="js-status"([^>]*)>([^<]*)</span>', dom.stdout)
    assert status is not None
    assert status.group(2) == "ok", "the inline script did not run to the end"
    assert 'data-groups="4"' in status.group(1)  # fraud/churn x shadow/noise
    assert dom.stdout.count("<svg") >= 8

    if os.environ.get("UPDATE_SCREENSHOT"):
        docs = REPO / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs / "report-screenshot.png")
