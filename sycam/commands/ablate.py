"""``sycam ablate EXPR``: the metric with each term of an expression removed, neutralised or swapped.

Writes ``ablation.csv`` / ``ablation.json`` (every variant, sorted by its effect), a bar
chart of the changes with 95 % intervals, the heatmaps of the original beside the most
harmful variants, and ``report.html`` with all of it inlined.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from rich.table import Table

from ..data import split
from ..report import figures
from ..report.html import Page
from ..report.leaderboard import write_csv, write_json
from ..report.overlay import save_grid
from ..search.ablate import ablate
from ..search.evaluate import check_metric_inputs
from ..search.objectives import ObjectiveError, parse_objective
from .common import add_model_args, console
from .problem import add_data_args, check_data_arg, load_problem, read_data


def add(sub) -> None:
    p = sub.add_parser("ablate", help="which terms of an expression carry its score",
                       description="Score an expression with each sub-term removed, replaced by its neutral "
                                   "element, or each terminal swapped for its siblings.")
    p.add_argument("expression", help="expression text or seed name (e.g. the content of best.txt)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--metric", default="energy_pointing_game", help="metric name[:param=value,...]")
    p.add_argument("--images", choices=("all", "held-out"), default="all",
                   help="score on every image, or only on the held-out split of a search (--held-out, --split-seed)")
    p.add_argument("--show", type=int, default=6, help="variants shown as heatmaps (the most harmful)")
    p.add_argument("--show-images", type=int, default=4, help="images in the heatmap figure")
    p.add_argument("--out", help="output folder (default results/ablate/<expression>)")
    p.set_defaults(run=run)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "expression"


def _title(row, j: int) -> str:
    if j == 0:
        return f"original\n{row.score.mean:.3f}"
    change = row.variant.change if len(row.variant.change) <= 28 else row.variant.change[:25] + "..."
    return f"{change}\nat {'.'.join(map(str, row.variant.path))}: {row.score.mean:.3f}"


def run(args) -> int:
    from ..methods.seeds import resolve_method

    started = time.perf_counter()
    resolve_method(args.expression)                  # syntax / type errors before any work
    spec = parse_objective(args.metric)
    if spec.is_size:
        raise ObjectiveError("ablate scores a metric, not size")
    check_data_arg(args)
    problem = load_problem(args, log=lambda m: console.print(m), images=read_data(args))
    batch = problem.batch
    if args.images == "held-out":
        _, batch = split(batch, args.held_out, args.split_seed)
    metric = spec.metric()
    resources = {"model_fn": problem.model, "model": problem.model}
    check_metric_inputs(metric, batch, resources)
    res = ablate(args.expression, problem.model, batch, problem.layers, metric,
                 keep_maps=min(args.show_images, len(batch)), resources=resources)
    out = Path(args.out or Path("results") / "ablate" / _slug(args.expression))
    rows = [{"rank": j, "kind": r.variant.kind, "change": r.variant.change, "at": ".".join(map(str, r.variant.path)),
             "term": r.variant.term, "expression": r.variant.text, "score": r.score.mean, "score_low": r.score.low,
             "score_high": r.score.high, "delta": r.delta.mean, "delta_low": r.delta.low, "delta_high": r.delta.high,
             "images": r.score.images} for j, r in enumerate(res.rows)]
    write_csv(out / "ablation.csv", rows)
    write_json(out / "ablation.json", {"expression": res.expression, "metric": spec.text, "images": res.images,
                                       "rows": rows})
    variants = res.rows[1:]
    bars = figures.bar_chart(out / "ablation.png", [r.variant.label for r in variants],
                             [r.delta.mean for r in variants], [r.delta.low for r in variants],
                             [r.delta.high for r in variants], reference=0.0,
                             title=f"{spec.text}: variant minus original (95% CI; negative = the term mattered)",
                             xlabel=f"change in {spec.text}", highlight=[r.delta.high < 0 for r in variants])
    n = min(args.show_images, len(batch))
    shown = [0, *range(1, min(len(res.rows), args.show + 1))]
    grid = save_grid(out / "heatmaps.png", batch.images[:n].cpu(),
                     {_title(res.rows[j], j): res.maps[j] for j in shown},
                     row_titles=batch.names[:n], title=f"{res.expression}: original and the most harmful variants")
    page = Page(f"sycam ablate: {res.expression}")
    page.paragraph(f"{spec.text} on {res.images} images ({args.images}); original "
                   f"{res.original.score} (95% CI). Variants sorted by the change they cause; a negative change "
                   "means the removed or swapped term helped.")
    page.table(rows, ["rank", "kind", "change", "at", "score", "delta", "delta_low", "delta_high", "expression"])
    page.image(bars, "change of the metric per variant")
    page.image(grid, "heatmaps side by side")
    page.write(out / "report.html")

    table = Table(title=f"ablation of {res.expression} ({spec.text}, {res.images} images)")
    for col in ("change", "at", "score", "change [95% CI]"):
        table.add_column(col, justify="right" if col != "change" else "left")
    for r in res.rows:
        table.add_row(r.variant.change or "original", ".".join(map(str, r.variant.path)), f"{r.score.mean:.4f}",
                      "" if r.variant.kind == "original" else f"{r.delta.mean:+.4f} [{r.delta.low:+.3f}, {r.delta.high:+.3f}]")
    console.print(table)
    console.print(f"wrote {out / 'report.html'}, ablation.csv/json, ablation.png, heatmaps.png "
                  f"({time.perf_counter() - started:.0f} s)")
    return 0
