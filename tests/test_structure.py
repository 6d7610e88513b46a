"""The package's structure: the CLI on the top floor (nothing imports it) and no import cycle in thkit.

Every ``import`` statement counts, module-level and inside functions (a lazy import still makes a cycle:
``cli -> demo -> evaluate -> cli`` was one).  A module importing its own parent package is not an edge (importing
``thkit.convert.fomm`` runs ``thkit/convert/__init__.py`` first, whoever asks).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "thkit"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if "recipes" not in p.relative_to(PKG).parts}


def import_graph() -> dict[str, set[str]]:
    """``module -> thkit modules it imports`` (``from a import b`` is ``a.b`` when that is a module)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):
                    graph[name].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_imports():
    g = import_graph()
    assert "thkit.api" in g["thkit.cli.build"]  # a lazy import inside a function counts
    assert "thkit.convert.base" in g["thkit.convert.fomm"]
    assert "thkit.convert" not in g["thkit.convert.fomm"]  # the parent package is not an edge


def test_no_import_cycle():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_outside_the_cli_imports_it():
    g = import_graph()
    users = sorted(m for m, deps in g.items() if not m.startswith(("thkit.cli", "thkit.__main__"))
                   and any(d == "thkit.cli" or d.startswith("thkit.cli.") for d in deps))
    assert not users, f"library modules import the CLI: {users}"


def test_python_dash_m_thkit():
    r = subprocess.run([sys.executable, "-m", "thkit", "list", "converter"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "fomm" in r.stdout and "smac" in r.stdout and "tpsmm" in r.stdout
