"""The package's shape (docs/design.md): modules stay small, imports form no cycle,
and a module imports another at its top, where a reader sees it, unless the other is
optional (the effects' extra)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "mediaserver"
MAX_LINES = 700
LONG_ON_PURPOSE = {"mediaserver.sfu.sdp"}  # one RFC's worth of offer/answer rules
OPTIONAL = {"mediaserver.ai_filters"}
"""Modules that need an optional extra: imported where used, never at start-up."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The mediaserver module an import names (a name imported from a package may
    be a module of it, or something the package defines)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(module imported, inside a function) for every mediaserver import that runs:
    imports under `if TYPE_CHECKING:` are for annotations only."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function = True
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mediaserver"):
                    target = _resolve(alias.name, known)
                    if target:
                        found.append((target, in_function))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package up
                up = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{up}.{base}" if base else up
            if base.startswith("mediaserver"):
                for alias in node.names:
                    target = _resolve(f"{base}.{alias.name}", known)
                    if target:
                        found.append((target, in_function))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree, False)
    return found


def test_no_module_is_over_700_lines() -> None:
    long = {
        name: len(path.read_text().splitlines())
        for name, path in modules().items()
        if name not in LONG_ON_PURPOSE
    }
    assert {n: count for n, count in long.items() if count > MAX_LINES} == {}


def test_no_function_imports_a_module_of_the_package_except_the_optional_ones() -> None:
    known = modules()
    local = sorted(
        f"{name} -> {target}"
        for name, path in known.items()
        for target, in_function in imports(path, known)
        if in_function and not any(target.startswith(o) for o in OPTIONAL)
    )
    assert local == []


def test_no_import_cycle() -> None:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _ in imports(path, known):
            # a package's __init__ importing its own modules is how it exports them
            if target != name and not target.startswith(name + "."):
                graph[name].add(target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    assert [" -> ".join(c) for c in cycles] == []
