from __future__ import annotations

from gateway.config import VersionPolicy
from gateway.lifecycle.repository import fingerprint, scan


def test_scan_finds_integer_directories_only(tmp_path):
    for name in ("1", "2", "10", "tmp", ".3"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a version")
    assert sorted(scan(tmp_path)) == [1, 2, 10]
    assert scan(tmp_path / "missing") is None


def test_fingerprint_changes_with_content(tmp_path):
    (tmp_path / "variables").mkdir()
    f = tmp_path / "variables" / "variables.index"
    f.write_bytes(b"abc")
    first = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == first
    f.write_bytes(b"abcd")
    assert fingerprint(tmp_path) != first


def test_version_policy_select():
    assert VersionPolicy(latest=2).select([1, 5, 3]) == {3, 5}
    assert VersionPolicy(all={}).select([1, 5, 3]) == {1, 3, 5}
    assert VersionPolicy(specific=[1, 9]).select([1, 5, 3]) == {1}
