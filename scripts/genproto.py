"""Generate Python modules for the project's protos into gateway/_proto.

Usage: python scripts/genproto.py [--check]

Generated code is committed; `--check` regenerates into a temporary directory
and exits 1 when the committed modules are stale (tests call it).
"""

from __future__ import annotations

import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "gateway" / "_proto"
# Generated code imports by proto package (`from gateway.v1 import x_pb2`, `from inference
# import grpc_service_pb2`); our package is also called `gateway`, so imports are
# rewritten to point inside gateway/_proto.
_IMPORT = re.compile(r"^from (gateway\.v1|inference) import", re.MULTILINE)
# The Open Inference Protocol's messages (package `inference`) have the fully-qualified
# names tritonclient's generated module registers too; in protobuf's default descriptor
# pool whichever loads second fails ("duplicate symbol"). Protos under these directories
# are built into a pool of their own, exposed as the module's `POOL` (for reflection).
OWN_POOL = ("inference",)
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile("
_STUB_DESCRIPTOR = "DESCRIPTOR: _descriptor.FileDescriptor\n"
_STUB_POOL = "POOL: _descriptor_pool.DescriptorPool\n" + _STUB_DESCRIPTOR
_STUB_IMPORT = "from google.protobuf import descriptor as _descriptor\n"
_STUB_POOL_IMPORT = (
    _STUB_IMPORT + "from google.protobuf import descriptor_pool as _descriptor_pool\n"
)


def generate(out: Path) -> list[Path]:
    """Run protoc for every .proto under protos/ and return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files = sorted(p for p in out.rglob("*") if p.suffix in {".py", ".pyi"})
    for path in files:
        text = _IMPORT.sub(r"from gateway._proto.\1 import", path.read_text())
        if path.relative_to(out).parts[0] in OWN_POOL and path.stem.endswith("_pb2"):
            text = _own_pool(path, text)
        path.write_text(text)
    for pkg in {p.parent for p in files}:
        while pkg != out and pkg.is_relative_to(out):
            (pkg / "__init__.py").touch()
            pkg = pkg.parent
    return files


def _own_pool(path: Path, text: str) -> str:
    """Build the module's messages in a descriptor pool of its own, exposed as `POOL`
    (and declared in its stub)."""
    swaps = (
        [(_STUB_IMPORT, _STUB_POOL_IMPORT), (_STUB_DESCRIPTOR, _STUB_POOL)]
        if path.suffix == ".pyi"
        else [(_DEFAULT_POOL, _OWN_POOL)]
    )
    for old, new in swaps:
        if text.count(old) != 1:
            raise SystemExit(f"{path.name}: generated code changed, expected one {old!r}")
        text = text.replace(old, new)
    return text


def main() -> int:
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = generate(Path(tmp))
            stale = []
            for path in fresh:
                committed = OUT / path.relative_to(tmp)
                if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                    stale.append(str(committed.relative_to(ROOT)))
            if stale:
                print("stale generated protos (run `make proto`):", *stale, sep="\n  ")
                return 1
            print("generated protos are up to date")
            return 0
    generate(OUT)
    print(f"generated into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
