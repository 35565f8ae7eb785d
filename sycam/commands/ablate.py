"""``sycam ablate EXPR``: the metric with each term of an expression removed, neutralised or swapped.

Writes ``ablation.csv`` / ``ablation.json`` (every variant, sorted by its effect), a bar
chart of the changes with 95 % intervals, the heatmaps of the original beside the most
harmful variants, and ``report.html`` with all of it inlined.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..report import header
from ..report.html import Page
from .common import add_model_args, check_out, console, slug
from .problem import add_data_args, check_data_arg, load_problem, read_data


def add(sub) -> None:
    p = sub.add_parser("ablate", help="which terms of an expression carry its score",
                       description="Score an expression with each sub-term removed, replaced by its neutral "
                                   "element, or each terminal swapped for its siblings.")
    p.add_argument("expression", help="expression text or seed name (e.g. the content of best.txt)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--metric", default="energy_pointing_game",
                   help="metric name[:param=value,...]; `sycam metrics` lists them")
    p.add_argument("--images", choices=("all", "held-out"), default="held-out",
                   help="score on the held-out split of a search with the same --data/--held-out/--split-seed "
                        "(images the search never saw), or on every image")
    p.add_argument("--show", type=int, default=6, help="variants shown as heatmaps (the most harmful)")
    p.add_argument("--show-images", type=int, default=4, help="images in the heatmap figure")
    p.add_argument("--out", help="output folder (default results/ablate/<expression>)")
    p.set_defaults(run=run)


def _title(row, j: int) -> str:
    if j == 0:
        return f"original ({row.score.mean:.3f}): {row.variant.text}"
    return f"{row.variant.change} at {row.variant.at}: {row.score.mean:.3f}"


def _effect(row, j: int, base) -> str:
    """What the variant does to the maps and the scores: 'same maps' (dead, for a removal), 'no score
    changed' (the maps differ, the metric does not tell them apart on these images), or ''."""
    if j == 0 or not row.scored:
        return ""
    if row.same_map:
        return "same maps (dead)" if row.variant.kind in ("removed", "neutral") else "same maps"
    return "maps differ, no score changed" if row.same_scores(base) else ""


def run(args) -> int:
    # deferred: torch, matplotlib and the search engine load here: `sycam ablate --help` starts without them
    from ..data import split
    from ..methods.seeds import resolve_method
    from ..report import figures
    from ..report.jsonfile import write_json
    from ..report.leaderboard import write_csv
    from ..search.ablate import ablate
    from ..search.evaluate import check_metric_inputs
    from ..search.objectives import ObjectiveError, parse_objective

    started = time.perf_counter()
    resolve_method(args.expression)                  # syntax / type errors before any work
    spec = parse_objective(args.metric)
    if spec.is_size:
        raise ObjectiveError("ablate scores a metric, not size")
    check_data_arg(args)
    out = check_out(args.out or Path("results") / "ablate" / slug(args.expression))     # before the model
    problem = load_problem(args, log=lambda m: console.print(m), images=read_data(args))
    batch = problem.batch
    if args.images == "held-out":
        working, batch = split(batch, args.held_out, args.split_seed)
        used = (f"the {len(batch)} held-out images of a search's split (--data {args.data}, --held-out "
                f"{args.held_out}, --split-seed {args.split_seed}; the {len(working)} working images left out)")
    else:
        used = f"all {len(batch)} images of --data {args.data} (a search's working images included)"
    metric = spec.metric()
    resources = {"model_fn": problem.model, "model": problem.model}
    check_metric_inputs(metric, batch, resources)
    console.print(f"scoring on {used}: {', '.join(batch.names)}", markup=False)
    res = ablate(args.expression, problem.model, batch, problem.layers, metric,
                 keep_maps=min(args.show_images, len(batch)), resources=resources)
    base = res.original.per_image
    rows = []
    for j, r in enumerate(res.rows):
        flat = {"zero": "0 on every image (not scored)",
                "constant": "constant on every image (not scored)"}.get(r.constant or "", "")
        rows.append({"rank": j, "kind": r.variant.kind, "change": r.variant.change or "original",
                     "at": r.variant.at, "path": ".".join(map(str, r.variant.path)), "term": r.variant.term,
                     "expression": r.variant.text, "map": flat, "score": r.score.mean, "score_low": r.score.low,
                     "score_high": r.score.high, "delta": r.delta.mean, "delta_low": r.delta.low,
                     "delta_high": r.delta.high, "images": r.score.images, "effect": _effect(r, j, base),
                     "dead": any(r is d for d in res.dead), "same_map": r.same_map,
                     "scores_unchanged": j > 0 and r.same_scores(base)})
    dead = res.dead_line()
    unchanged = res.unchanged_line()
    write_csv(out / "ablation.csv", rows)
    write_json(out / "ablation.json", {"expression": res.expression, "metric": spec.text, "images": res.images,
                                       "image_set": args.images, "image_names": res.names, "dead_terms": dead,
                                       "unchanged_scores": unchanged, "rows": rows})
    variants = [r for r in res.rows[1:] if r.scored]
    files = {}
    if variants:
        files["bars"] = figures.bar_chart(
            out / "ablation.png", [r.variant.label for r in variants], [r.delta.mean for r in variants],
            [r.delta.low for r in variants], [r.delta.high for r in variants], reference=0.0,
            title=f"{spec.text}: variant minus original (95% CI; negative = the term mattered)",
            xlabel=f"change in {spec.text}", highlight=[r.delta.high < 0 for r in variants])
    n = min(args.show_images, len(batch))
    shown = [0, *[j for j, r in enumerate(res.rows) if j and r.scored][:args.show]]   # flat maps are not drawn
    targets = [figures.class_name(c, problem.classes) for c in batch.labels[:n].tolist()]
    columns, labels = {}, {}
    for j in shown:
        r = res.rows[j]
        col = _title(r, j)
        columns[col] = res.maps[j]
        scores = [float(r.per_image[i]) if r.per_image is not None else float("nan") for i in range(len(targets))]
        labels[col] = figures.score_labels(targets, spec.text, scores)
    files["grid"] = figures.overlay_grid(
        out / "heatmaps.png", batch.images[:n].cpu(), columns, boxes=batch.boxes[:n] or None,
        row_titles=[f"{name}\ntarget: {t}" for name, t in zip(batch.names[:n], targets)], cell_labels=labels,
        title="the original and the most harmful variants (flat maps left out)", by="map")
    seconds = time.perf_counter() - started
    _html(out, args, problem, spec, res, rows, f"{dead}. {unchanged}", used, files, seconds)

    table = Table(title=escape(f"ablation of {res.expression} ({spec.text}, {res.images} {args.images} images)"))
    for col in ("change", "at", "score", "change [95% CI]", "effect"):
        table.add_column(col, justify="right" if col in ("score", "change [95% CI]") else "left", overflow="fold")
    for j, r in enumerate(res.rows):
        if not r.scored and r.variant.kind != "original":
            table.add_row(escape(r.variant.change), escape(r.variant.at), "-", f"{r.constant} map: not scored", "")
            continue
        d = r.delta
        change = "" if r.variant.kind == "original" else f"{d.mean:+.4f} [{d.low:+.3f}, {d.high:+.3f}]"
        table.add_row(escape(r.variant.change or "original"), escape(r.variant.at), f"{r.score.mean:.4f}", change,
                      escape(_effect(r, j, base)))
    console.print(table)
    console.print(escape(dead))
    console.print(escape(unchanged))
    console.print(escape(f"scored on {used}"))
    console.print(f"wrote {out / 'report.html'}, ablation.csv/json, ablation.png, heatmaps.png ({seconds:.0f} s)")
    return 0


def _html(out: Path, args, problem, spec, res, rows, dead: str, used: str, files, seconds: float) -> Path:
    page = Page(f"sycam ablate: {res.expression}")
    page.header([("expression", res.expression), ("model", problem.model_name),
                 ("weights", header.weights_text(problem.model_name, getattr(args, "weights", None))),
                 ("layer", header.layers_text(problem.layers)), ("metric", header.metric_text(spec.text)),
                 ("data", header.data_text(problem.data)), ("images scored", used),
                 ("compute time", header.seconds_text(seconds))])
    o = res.original
    page.paragraph(f"{dead}. Original {spec.text} {o.score} (95% CI) on {res.images} images.", cls="verdict")
    page.paragraph("Variants sorted by the change they cause (variant minus original, paired per image, 95 % "
                   "bootstrap interval); a negative change means the removed or swapped term helped. 'at' is the "
                   "smallest sub-expression that locates the change, the changed term in [brackets]. Variants whose "
                   "map is flat on every image (identically 0 or constant) carry no spatial information: they are "
                   "listed, not scored or drawn. A removed term is dead when every image's map stays as it was (the "
                   "min-max normalised maps differ by less than 1e-4 everywhere); that no image's score changes is "
                   "weaker (a hit/miss metric on a few images often keeps every score while the map moves) and is "
                   "shown apart, as 'maps differ, no score changed'.", cls="note")
    page.table(rows, ["rank", "kind", "change", "at", *(["map"] if any(r["map"] for r in rows) else []), "score",
                      "delta", "delta_low", "delta_high", "effect", "expression"],
               labels={"delta": "change", "delta_low": "low", "delta_high": "high", "map": "flat map"},
               code=("change", "at", "expression"), wide=True)
    page.image(files.get("bars"), "change of the metric per variant")
    page.image(files.get("grid"), "heatmaps: the original and the most harmful variants; ground-truth boxes in "
                                  "green, under each picture the target class and the image's score")
    page.details(f"the {res.images} images scored", "\n".join(res.names))
    return page.write(out / "report.html")
