"""``sycam metrics``: the saliency metrics with their definition, parameters, direction and cost.

Reads :func:`sycam.metrics.describe`, which needs no torch for the built-in metrics.
"""
from __future__ import annotations

from rich.markup import escape

from .common import console


def add(sub) -> None:
    p = sub.add_parser("metrics", help="list the saliency metrics (definition, parameters, direction, cost)",
                       description="Every metric a --metric option accepts: what it computes, whether higher or "
                                   "lower is better, its parameters with their defaults (set them with "
                                   "--metric NAME:param=value,...), the model work it adds per map and image, and "
                                   "what it needs. Needs no model.")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these metrics (default: all)")
    p.set_defaults(run=run)


def run(args) -> int:
    # deferred: the catalogue (7 ms) would cost every command's start-up; only `sycam metrics` reads it
    from ..metrics.catalogue import describe, names, params_text

    rows = [describe(name) for name in (args.names or names())]
    console.print("metrics: --metric NAME or NAME:param=value,...   (↑ higher is better, ↓ lower)\n")
    for row in rows:
        arrow = "↑" if row["direction"] == "higher" else "↓"
        console.print(f"[bold]{row['name']}[/] {arrow}  {escape(row['definition'])}")
        if row["params"]:
            console.print(f"    parameters: {escape(params_text(row['params']))}")
        if row["fixed"]:
            console.print(f"    fixed:      {escape(params_text(row['fixed']))}")
        needs = f"; needs {', '.join(row['needs'])}" if row["needs"] else ""
        console.print(f"    cost:       {escape(cost_text(row))}{needs}")
    return 0


def cost_text(row: dict) -> str:
    """Model work per map and image, e.g. ``19 forwards + 2 shared``, or ``no model work``."""
    parts = [f"{row['forwards']:g} forward{'s' * (row['forwards'] != 1)}" if row["forwards"] else "",
             f"{row['shared_forwards']:g} shared" if row["shared_forwards"] else "",
             f"{row['explainer_calls']:g} explainer call{'s' * (row['explainer_calls'] != 1)}"
             if row["explainer_calls"] else "", row["note"]]
    return " + ".join(p for p in parts if p) or "no model work"
