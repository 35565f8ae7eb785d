"""``sycam seeds``: the seed library with formulas, references and costs."""
from __future__ import annotations

from rich.table import Table

from ..methods import SEEDS
from .common import console


def add(sub) -> None:
    p = sub.add_parser("seeds", help="list the known methods (seed expressions)")
    p.add_argument("--latex", action="store_true", help="show each formula in LaTeX too")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..grammar.symbolic import latex

    table = Table(title=f"{len(SEEDS)} seed methods", show_lines=True)
    for col in ("name", "method", "expression", "cost", "reference"):
        table.add_column(col, overflow="fold")
    for s in SEEDS.values():
        expr = s.expression + (f"\n{latex(s.tree)}" if args.latex else "")
        extra = f"\n[dim]{s.notes}[/]" if s.notes else ""
        table.add_row(s.name, s.title, expr + extra, s.cost, s.reference)
    console.print(table)
    return 0
