"""``sycam check EXPR``: parse, type-check, simplify and typeset an expression."""
from __future__ import annotations

from .common import console


def add(sub) -> None:
    p = sub.add_parser("check", help="parse, type-check and simplify an expression (or a seed name)",
                       description="Parse an expression of the CAM language (or a seed name such as gradcam), "
                                   "check its types, and show its simplified form, LaTeX, size, the evidence "
                                   "it reads and what it costs. Needs no model.")
    p.add_argument("expression", help="expression text, e.g. 'relu(sum(mean(G, hw) * A, k))', or a seed name "
                                      "(`sycam seeds` lists them)")
    p.set_defaults(run=run)


def run(args) -> int:
    # deferred: sympy and the grammar (lark) load here: building the parser (every command's --help) stays light
    from ..evidence.terminals import TERMINALS
    from ..grammar import result_kind, to_text
    from ..grammar.ast import terminals
    from ..grammar.checker import fold_constants
    from ..grammar.symbolic import latex, simplify
    from ..methods.seeds import resolve_method

    tree, seed = resolve_method(args.expression)
    kind = result_kind(tree, TERMINALS)
    fold_constants(tree)          # constants in range, no division by a constant 0 (as the compiler does)
    simple = simplify(tree)
    names = sorted(terminals(tree))
    console.print(f"[bold]expression[/]  {to_text(tree)}" + (f"   ({seed.title})" if seed else ""))
    console.print(f"[bold]type[/]        {kind}" + (" (channel weights: heatmap = relu(sum(w * A, k)))"
                                                   if kind == "weights" else " {b, h, w}"))
    console.print(f"[bold]simplified[/]  {to_text(simple)}")
    console.print(f"[bold]latex[/]       {latex(tree)}")
    console.print(f"[bold]size[/]        {tree.size} nodes, depth {tree.depth}")
    console.print("[bold]reads[/]       " + ", ".join(f"{n} ({TERMINALS[n].doc})" for n in names
                                                       if n in TERMINALS))
    costs = sorted({TERMINALS[n].cost for n in names if n in TERMINALS} - {"none"})
    console.print("[bold]cost[/]        1 forward" + "".join(f" + {c}" for c in costs))
    return 0
