"""``sycam metrics``: the saliency metrics with their direction and cost."""
from __future__ import annotations

from rich.table import Table

from ..metrics import metric_table
from .common import console


def add(sub) -> None:
    p = sub.add_parser("metrics", help="list the saliency metrics (direction, cost, what they need)")
    p.set_defaults(run=run)


def run(args) -> int:
    table = Table(title="metrics (↑ higher is better, ↓ lower)")
    table.add_column("name", no_wrap=True)          # names are what people copy: never cut them
    for col in ("better", "forwards per map", "shared forwards", "explainer calls", "needs"):
        table.add_column(col)
    for row in metric_table():
        table.add_row(row["name"], "↑" if row["direction"] == "higher" else "↓", _count(row["forwards"]),
                      _count(row["shared_forwards"]), _count(row["explainer_calls"]), ", ".join(row["needs"]))
    console.print(table)
    return 0


def _count(n) -> str:
    """0.0 and 19 print as 0 and 19; a fractional cost keeps its digits."""
    return f"{n:g}"
