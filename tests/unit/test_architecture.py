"""The import rules that keep the layers apart (README: Architecture).

Every import counts, including function-local and `TYPE_CHECKING` ones: a cycle hidden
in a function body is still a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "gateway"

FORBIDDEN = [
    ("serving", "lifecycle"),
    ("analysis", "transport"),
    ("analysis", "sinks"),
    ("routing", "transport"),
    ("report", "serving"),
]
"""(importer, imported) pairs of top-level parts of `gateway/`."""

NO_WIRE_FORMATS = ("analysis", "preprocessing", "serving")
"""Parts that must not import generated protobuf code (ours or TensorFlow's)."""


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        if "_proto" in rel.parts:
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            # `from gateway.x import y` may import the submodule gateway.x.y
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


MODULES = dict(_modules())
KNOWN = set(MODULES)
IMPORTS = {m: _imports(p, m) for m, p in MODULES.items()}


def _part(module: str) -> str:
    """The top-level part of `gateway.<part>...` (a folder or a top-level module)."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _project_imports(module: str) -> set[str]:
    return {i for i in IMPORTS[module] if i in KNOWN and i != module}


def _is_generated(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return name.startswith("gateway._proto") or last.endswith(("_pb2", "_pb2_grpc"))


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN)
def test_forbidden_arrows(importer, imported):
    found = sorted(
        f"{m} imports {i}"
        for m in MODULES
        if _part(m) == importer
        for i in _project_imports(m)
        if _part(i) == imported
    )
    assert not found, found


def test_core_imports_nothing_else_of_the_project():
    found = sorted(
        f"{m} imports {i}"
        for m in MODULES
        if _part(m) == "core"
        for i in IMPORTS[m]
        if i.startswith("gateway") and not i.startswith("gateway.core")
    )
    assert not found, found


@pytest.mark.parametrize("part", NO_WIRE_FORMATS)
def test_no_generated_protobuf_code(part):
    found = sorted(
        f"{m} imports {i}"
        for m in MODULES
        if _part(m) == part
        for i in IMPORTS[m]
        if _is_generated(i)
    )
    assert not found, found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_cycle_between_top_level_parts():
    edges: dict[str, set[str]] = defaultdict(set)
    for m in MODULES:
        for i in _project_imports(m):
            if _part(m) and _part(i) and _part(m) != _part(i):
                edges[_part(m)].add(_part(i))
    assert _cycles(edges) == []


def test_no_cycle_between_modules():
    edges = {
        m: {i for i in _project_imports(m) if MODULES[i].name != "__init__.py"} for m in MODULES
    }
    assert _cycles(edges) == []


def test_the_checker_sees_the_arrows_it_forbids():
    """The checker itself: a known arrow is found, so an empty list means something."""
    assert any(_part(i) == "core" for i in _project_imports("gateway.serving.dataplane"))
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _is_generated("tensorflow_serving.apis.predict_pb2")
    assert _is_generated("gateway._proto.gateway.v1.admin_pb2")
