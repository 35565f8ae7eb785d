"""``sycam check EXPR``: parse, type-check, simplify and typeset an expression."""
from __future__ import annotations

from ..grammar import DEFAULT_TERMINALS, result_kind, to_text
from ..grammar.ast import terminals
from ..grammar.symbolic import latex, simplify
from ..kernels.compiler import compile_expression
from ..methods.seeds import resolve_method
from .common import console


def add(sub) -> None:
    p = sub.add_parser("check", help="parse, type-check and simplify an expression (or a seed name)")
    p.add_argument("expression")
    p.set_defaults(run=run)


def run(args) -> int:
    tree, seed = resolve_method(args.expression)
    kind = result_kind(tree)
    compile_expression(tree, DEFAULT_TERMINALS)   # constants: in range, no division by a constant 0
    simple = simplify(tree)
    names = sorted(terminals(tree))
    console.print(f"[bold]expression[/]  {to_text(tree)}" + (f"   ({seed.title})" if seed else ""))
    console.print(f"[bold]type[/]        {kind}" + (" (channel weights: heatmap = relu(sum(w * A, k)))"
                                                   if kind == "weights" else " {b, h, w}"))
    console.print(f"[bold]simplified[/]  {to_text(simple)}")
    console.print(f"[bold]latex[/]       {latex(tree)}")
    console.print(f"[bold]size[/]        {tree.size} nodes, depth {tree.depth}")
    console.print(f"[bold]reads[/]       " + ", ".join(f"{n} ({DEFAULT_TERMINALS[n].doc})" for n in names
                                                       if n in DEFAULT_TERMINALS))
    costs = sorted({DEFAULT_TERMINALS[n].cost for n in names if n in DEFAULT_TERMINALS} - {"none"})
    console.print(f"[bold]cost[/]        1 forward" + "".join(f" + {c}" for c in costs))
    return 0
