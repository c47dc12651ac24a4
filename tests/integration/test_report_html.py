"""Open the HTML divergence report in headless Chromium: it renders and its script runs.

Needs a ``chromium`` binary (Debian: ``apt-get install -y chromium``; the Makefile
installs it). Without one the test is skipped, or fails when ``CI`` is set.

"No errors" means: Chromium logs no console message at all for the page (an
uncaught exception, a ``console.error`` and a failed resource load are all
console messages, and the page itself never logs), and the page's script ran to
its end and found every chart laid out with a visible size.

Set ``UPDATE_SCREENSHOT=1`` to refresh ``docs/report-screenshot.png`` (rendered
from a larger, two-replica log than the test's own, see `screenshot_log`).
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


_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?(?::\d+)?\]\s*(.*)")


def _console_messages(stderr: str) -> list[str]:
    """The page's console messages in Chromium's ``--enable-logging=stderr`` output."""
    return [m.group(1) for m in _CONSOLE.finditer(stderr)]


def test_console_message_detection() -> None:
    line = (
        '[8054:8054:1130/123905.688070:INFO:CONSOLE:44] "Uncaught TypeError: Cannot read '
        "properties of null (reading 'x')\", source: file:///tmp/r.html (44)"
    )
    old_format = '[1:1:0101/000000.000000:INFO:CONSOLE(12)] "boom", source: file:///r.html (12)'
    assert len(_console_messages(f"noise\n{line}\n{old_format}\nmore noise")) == 2
    assert _console_messages("[1:1:0101/000000.000000:ERROR:dbus/bus.cc:405] no bus") == []


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
    assert _console_messages(proc.stderr) == [], proc.stderr[-2000:]
    assert shot.exists()
    data = shot.read_bytes()
    width, height, distinct = _png_info(data)
    assert (width, height) == (1280, 2000)
    assert len(data) > 30_000, "screenshot looks blank"
    assert distinct > 20, "screenshot looks blank"

    dom = _run_chromium(binary, tmp_path, "--dump-dom", url=page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == [], dom.stderr[-2000:]
    status = re.search(r'<span id="js-status"([^>]*)>([^<]*)</span>', dom.stdout)
    assert status is not None
    assert status.group(2) == "ok", "the inline script did not run to the end"
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', status.group(1)))
    assert attrs["data-groups"] == "4"  # fraud/churn x shadow/noise
    # per group: 2 histograms + timeline, + the mismatch bars for the 2 shadow groups
    assert int(attrs["data-charts"]) == dom.stdout.count('<svg class="chart"') >= 14
    assert attrs["data-charts-drawn"] == attrs["data-charts"], "a chart has no visible size"


def test_a_script_error_is_detected(page: Path, tmp_path: Path) -> None:
    """The checks above can fail: the same page with a throwing script is caught."""
    binary = _chromium()
    broken = tmp_path / "broken.html"
    broken.write_text(
        page.read_text(encoding="utf-8").replace("<script>", "<script>null.x;</script><script>", 1)
    )
    dom = _run_chromium(binary, tmp_path, "--dump-dom", url=broken.as_uri())
    messages = _console_messages(dom.stderr)
    assert len(messages) == 1 and "Uncaught TypeError" in messages[0], dom.stderr[-2000:]


def screenshot_log(root: Path) -> list[str]:
    """A realistic log for the README screenshot: 2 replicas x 100k records (~1.4 h each),
    rotated into 3 files each, the older ones gzip'd."""
    for seed, name in ((11, "a"), (12, "b")):
        generate(
            root / name / "divergence.jsonl",
            100_000,
            seed=seed,
            files=3,
            gz=True,
            replica=f"gateway-{name}:8500",
        )
    return [str(root / "*" / "divergence.jsonl*")]


@pytest.mark.skipif(not os.environ.get("UPDATE_SCREENSHOT"), reason="set UPDATE_SCREENSHOT=1")
def test_update_readme_screenshot(tmp_path: Path) -> None:
    binary = _chromium()
    out = tmp_path / "report.html"
    assert main([*screenshot_log(tmp_path / "logs"), "--html", str(out), "--json"]) == 0
    shot = tmp_path / "shot.png"
    proc = _run_chromium(binary, tmp_path, f"--screenshot={shot}", url=out.as_uri())
    assert proc.returncode == 0 and _console_messages(proc.stderr) == [], proc.stderr[-2000:]
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(shot, docs / "report-screenshot.png")
