"""Which layers may import which: the simulator builds on naming and kad,
never the other way round, and kad knows nothing of naming.  Imports are
read with ``ast`` (nested and relative ones included), so a module that is
never imported by the tests is checked all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = [
    ("overlay.naming", "overlay.sim"),
    ("overlay.kad", "overlay.sim"),
    ("overlay.kad", "overlay.naming"),
]
"""(importer package, package it must not import)."""


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, absolute;
    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(importer: str, forbidden: str) -> list[str]:
    directory = ROOT.joinpath(*importer.split("."))
    found = []
    for path in sorted(directory.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        is_package = relative.name == "__init__"
        parts = relative.parts[:-1] if is_package else relative.parts
        module = ".".join(parts)
        for name in sorted(imported_modules(path.read_text(), module, is_package)):
            if _within(name, forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize(("importer", "forbidden"), FORBIDDEN,
                         ids=[f"{a}-not-{b}" for a, b in FORBIDDEN])
def test_layer_does_not_import(importer: str, forbidden: str) -> None:
    assert ROOT.joinpath(*importer.split(".")).is_dir()
    assert violations(importer, forbidden) == []


def test_every_form_of_import_is_seen() -> None:
    source = (
        "import overlay.sim.network\n"
        "from overlay.sim import engine\n"
        "from overlay import sim\n"
        "from ..sim.report import percentile\n"
        "from . import tracker\n"
        "def later():\n"
        "    import overlay.sim\n"
    )
    names = imported_modules(source, "overlay.naming.resolver")
    hits = {n for n in names if _within(n, "overlay.sim")}
    assert hits == {"overlay.sim.network", "overlay.sim", "overlay.sim.engine",
                    "overlay.sim.report", "overlay.sim.report.percentile"}
    assert "overlay.naming.tracker" in names
    # In a package's __init__, "." is the package itself.
    assert imported_modules("from .cache import X\n", "overlay.naming", is_package=True) == {
        "overlay.naming.cache", "overlay.naming.cache.X"}
    assert not _within("overlay.simple", "overlay.sim")


def module_graph(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` and the sibling modules it imports
    (the package's ``__init__`` left out: it only re-exports)."""
    directory = ROOT.joinpath(*package.split("."))
    modules = {f"{package}.{path.stem}": path for path in directory.glob("*.py")
               if path.stem not in ("__init__", "__main__")}
    return {name: {other for other in imported_modules(path.read_text(), name)
                   if other in modules and other != name}
            for name, path in modules.items()}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cli_package_has_no_import_cycle() -> None:
    graph = module_graph("overlay.cli")
    assert {"overlay.cli.main", "overlay.cli.common", "overlay.cli.core"} <= set(graph)
    assert cycle_in(graph) is None
    # Every command group builds on common, and common on no command group.
    assert graph["overlay.cli.common"] <= {"overlay.cli.progress"}


def test_cycle_finder_finds_one() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None
