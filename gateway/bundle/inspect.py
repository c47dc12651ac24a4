"""`gateway inspect VERSION_DIR`: print a version's bundle in human-readable form."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway._proto.gateway.v1 import bundle_pb2, preprocessing_pb2, statistics_pb2
from gateway.bundle.format import GOLDEN, MANIFEST, PREPROCESSING, STATISTICS, TRANSFORM


def _signatures(version_dir: Path) -> list[str]:
    from gateway.core.dtypes import dtype_name
    from gateway.core.errors import VersionLoadError
    from gateway.lifecycle.loader import read_signature_defs

    try:
        defs = read_signature_defs(version_dir)
    except VersionLoadError as exc:
        return [f"  (unreadable: {exc})"]
    lines = []
    for name, sdef in sorted(defs.items()):
        if name.startswith("__"):
            continue
        lines.append(f"  {name} ({sdef.method_name})")
        for kind, tensors in (("in ", sdef.inputs), ("out", sdef.outputs)):
            for alias, info in sorted(tensors.items()):
                dims = ", ".join("?" if d.size < 0 else str(d.size) for d in info.tensor_shape.dim)
                lines.append(f"    {kind} {alias}: {dtype_name(info.dtype)} [{dims}]")
    return lines


def _stats_lines(msg: Any) -> list[str]:
    from gateway.bundle.statistics_codec import statistics_from_proto

    stats = statistics_from_proto(msg)
    lines = []
    for name, st in sorted(stats.features.items()):
        head = f"  {name}: {st.kind} {st.dtype} shape={list(st.shape)}"
        if st.numeric is not None:
            n = st.numeric
            lines.append(
                f"{head} count={n.count} missing={n.missing} mean={n.mean:.6g} std={n.std:.6g} "
                f"min={n.min:.6g} max={n.max:.6g}"
            )
            qs = ", ".join(f"p{p:g}={v:.4g}" for p, v in n.quantiles)
            lines.append(f"    quantiles: {qs}")
            h = n.histogram
            lines.append(
                f"    histogram: {h.num_buckets} equal-width buckets, counts "
                f"{' '.join(str(c) for c in h.counts)}"
            )
        elif st.categorical is not None:
            c = st.categorical
            top = ", ".join(f"{v!r}:{k}" for v, k in list(zip(c.values, c.counts, strict=True))[:8])
            lines.append(
                f"{head} count={c.count} missing={c.missing} unique={c.unique} "
                f"complete={c.complete}"
            )
            lines.append(f"    top: {top}")
    return lines


def _parse(version_dir: Path, rel: Path, message: Any, out: list[str]) -> Any:
    """The parsed bundle file, or None (with an "unreadable" line) when it does not parse."""
    try:
        return message.FromString((version_dir / rel).read_bytes())
    except Exception as exc:
        out.append(f"{rel}: UNREADABLE ({type(exc).__name__}: {str(exc)[:120]})")
        return None


def inspect_version(version_dir: Path, verify: bool = True) -> str:
    """Text description of the SavedModel signatures and bundle files of `version_dir`.

    Never raises for a damaged bundle: unreadable files and verification failures
    are lines of the output (``verification: FAILED: ...``, ``...: UNREADABLE``).
    """
    from google.protobuf import text_format

    from gateway.bundle.format import verify_manifest

    out = [f"version directory: {version_dir}", "signatures:", *_signatures(version_dir)]
    manifest = None
    if (version_dir / MANIFEST).is_file():
        manifest = _parse(version_dir, MANIFEST, bundle_pb2.BundleManifest, out)
    if manifest is not None:
        out.append(
            f"manifest: format {manifest.format_version}, created {manifest.created_at} by gateway "
            f"{manifest.gateway_version}, golden outputs from {manifest.golden_outputs_source!r}"
        )
        for f in manifest.files:
            out.append(f"  {f.sha256[:16]}  {f.size:>10}  {f.path}")
    elif not (version_dir / MANIFEST).is_file():
        out.append("manifest: none (not exported with gateway.export_version)")
    if verify:
        try:
            if verify_manifest(version_dir) is not None:
                out.append("  verification: OK (every file matches its sha256)")
        except ValueError as exc:
            out.append(f"  verification: FAILED: {exc}")
    if (version_dir / PREPROCESSING).is_file():
        pre = _parse(version_dir, PREPROCESSING, preprocessing_pb2.Preprocessing, out)
        if pre is not None:
            out.append("preprocessing:")
            out.extend("  " + line for line in text_format.MessageToString(pre).splitlines())
    if (version_dir / TRANSFORM).is_dir():
        out.append(f"graph transform: {TRANSFORM}/ (a SavedModel)")
    if (version_dir / STATISTICS).is_file():
        stats = _parse(version_dir, STATISTICS, statistics_pb2.FeatureStatistics, out)
        if stats is not None:
            out.append(f"training statistics ({stats.num_examples} examples):")
            out.extend(_stats_lines(stats))
    if (version_dir / GOLDEN).is_file():
        golden = _parse(version_dir, GOLDEN, bundle_pb2.GoldenRecords, out)
        if golden is not None:
            out.append(
                f"golden records: {golden.rows} rows for signature '{golden.signature_name}', "
                f"atol={golden.atol:g} rtol={golden.rtol:g}; raw {sorted(golden.raw.tensors)}, "
                f"transformed {sorted(golden.transformed.tensors)}, "
                f"outputs {sorted(golden.outputs.tensors)}"
            )
    return "\n".join(out)


def run_inspect(args: argparse.Namespace) -> int:
    """CLI entry: print the inspection (exit 1 when the directory is missing or fails verify)."""
    path = Path(args.version_dir)
    if not (path / "saved_model.pb").is_file():
        print(f"gateway: error: {path}: not a model version directory (no saved_model.pb)")
        return 1
    text = inspect_version(path, verify=not args.no_verify)
    if args.json:
        print(json.dumps({"text": text.splitlines()}, indent=1))
    else:
        print(text)
    return 1 if "verification: FAILED" in text or ": UNREADABLE (" in text else 0
