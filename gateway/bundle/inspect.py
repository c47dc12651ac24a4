"""`gateway inspect VERSION_DIR`: print a version's bundle in human-readable form."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway._proto.gateway.v1 import bundle_pb2, preprocessing_pb2, statistics_pb2
from gateway.bundle.format import GOLDEN, MANIFEST, PREPROCESSING, STATISTICS, TRANSFORM


def _signatures(version_dir: Path) -> list[str]:
    from gateway.errors import VersionLoadError
    from gateway.lifecycle.loader import read_signature_defs
    from gateway.transport.tensors import dtype_name

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
    from gateway.analysis.statistics import FeatureStatistics

    stats = FeatureStatistics.from_proto(msg)
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
        elif st.categorical is not None:
            c = st.categorical
            top = ", ".join(f"{v!r}:{k}" for v, k in list(zip(c.values, c.counts, strict=True))[:8])
            lines.append(
                f"{head} count={c.count} missing={c.missing} unique={c.unique} "
                f"complete={c.complete}"
            )
            lines.append(f"    top: {top}")
    return lines


def inspect_version(version_dir: Path, verify: bool = True) -> str:
    """Text description of the SavedModel signatures and bundle files of `version_dir`."""
    from google.protobuf import text_format

    out = [f"version directory: {version_dir}", "signatures:", *_signatures(version_dir)]
    manifest_path = version_dir / MANIFEST
    if manifest_path.is_file():
        manifest = bundle_pb2.BundleManifest.FromString(manifest_path.read_bytes())
        out.append(
            f"manifest: format {manifest.format_version}, created {manifest.created_at} by gateway "
            f"{manifest.gateway_version}, golden outputs from {manifest.golden_outputs_source!r}"
        )
        for f in manifest.files:
            out.append(f"  {f.sha256[:16]}  {f.size:>10}  {f.path}")
        if verify:
            from gateway.bundle.format import verify_manifest

            try:
                verify_manifest(version_dir)
                out.append("  verification: OK (every file matches its sha256)")
            except ValueError as exc:
                out.append(f"  verification: FAILED: {exc}")
    else:
        out.append("manifest: none (not exported with gateway.export_version)")
    if (version_dir / PREPROCESSING).is_file():
        pre = preprocessing_pb2.Preprocessing.FromString((version_dir / PREPROCESSING).read_bytes())
        out.append("preprocessing:")
        out.extend("  " + line for line in text_format.MessageToString(pre).splitlines())
    if (version_dir / TRANSFORM).is_dir():
        out.append(f"graph transform: {TRANSFORM}/ (a SavedModel)")
    if (version_dir / STATISTICS).is_file():
        stats = statistics_pb2.FeatureStatistics.FromString((version_dir / STATISTICS).read_bytes())
        out.append("training statistics:")
        out.extend(_stats_lines(stats))
    if (version_dir / GOLDEN).is_file():
        golden = bundle_pb2.GoldenRecords.FromString((version_dir / GOLDEN).read_bytes())
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
    return 1 if "verification: FAILED" in text else 0
