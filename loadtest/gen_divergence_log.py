"""Write a synthetic divergence log (schema ``gateway.divergence/v1``) for speed checks.

Usage::

    python -m loadtest.gen_divergence_log --lines 1000000 --out /tmp/div/divergence.jsonl
    python -m gateway.report.cli /tmp/div/divergence.jsonl*

The log mimics a gateway shadowing model ``fraud`` v1 -> v2 (and ``churn``
v3 -> v4): most records are ``divergence`` events of comparison ``shadow``,
about 2% are ``noise`` (primary replayed against itself, always identical),
about 0.5% are ``shadow_error`` events (half of them DEADLINE_EXCEEDED) and
0.2% ``shadow_drops`` summaries (each standing for 1..20 dropped requests, as
the gateway's mirror writes them). Divergence is more likely for ``country == "BR"``
and large ``amount`` (and BR inputs hit an ``unseen_category`` check on the shadow
side) so the report's feature slices have something to find.
``--files N`` spreads the lines over N rotated files (``divergence.jsonl``,
``.1``, ...), ``--gzip`` compresses the rotated ones. ``--replica NAME`` puts
NAME in every record's ``replica`` (default: ``host-1:8500`` .. ``host-3:8500``
at random per record); use one directory, seed and name per replica to mimic
several gateways (request ids embed the seed, so they never collide)::

    python -m loadtest.gen_divergence_log --lines 500000 --files 5 --seed 1 \
        --replica host-a:8500 --out /tmp/div/a/divergence.jsonl
    python -m loadtest.gen_divergence_log --lines 500000 --files 5 --seed 2 \
        --replica host-b:8500 --out /tmp/div/b/divergence.jsonl
    gateway report '/tmp/div/*/divergence.jsonl*'

Output is deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import numpy as np

COUNTRIES = ("DE", "FR", "US", "BR", "IN", "GB", "ES", "IT")
COUNTRY_P = (0.25, 0.15, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05)
START = datetime(2026, 11, 25, 6, 0, 0, tzinfo=UTC)

_DIV = (
    '{{"schema":"gateway.divergence/v1","ts":"{ts}","event":"divergence",'
    '"request_id":"{rid}","replica":"{rep}","model":"{model}",'
    '"comparison":"{comparison}","primary_version":{pv},"shadow_version":{sv},'
    '"routing_key_hash":"{rkh:08x}","rows":1,'
    '"latency_ms":{{"primary":{lp:.3f},"shadow":{ls:.3f}}},'
    '"outputs":{{"scores":{{"kind":"probabilities","diverged":{sd},"label_flip":{lf},'
    '"top1_agreement":{t1},"topk_overlap":{tk:.3f},"max_abs":{ma:.6g},'
    '"js_mean":{js:.6g},"js_max":{js:.6g}}},'
    '"value":{{"kind":"regression","diverged":{vd},"max_abs":{vma:.6g},'
    '"max_rel":{vmr:.6g},"within":{vw}}}}},'
    '"diverged":{d},"within_noise":null,'
    '"feature_mismatches":{{"primary":[{fm}],"shadow":[{fms}]}},'
    '"features":{{"amount":{amount:.2f},"country":"{country}","ssn":"<redacted>"}},'
    '"input_digest":"sha256:{rkh:08x}{rid}"}}\n'
)
_ERR = (
    '{{"schema":"gateway.divergence/v1","ts":"{ts}","event":"shadow_error","replica":"{rep}",'
    '"request_id":"{rid}","model":"{model}","comparison":"shadow","primary_version":{pv},'
    '"shadow_version":{sv},"shadow_target":"canary","error":"{error}","message":"{message}"}}\n'
)
_DROP = (
    '{{"schema":"gateway.divergence/v1","ts":"{ts}","event":"shadow_drops","replica":"{rep}",'
    '"model":"{model}","shadow_version":{sv},"count":{count},"comparison":"shadow",'
    '"shadow_target":"canary"}}\n'
)
_MESSAGES = {
    "DEADLINE_EXCEEDED": "no answer within 1000 ms",
    "UNAVAILABLE": "version 2 of model 'fraud' is not available (UNLOADING)",
}
_MISMATCH = (
    '{"feature":"amount","kind":"out_of_range","action":"log","value":%.2f,"count":1,'
    '"reference":"[1.0, 5000.0]"}'
)


_SHADOW_MISMATCH = (
    '{"feature":"country","kind":"unseen_category","action":"log","value":"BR","count":1,'
    '"reference":"7 categories"}'
)
_BR = COUNTRIES.index("BR")


def _open_text(path: Path) -> IO[str]:
    """Open `path` for writing text, gzip'd (fast level) when it ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=1)
    return path.open("w", encoding="utf-8")


def _b(value: bool) -> str:
    return "true" if value else "false"


def generate(
    path: Path,
    lines: int,
    *,
    seed: int = 0,
    files: int = 1,
    gz: bool = False,
    replica: str | None = None,
) -> list[Path]:
    """Write `lines` records spread over `files` rotated files next to `path`; return the paths.

    The newest file is `path` itself, older ones `path.1`, `path.2`, ...
    (``.gz`` appended when `gz`). `replica` is written in every record
    (default: one of ``host-1:8500`` .. ``host-3:8500`` at random per record).
    """
    rng = np.random.default_rng(seed)
    kinds = rng.choice(4, size=lines, p=(0.973, 0.02, 0.005, 0.002))
    models = rng.random(lines) < 0.3
    amounts = np.round(rng.lognormal(4.0, 1.5, size=lines), 2)
    countries = rng.choice(len(COUNTRIES), size=lines, p=COUNTRY_P)
    base_p = 0.01 + 0.05 * (countries == COUNTRIES.index("BR")) + 0.04 * (amounts > 1000)
    diverged = rng.random(lines) < base_p
    flips = diverged & (rng.random(lines) < 0.3)
    max_abs = np.where(diverged, rng.uniform(0.05, 0.6, lines), rng.exponential(0.005, lines))
    js = max_abs**2 * 0.5
    vma = rng.exponential(1e-4, lines)
    lat_p = rng.gamma(4.0, 0.5, lines)
    lat_s = lat_p * rng.uniform(0.9, 1.6, lines)
    reps = rng.integers(1, 4, lines)
    drop_counts = rng.integers(1, 21, lines)
    replicas = [f"host-{r}:8500" for r in (1, 2, 3)] if replica is None else [replica] * 3
    rkh = rng.integers(0, 2**32, lines)
    per_file = -(-lines // max(files, 1))
    paths = [path] + [Path(f"{path}.{i}") for i in range(1, files)]
    if gz:
        paths = [path] + [Path(f"{path}.{i}.gz") for i in range(1, files)]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The oldest records go to the highest-numbered file, as with logrotate.
    ordered = list(reversed(paths))
    for file_index, file_path in enumerate(ordered):
        lo, hi = file_index * per_file, min(lines, (file_index + 1) * per_file)
        with _open_text(file_path) as out:
            chunk: list[str] = []
            for i in range(lo, hi):
                ts = (START + timedelta(milliseconds=50 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                model, pv, sv = ("churn", 3, 4) if models[i] else ("fraud", 1, 2)
                kind = kinds[i]
                rid = f"{seed:04x}{i:012x}"
                if kind == 2:
                    error = "DEADLINE_EXCEEDED" if i % 2 else "UNAVAILABLE"
                    chunk.append(
                        _ERR.format(
                            ts=ts,
                            rep=replicas[reps[i] - 1],
                            rid=rid,
                            model=model,
                            pv=pv,
                            sv=sv,
                            error=error,
                            message=_MESSAGES[error],
                        )
                    )
                elif kind == 3:
                    chunk.append(
                        _DROP.format(
                            ts=ts,
                            rep=replicas[reps[i] - 1],
                            model=model,
                            sv=sv,
                            count=drop_counts[i],
                        )
                    )
                else:
                    noise = kind == 1
                    d = bool(diverged[i]) and not noise
                    flip = bool(flips[i]) and not noise
                    ma = 0.0 if noise else float(max_abs[i])
                    amount = float(amounts[i])
                    fm = _MISMATCH % amount if amount > 5000 else ""
                    # v2 (the shadow) was trained without recent BR traffic.
                    shadow_br = countries[i] == _BR and i % 5 == 0 and not noise
                    fms = _SHADOW_MISMATCH if shadow_br else ""
                    chunk.append(
                        _DIV.format(
                            ts=ts,
                            rid=rid,
                            rep=replicas[reps[i] - 1],
                            model=model,
                            comparison="noise" if noise else "shadow",
                            pv=pv,
                            sv=pv if noise else sv,
                            rkh=rkh[i],
                            lp=lat_p[i],
                            ls=lat_s[i],
                            sd=_b(d),
                            lf=_b(flip),
                            t1="0.0" if flip else "1.0",
                            tk=2 / 3 if flip else 1.0,
                            ma=ma,
                            js=0.0 if noise else float(js[i]),
                            vd="false",
                            vma=0.0 if noise else float(vma[i]),
                            vmr=0.0 if noise else float(vma[i]) / 10,
                            vw="true",
                            d=_b(d),
                            fm=fm,
                            fms=fms,
                            amount=amount,
                            country=COUNTRIES[countries[i]],
                        )
                    )
                if len(chunk) >= 10_000:
                    out.write("".join(chunk))
                    chunk.clear()
            out.write("".join(chunk))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the written paths as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=100_000, help="number of records")
    parser.add_argument("--out", type=Path, default=Path("divergence.jsonl"), help="newest file")
    parser.add_argument("--files", type=int, default=1, help="number of rotated files")
    parser.add_argument("--gzip", action="store_true", help="gzip the rotated (.1, .2...) files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replica", default=None, help="replica name in every record (default: random host-N)"
    )
    args = parser.parse_args(argv)
    if args.lines < 0 or args.files < 1:
        parser.error("--lines must be >= 0 and --files >= 1")
    paths = generate(
        args.out, args.lines, seed=args.seed, files=args.files, gz=args.gzip, replica=args.replica
    )
    json.dump({"files": [str(p) for p in paths], "lines": args.lines}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
