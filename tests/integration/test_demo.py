"""`gateway demo` end to end: what the README and issue #3 say it shows is in its output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.demo import run_demo


def test_demo_shows_preprocessing_mismatches_skew_and_a_failed_version(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(tmp_path / "demo") == 0
    out = capfd.readouterr().out
    # the bundle, as `gateway inspect` shows it
    assert "verification: OK (every file matches its sha256)" in out
    assert "amount: raw float [batch, 1] -> log1p -> standardize(" in out
    assert "country: raw string [batch] -> vocabulary(5 tokens, 1 OOV)" in out
    # raw features in, each version's own preprocessing applied (checked in process)
    assert "available versions: [1, 2]" in out
    assert out.count("== the gateway answer") == 2 and "DIFFERS" not in out
    # one request far from training: reported, by kind, in the log and the metrics
    assert re.search(r"out_of_range +feature=amount +value=5000000.0 +training: \[", out)
    assert re.search(r"unseen_category +feature=country +value='XX'", out)
    assert (
        'gateway_feature_mismatches_total{action="log",feature="amount",kind="out_of_range",'
        'model="fraud",version="1"} 1.0'
    ) in out
    # skew: version 2's shifted amounts cross the threshold, version 1's do not
    assert re.search(r"^ +2 +amount +\d+ .*DRIFT \(js\)$", out, re.M)
    assert not re.search(r"^ +1 +amount .*DRIFT", out, re.M)
    assert "log: feature_skew_drift model=fraud version=2 feature=amount" in out
    # clear errors, a corrupted version failing while the previous one keeps serving
    assert "feature 'age': shape [batch, 3] does not match training shape [batch, 1]" in out
    assert (
        "NOT_FOUND: Servable not found for request: Specific(fraud, 7): "
        "model 'fraud' version 7 is not available"
    ) in out
    assert "version 3: FAILED" in out and "reason: manifest mismatch: variables/" in out
    # shadow: version 2 mirrored, divergence measured and reported
    assert re.search(r"shadow:canary \(version 2\): \d+ requests compared, \d+ diverged", out)
    assert "fraud shadow v1->v2" in out  # `gateway report`'s table
    # the rollout: rolled back by the divergence gate, then promoted by hand and reverted
    assert "the gateway rolled it back by itself: ROLLED_BACK" in out
    assert re.search(r"rollback +\(auto\) 10% -> 0%: gate failed: divergence_rate=", out)
    assert "a request without a version is now answered by version 2" in out
    assert "PROMOTED  canary weight 100%" in out and "previous primary v1 (held)" in out
    assert "a request without a version is answered by version 1\n" in out
    assert "a request without a version is answered by version 1 (the primary)" in out
    assert "gateway exited with code 0" in out
