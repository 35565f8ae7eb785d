"""``sycam seeds``: the seed library with formulas, references and costs."""
from __future__ import annotations

from rich.table import Table

from .common import console


def add(sub) -> None:
    p = sub.add_parser("seeds", help="list the known methods (seed expressions)",
                       description="The seed library: every known CAM method as an expression of the language, "
                                   "with its cost and reference, then the meta-methods. Needs no model.")
    p.add_argument("--latex", action="store_true", help="show each formula in LaTeX too (loads sympy)")
    p.set_defaults(run=run)


def run(args) -> int:
    # deferred: parsing the seed library (lark) would cost every command's start-up (it needs no torch)
    from ..methods import META_METHODS, SEEDS

    if args.latex:
        from ..grammar.symbolic import latex  # deferred: sympy (0.4 s) only for --latex

    table = Table(title=f"{len(SEEDS)} seed methods", show_lines=True)
    for col in ("name", "method", "expression", "cost", "reference"):
        table.add_column(col, overflow="fold")
    for s in SEEDS.values():
        expr = s.expression + (f"\n{latex(s.tree)}" if args.latex else "")
        extra = f"\n[dim]{s.notes}[/]" if s.notes else ""
        table.add_row(s.name, s.title, expr + extra, s.cost, s.reference)
    console.print(table)
    meta = Table(title=f"{len(META_METHODS)} meta-methods (several CAM runs combined; by name in explain/eval)",
                 show_lines=True)
    for col in ("name", "method", "formula", "cost", "reference"):
        meta.add_column(col, overflow="fold")
    for m in META_METHODS.values():
        meta.add_row(m.name, m.title, m.formula + (f"\n[dim]{m.notes}[/]" if m.notes else ""), m.cost, m.reference)
    console.print(meta)
    return 0
