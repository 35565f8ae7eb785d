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
    for col in ("name", "better", "forwards per map", "shared forwards", "explainer calls", "needs"):
        table.add_column(col)
    for row in metric_table():
        table.add_row(row["name"], "↑" if row["direction"] == "higher" else "↓", str(row["forwards"]),
                      str(row["shared_forwards"]), str(row["explainer_calls"]), ", ".join(row["needs"]))
    console.print(table)
    return 0
