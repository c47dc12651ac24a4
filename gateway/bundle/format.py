"""The bundle's files inside a version directory, and their (de)serialization.

Layout (all under `assets.extra/`, so the directory stays a valid TF Serving
model directory)::

    assets.extra/gateway/manifest.pb        BundleManifest: sha256 of every other file
    assets.extra/gateway/preprocessing.pb   gateway.v1.Preprocessing
    assets.extra/gateway/statistics.pb      gateway.v1.FeatureStatistics
    assets.extra/gateway/golden.pb          GoldenRecords
    assets.extra/gateway/transform/         optional graph transform SavedModel
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gateway._proto.gateway.v1 import bundle_pb2

FORMAT_VERSION = 1
BUNDLE_DIR = Path("assets.extra") / "gateway"
MANIFEST = BUNDLE_DIR / "manifest.pb"
PREPROCESSING = BUNDLE_DIR / "preprocessing.pb"
STATISTICS = BUNDLE_DIR / "statistics.pb"
GOLDEN = BUNDLE_DIR / "golden.pb"
TRANSFORM = BUNDLE_DIR / "transform"


def tensor_to_proto(array: np.ndarray) -> bundle_pb2.Tensor:
    """Encode a numpy array (numeric, bool or strings) as a bundle Tensor."""
    array = np.asarray(array)
    msg = bundle_pb2.Tensor(shape=list(array.shape))
    if array.dtype.kind in "OSU":
        msg.dtype = "string"
        msg.strings.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()
        )
    else:
        msg.dtype = array.dtype.name
        msg.content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return msg


def tensor_from_proto(msg: bundle_pb2.Tensor) -> np.ndarray:
    """Decode a bundle Tensor."""
    shape = tuple(msg.shape)
    if msg.dtype == "string":
        out = np.empty(len(msg.strings), dtype=object)
        out[:] = list(msg.strings)
        return out.reshape(shape)
    dtype = np.dtype(msg.dtype).newbyteorder("<")
    return np.frombuffer(msg.content, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(shape)


def tensors_to_proto(arrays: Mapping[str, np.ndarray]) -> bundle_pb2.NamedTensors:
    """Encode a name -> array mapping."""
    msg = bundle_pb2.NamedTensors()
    for name, array in arrays.items():
        msg.tensors[name].CopyFrom(tensor_to_proto(array))
    return msg


def tensors_from_proto(msg: bundle_pb2.NamedTensors) -> dict[str, np.ndarray]:
    """Decode a name -> array mapping."""
    return {name: tensor_from_proto(t) for name, t in sorted(msg.tensors.items())}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_files(version_dir: Path) -> list[str]:
    """Every file of a version directory, relative, '/'-separated, sorted; manifest excluded."""
    out = []
    for root, _dirs, files in os.walk(version_dir):
        for name in files:
            rel = Path(root, name).relative_to(version_dir).as_posix()
            if rel != MANIFEST.as_posix():
                out.append(rel)
    return sorted(out)


def build_manifest(
    version_dir: Path, golden_outputs_source: str, metadata: Mapping[str, str] | None = None
) -> bundle_pb2.BundleManifest:
    """A manifest with the size and sha256 of every file currently in `version_dir`."""
    from datetime import UTC, datetime

    from gateway import __version__

    manifest = bundle_pb2.BundleManifest(
        format_version=FORMAT_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        gateway_version=__version__,
        golden_outputs_source=golden_outputs_source,
    )
    for rel in list_files(version_dir):
        path = version_dir / rel
        manifest.files.add(path=rel, size=path.stat().st_size, sha256=sha256_file(path))
    manifest.metadata.update(metadata or {})
    return manifest


def verify_manifest(version_dir: Path) -> bundle_pb2.BundleManifest | None:
    """Check every file against the manifest; None when the version has no bundle.

    Raises `ValueError` whose message names the first file that is missing,
    unexpected, of the wrong size or with the wrong sha256. A version that has
    gateway bundle files but no manifest is an error too (a deleted manifest
    must not switch verification off).
    """
    path = version_dir / MANIFEST
    if not path.is_file():
        bundle = version_dir / BUNDLE_DIR
        bundle_files = sorted(p.name for p in bundle.iterdir()) if bundle.is_dir() else []
        if bundle_files:
            raise ValueError(
                f"{MANIFEST}: missing, but the version has gateway bundle files "
                f"({', '.join(bundle_files)}); re-export the version"
            )
        return None
    manifest = bundle_pb2.BundleManifest()
    try:
        manifest.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise ValueError(f"{MANIFEST}: cannot parse ({type(exc).__name__})") from exc
    if manifest.format_version > FORMAT_VERSION:
        raise ValueError(
            f"{MANIFEST}: format_version {manifest.format_version} is newer than this gateway "
            f"supports ({FORMAT_VERSION})"
        )
    listed = {f.path: f for f in manifest.files}
    present = set(list_files(version_dir))
    for rel in sorted(listed):
        if rel not in present:
            raise ValueError(f"{rel}: listed in the manifest but missing")
    extra = sorted(present - set(listed))
    if extra:
        raise ValueError(f"{extra[0]}: not listed in the manifest (unexpected file)")
    for rel, entry in sorted(listed.items()):
        file = version_dir / rel
        size = file.stat().st_size
        if size != entry.size:
            raise ValueError(f"{rel}: size {size} bytes, manifest says {entry.size}")
        if sha256_file(file) != entry.sha256:
            raise ValueError(f"{rel}: sha256 does not match the manifest (file is corrupt)")
    return manifest
