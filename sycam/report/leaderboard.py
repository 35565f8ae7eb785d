"""The leaderboard of a search: one row per candidate (synthesised ones, then the seeds).

Each row: the full CAM expression in its canonical form (usable as ``sycam explain --method``;
no positive factor that min-max removes, the smallest equivalent form known), the heatmap
expression the search scored, the candidate, LaTeX, size, the study's value on the working images, the held-out
mean with its 95 % interval for every objective, and the paired held-out difference to
every seed on the first objective (``vs_<seed>``, positive = better than that seed).
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from ..grammar.printer import to_text
from ..grammar.symbolic import canonical_form, latex
from ..search.heldout import Entry, signed_difference
from ..search.objectives import ObjectiveSpec
from ..search.space import SearchSpace


def forms(space: SearchSpace, entry: Entry) -> dict[str, str]:
    """Expression texts of an entry: ``expression``, the canonical form shown first (and written to
    ``best.txt``: :func:`~sycam.grammar.symbolic.canonical_form` of the smallest equivalent candidate
    the study holds, so no positive factor that min-max removes), ``searched`` (the heatmap
    expression the search scored), the candidate, and LaTeX of the canonical form."""
    heat = entry.expression(space)
    shown = []
    for tree in [heat] + ([space.heatmap(entry.smallest)] if entry.smallest is not None else []):
        try:
            shown.append(canonical_form(tree, max_size=40))
        except Exception:    # sympy may give up on large trees; the expression itself is still right
            shown.append(tree)
    best = min(shown, key=lambda e: e.size)
    return {"expression": to_text(best), "searched": to_text(heat), "candidate": entry.text, "latex": latex(best)}


def rows(entries: Sequence[Entry], seeds: Sequence[Entry], space: SearchSpace, objectives: Sequence[ObjectiveSpec],
         directions: Sequence[str]) -> list[dict[str, Any]]:
    """Leaderboard rows (``entries`` in their order, then ``seeds`` sorted by held-out score)."""
    first = next(s for s in objectives if not s.is_size)
    k0 = objectives.index(first)
    sign = 1.0 if directions[k0] == "maximize" else -1.0
    seeds_sorted = sorted(seeds, key=lambda e: -sign * _nan_low(e.held[first.text].mean, sign))
    out = []
    for rank, e in enumerate([*entries, *seeds_sorted], start=1):
        row: dict[str, Any] = {"rank": rank, "label": e.label, "source": e.source,
                               "trial": e.trial if e.trial is not None else "", **forms(space, e),
                               "size": e.candidate.size, "in_space": not e.full}
        for k, spec in enumerate(objectives):
            row[f"train_{spec.text}"] = e.train[k] if e.train else float("nan")
            iv = e.held[spec.text]
            row[f"held_{spec.text}"] = iv.mean
            row[f"held_{spec.text}_low"] = iv.low
            row[f"held_{spec.text}_high"] = iv.high
        for s in seeds_sorted:
            if s is e:
                row[f"vs_{s.label}"] = 0.0
                continue
            # the mean paired difference only: the tests and intervals are the verdict's (heldout.verdict)
            row[f"vs_{s.label}"] = float(signed_difference(e, s, first, directions[k0]).nanmean())
        out.append(row)
    return out


def _nan_low(v: float, sign: float) -> float:
    return v if v == v else -sign * float("inf")


def write_csv(path: str | Path, table: Sequence[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(table[0]) if table else ["rank"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in table:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def rich_table(table: Sequence[dict[str, Any]], objectives: Sequence[ObjectiveSpec], title: str, limit: int = 20):
    """A rich Table of the main columns (for the terminal)."""
    t = Table(title=title, show_lines=False)
    t.add_column("#", justify="right")
    t.add_column("candidate")
    t.add_column("size", justify="right")
    for spec in objectives:
        t.add_column(f"train {spec.text}", justify="right")
        t.add_column(f"held-out {spec.text} [95% CI]", justify="right")
    for r in table[:limit]:
        cells = [str(r["rank"]), f"{r['label']}: {r['candidate']}"[:70], str(r["size"])]
        for spec in objectives:
            tr = r[f"train_{spec.text}"]
            cells.append("-" if tr != tr else f"{tr:.4f}")
            m, lo, hi = r[f"held_{spec.text}"], r[f"held_{spec.text}_low"], r[f"held_{spec.text}_high"]
            cells.append("-" if m != m else f"{m:.4f} [{lo:.3f}, {hi:.3f}]")
        t.add_row(*cells)
    return t
