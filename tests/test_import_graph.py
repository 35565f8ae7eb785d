"""The import graph of sycam: no cycles, no upward imports between layers, no imports of the facade.

Layers, lowest first (a module may import its own layer and those below):

    base (errors, defaults, batching) < grammar < kernels < models < data < evidence < metrics
    < methods < evaluation < search < report < commands < cli

Metrics sit below the methods: a metric takes the explainer it re-runs as a callable, while
MetaCAM's adaptive thresholding scores its candidates with a metric looked up by name.
``sycam.api`` and ``sycam/__init__`` are the public facades on top: nothing inside the package
imports ``sycam.api``. The graph is read with ``ast``: every ``import`` statement, module-level and
function-local (an import moved into a function to dodge a cycle is still a cycle), relative ones
resolved.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sycam"

LAYERS = ("base", "grammar", "kernels", "models", "data", "evidence", "metrics", "methods", "evaluation", "search",
          "report", "commands", "cli")
#: top-level modules that are not a package of their own -> their layer
MODULE_LAYERS = {"errors": "base", "defaults": "base", "batching": "base", "__version__": "base"}
FACADES = ("sycam", "sycam.api")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The layer of a sycam module, None for the facades."""
    if module in FACADES:
        return None
    top = module.split(".")[1]
    return MODULE_LAYERS.get(top, top)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(importer, imported sycam module, line) for every import statement in sycam.

    ``from package import name`` counts as an import of ``package.name`` when that is a module.
    """
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != module:
                    edges.append((module, target, node.lineno))
    return edges


def sycam_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module, sorted: every module in one
    imports, directly or not, every other."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward(edges, modules) -> list[str]:
    """'file:line: importer (layer) -> imported (layer)' for every import of a higher layer."""
    out = []
    for a, b, line in edges:
        la, lb = layer(a), layer(b)
        if la is not None and lb is not None and LAYERS.index(lb) > LAYERS.index(la):
            out.append(f"{modules[a].relative_to(PACKAGE.parent)}:{line}: {a} ({la}) -> {b} ({lb})")
    return out


def test_the_graph_builder_sees_imports():
    modules = sycam_modules()
    pairs = {(a, b) for a, b, _ in imports(modules)}
    assert ("sycam.kernels.compiler", "sycam.grammar.ast") in pairs          # from ..grammar.ast import ...
    assert ("sycam.methods", "sycam.methods.seeds") in pairs                 # from .seeds import ... in __init__
    assert ("sycam.commands.explain", "sycam.methods.build") in pairs       # inside run()
    assert cycles([("a", "b", 1), ("b", "c", 1), ("c", "a", 1), ("c", "d", 1)]) == [["a", "b", "c"]]
    assert upward([("sycam.grammar.ast", "sycam.kernels.compiler", 7)], modules) == [
        "sycam/grammar/ast.py:7: sycam.grammar.ast (grammar) -> sycam.kernels.compiler (kernels)"]
    assert all(layer(m) in LAYERS for m in modules if m not in FACADES)


def test_no_import_cycles():
    found = cycles(imports(sycam_modules()))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_upward_imports():
    modules = sycam_modules()
    found = upward(imports(modules), modules)
    assert not found, "imports of a higher layer:\n" + "\n".join(found)


def test_nothing_inside_imports_the_facade():
    modules = sycam_modules()
    found = [f"{modules[a].relative_to(PACKAGE.parent)}:{line}: {a}" for a, b, line in imports(modules)
             if b == "sycam.api" and a not in FACADES]
    assert not found, "imports of sycam.api from inside the package:\n" + "\n".join(found)
