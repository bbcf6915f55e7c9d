"""The product packages import each other without circles (lazy and type-only imports included):
a circle means two modules that cannot be understood, tested or changed one without the other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"servers": ROOT / "servers", "storage": ROOT / "storage", "genmesh": ROOT / "client" / "genmesh"}


def module_name(path: Path) -> str:
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


def import_graph() -> dict[str, set[str]]:
    files = [path for folder in PACKAGES.values() for path in folder.rglob("*.py") if "_pb2" not in path.name]
    modules = {module_name(path): path for path in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        # A package's __init__ importing its own modules is how packages work, not a circle.
        graph[name] = {t for t in targets if t in modules and t != name and not t.startswith(f"{name}.")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_product_packages_import_without_circles() -> None:
    graph = import_graph()
    assert "servers.runtime.queue" in graph and "servers.diffusion.loading" in graph
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_client_package_never_imports_the_servers() -> None:
    """The client installs and runs alone; ``genmesh up`` reaches the CLI through the server package's
    ``genmesh.commands`` entry point instead."""
    graph = import_graph()
    reaching = {
        module: sorted(t for t in targets if t.split(".")[0] in ("servers", "storage"))
        for module, targets in graph.items()
        if module.startswith("genmesh")
    }
    assert {module: targets for module, targets in reaching.items() if targets} == {}
