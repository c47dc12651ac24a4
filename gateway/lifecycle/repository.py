"""Read a TF Serving model repository: `<base_path>/<integer version>/...`.

Only `stat` calls: cheap enough to poll every second. A fingerprint changes
whenever any file of a version is added, removed, resized or rewritten, which is
what triggers a retry of a failed version.
"""

from __future__ import annotations

import os
from pathlib import Path

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(version_dir: Path) -> Fingerprint:
    """(relative path, size, mtime_ns) of every file below `version_dir`, sorted."""
    entries: list[tuple[str, int, int]] = []
    for root, _dirs, files in os.walk(version_dir):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, version_dir), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


def scan(base_path: Path) -> dict[int, Path] | None:
    """Map version number -> directory, or None when `base_path` is missing or unreadable."""
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return None
    versions: dict[int, Path] = {}
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir():
            versions[int(entry.name)] = Path(entry.path)
    return versions
