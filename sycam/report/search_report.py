"""The report of a search: leaderboard files, pictures, ``best.txt`` and one self-contained HTML page.

Everything is scored on the held-out images (never used by the search). Files in ``out``::

    leaderboard.csv / leaderboard.json   candidates and every seed, held-out scores with 95 % CIs
    best.txt                             the selected CAM expression: sycam explain --method "$(cat best.txt)"
    command.txt                          the command that made the study
    report.html                          everything above, with the pictures inlined
    leaderboard.png, overlays.png, pareto.png (several objectives), best_latex.png
"""
from __future__ import annotations

import json
import math
import shlex
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..data.batch import Batch
from ..evidence.sets import EvidenceSet
from ..grammar.printer import to_text
from ..search import baselines, heldout
from ..search.evaluate import Evaluator
from ..search.ledger import info, is_evaluation
from ..search.objectives import ObjectiveSpec
from ..search.selection import parse_tolerance
from ..search.space import SearchSpace
from . import figures, header, leaderboard
from .html import Page, esc
from .jsonfile import write_json


@dataclass
class SearchReport:
    out: Path
    best: heldout.Entry | None
    verdict: heldout.Verdict
    table: list[dict[str, Any]]
    files: dict[str, Path]


def study_counts(study: optuna.Study) -> dict[str, Any]:
    """Trials by source and outcome (evaluations, duplicates, pruned, invalid, failed)."""
    c: Counter = Counter()
    for t in study.get_trials(deepcopy=False):
        i = info(t)
        if "duplicate_of" in i:
            c["duplicates"] += 1
        elif is_evaluation(t):
            c["evaluated"] += 1
            c[f"evaluated_{i.get('source', '?')}"] += 1
            if "invalid" in i:
                c["invalid"] += 1
            elif t.state == optuna.trial.TrialState.PRUNED:
                c["pruned_on_few_images"] += 1
        elif t.state == optuna.trial.TrialState.FAIL:
            c["failed_retried"] += 1
        else:
            c[t.state.name.lower()] += 1
        c["trials"] += 1
    return dict(c)


def write_search_report(out: str | Path, *, study: optuna.Study, space: SearchSpace,
                        objectives: Sequence[ObjectiveSpec], held_out: EvidenceSet, held_batch: Batch,
                        resources: Mapping[str, Any] | None = None, command: Sequence[str] = (),
                        settings: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None,
                        top: int = 10, grid_images: int = 6, classes: Sequence[str] | None = None,
                        tolerance: str | float = heldout.SE, model: Any = None, layers: Any = None,
                        seed_cost_cap: float | None = None) -> SearchReport:
    """Score the study's selected and best candidates and every seed on the held-out images and write
    the report; ``classes``: class names for the overlay labels (default the class indices);
    ``tolerance``: the selection's (:mod:`sycam.search.selection`); ``model``, ``layers``: to
    explain the seeds outside the search space within ``seed_cost_cap`` model passes per image
    (:mod:`sycam.search.baselines`; without a model they are listed as left out)."""
    started = time.perf_counter()
    tolerance = parse_tolerance(tolerance)
    cap = baselines.check_cap(seed_cost_cap)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    directions = [s.direction for s in objectives]
    first = next(s for s in objectives if not s.is_size)
    k0 = list(objectives).index(first)
    tops, seeds, front = heldout.select(study, space, directions, top, tolerance=tolerance, objective=k0)
    extra = [e for e in front if e.trial not in {t.trial for t in tops}]
    heldout.score([*tops, *extra, *seeds], objectives, held_out, space, resources)
    also = [a for t in study.get_trials(deepcopy=False) if info(t).get("source") == "seed"
            for a in info(t).get("also", [])]
    plan = baselines.plan([*(e.label for e in seeds), *also], cap, *_layer_sizes(held_out))
    if model is None:
        plan.left_out.update({k: "no model given to the report" for k in plan.extra})
        plan.extra.clear()
    seeds = [*seeds, *baselines.score_extra(plan, model, layers, held_batch, objectives, resources)]
    best = tops[0] if tops else None
    table = leaderboard.rows([*tops, *extra], seeds, space, objectives, directions)
    v = heldout.verdict(best, seeds, first, directions[k0],
                        expression=table[0]["expression"] if best is not None else None)
    files: dict[str, Path] = {}
    files["csv"] = leaderboard.write_csv(out / "leaderboard.csv", table)
    sign = 1.0 if directions[k0] == "maximize" else -1.0
    chosen = best or (max(seeds, key=lambda e: sign * e.held[first.text].mean) if seeds else None)
    if chosen is not None:
        files["best"] = out / "best.txt"
        row = next((r for r in table if r["label"] == chosen.label), None)
        files["best"].write_text((row["expression"] if row else to_text(space.heatmap(chosen.candidate))) + "\n")
    if command:
        files["command"] = out / "command.txt"
        files["command"].write_text(shlex.join(command) + "\n")
    rule = ("the smallest candidate whose working score is within " +
            ("one standard error (of the best's per-image scores)" if tolerance == heldout.SE else f"{tolerance:g}")
            + " of the best (--tolerance)")
    counts = study_counts(study)
    payload = {"selection": rule, "seeds": {**plan.as_dict(), "text": plan.text()},
               "study": study.study_name, "objectives": [s.text for s in objectives],
               "directions": directions,
               "verdict": v.as_dict(), "best": table[0] if best is not None else None,
               "comparisons": [c.as_dict() for c in v.comparisons],
               "pareto_front": [r["label"] for r in table if any(r["label"] == e.label for e in front)],
               "leaderboard": table, "counts": counts, "settings": dict(settings or {}), "run": dict(run or {}),
               "command": shlex.join(command) if command else ""}
    files["json"] = write_json(out / "leaderboard.json", payload)

    # pictures
    labels = [f"{r['label']}: {r['candidate']}" for r in table]
    files["bars"] = figures.bar_chart(
        out / "leaderboard.png", labels, [r[f"held_{first.text}"] for r in table],
        [r[f"held_{first.text}_low"] for r in table], [r[f"held_{first.text}_high"] for r in table],
        title=f"held-out {first.text} (95% CI), {len(held_out)} images; seeds in orange",
        xlabel=first.text, highlight=[r["source"] == "seed" for r in table])
    shown = [e for e in tops[:3]]
    strongest = next((s for s in seeds if s.label == v.strongest_seed), seeds[0] if seeds else None)
    if strongest is not None:
        shown.append(strongest)
    if shown:
        n = min(grid_images, len(held_out))
        ev = Evaluator(held_out, space, first.metric(), **dict(resources or {}))
        scored = [e for e in shown if e.maps is None]
        from_evidence = iter(ev.maps([e.candidate for e in scored], list(range(n))).full().cpu() if scored else [])
        maps = [e.maps[:n] if e.maps is not None else next(from_evidence) for e in shown]
        names = list(held_batch.names[:n]) or [f"image {i}" for i in range(n)]
        targets = [figures.class_name(int(c), classes) for c in held_batch.labels[:n].tolist()]
        columns, labels = {}, {}
        for j, e in enumerate(shown):
            what = "strongest seed" if e.is_seed else "candidate"
            col = f"{e.label} ({what}, mean {figures.score_text(e.held[first.text].mean)}): {e.text}"
            columns[col] = maps[j]
            scores = e.per_image.get(first.text)
            labels[col] = figures.score_labels(targets, first.text,
                                               scores.tolist() if scores is not None else [math.nan] * n)
        files["overlays"] = figures.overlay_grid(
            out / "overlays.png", held_batch.images[:n].cpu(), columns, boxes=held_batch.boxes[:n] or None,
            row_titles=[f"{name}\ntarget: {t}" for name, t in zip(names, targets)], cell_labels=labels,
            title=f"held-out images: the best candidates and the strongest seed ({first.text} per image)")
    if len(objectives) > 1:
        names = (objectives[0].text, objectives[1].text)
        pts = [(t.values[0], t.values[1]) for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE and t.values and "duplicate_of" not in info(t)]
        fr = [(e.train[0], e.train[1]) for e in front if e.train]
        sd = {e.label: (e.train[0], e.train[1]) for e in seeds if e.train}
        files["pareto"] = figures.pareto_plot(out / "pareto.png", pts, fr, sd, names,
                                              title="working images: every trial, the Pareto front, the seeds")
    if best is not None:
        tex = figures.latex_png(out / "best_latex.png", table[0]["latex"])
        if tex is not None:
            files["latex"] = tex

    report_seconds = time.perf_counter() - started
    files["html"] = _html(out / "report.html", study, space, objectives, table, v, best, files, counts, command,
                          settings, run, held_out, front, report_seconds, rule, plan.text())
    return SearchReport(out, best, v, table, files)


def _layer_sizes(evidence: EvidenceSet) -> tuple[int, int]:
    """(channels K, positions HW) of the largest layer's activations (in the b s v k h w layout)."""
    shapes = [terms["A"].shape for terms in evidence.layers.values() if "A" in terms]
    return max((int(t[3]) for t in shapes), default=1), max((int(t[4] * t[5]) for t in shapes), default=1)


def header_rows(study_name: str, settings: Mapping[str, Any] | None, run: Mapping[str, Any] | None,
                objectives: Sequence[ObjectiveSpec], report_seconds: float | None = None) -> list[tuple[str, str]]:
    """The report's header: model, weights, layer(s), metric(s), data and split, compute time."""
    settings, run = dict(settings or {}), dict(run or {})
    model = str(settings.get("model", "?"))
    rows = [("study", study_name), ("model", model),
            ("weights", header.weights_text(model, settings.get("weights"))),
            ("layer", header.layers_text(settings.get("layers")))]
    for k, spec in enumerate(objectives):
        rows.append(("metric" if len(objectives) == 1 else f"objective {k + 1}", header.metric_text(spec.text)))
    rows.append(("data", header.data_text(settings.get("data"))))
    rows.append(("split", header.split_text(settings.get("split"))))
    t = []
    if "search_seconds" in run:
        t.append(f"search {header.seconds_text(run['search_seconds'])}"
                 + (f" ({run['evaluated_this_run']} candidates scored)" if "evaluated_this_run" in run else ""))
    if "total_seconds" in run:
        t.append(f"model, data, evidence and search {header.seconds_text(run['total_seconds'])} in all")
    if report_seconds is not None:
        t.append(f"this report {header.seconds_text(report_seconds)}")
    if "threads" in run:
        t.append(f"{run['threads']} CPU thread(s)")
    rows.append(("compute time", ("this run: " + "; ".join(t)) if t else ""))
    return rows


def _html(path: Path, study, space: SearchSpace, objectives, table, v: heldout.Verdict, best, files, counts, command,
          settings, run, held_out, front, report_seconds: float | None = None, rule: str = "",
          seeds_text: str = "") -> Path:
    page = Page(f"sycam search: {study.study_name}")
    page.header(header_rows(study.study_name, settings, run, objectives, report_seconds))
    page.paragraph(v.message, cls="verdict " + ("good" if v.beats_every_seed else "bad"))
    weight_space = space.result != "heatmap"
    cand = "candidate w (weight map)" if space.result == "weight_maps" else \
        "candidate w (channel weights)" if space.result == "weights" else "candidate (heatmap)"
    if best is not None:
        r = table[0]
        page.heading("Selected expression")
        page.raw(f"<p>Selected on the working images (trial {esc(r['label'])}: {esc(rule)}), scored here on "
                 f"{len(held_out)} held-out images.</p>"
                 f"<p><b>CAM</b> <code>{esc(r['expression'])}</code> (canonical: no positive factor that the "
                 f"min-max normalisation removes; the smallest equivalent form known)<br><b>as searched</b> "
                 f"<code>{esc(r['searched'])}</code><br><b>{esc(cand)}</b> <code>{esc(r['candidate'])}</code>"
                 f"<br><b>size</b> {r['size']}</p>")
        page.image(files.get("latex"), "LaTeX (mathtext rendering)")
        page.code(r["latex"])
        page.raw('<p>Use it: <code>sycam explain --method "$(cat best.txt)"</code></p>')
    page.heading("Against every seed (held-out, paired: 95% bootstrap CI, sign-flip p, Holm over the seeds)")
    page.paragraph(seeds_text, cls="note")
    page.table([{"seed": c.other, "objective": c.objective, "difference": c.diff.mean, "low": c.diff.low,
                 "high": c.diff.high, "images": c.diff.images, "p": c.paired.p, "p (Holm)": c.paired.p_holm,
                 "verdict": c.verdict}
                for c in v.comparisons])
    page.heading("Leaderboard")
    if weight_space:
        page.paragraph(f"The {cand.split(' (')[0]} column is in weight-map space: the search builds w and the CAM is "
                       "heatmap = relu(sum(w * A, k)), shown in its canonical form in the 'CAM (canonical)' column "
                       "(so HiResCAM is the candidate G). Working = the images the search saw; held-out = the "
                       "others, with a 95 % bootstrap interval.", cls="note")
    cols = ["rank", "label", "source", "expression", "candidate", "size"]
    labels = {"candidate": cand, "expression": "CAM (canonical)"}
    rows = []
    for r in table:
        row = dict(r)
        for s in objectives:
            m, lo, hi = r[f"held_{s.text}"], r[f"held_{s.text}_low"], r[f"held_{s.text}_high"]
            row[f"held-out {s.text}"] = "-" if m != m else f"{m:.4f} [{lo:.3f}, {hi:.3f}]"
        rows.append(row)
    for s in objectives:
        cols += [f"train_{s.text}", f"held-out {s.text}"]
        labels[f"train_{s.text}"] = f"working {s.text}"
        labels[f"held-out {s.text}"] = f"held-out {s.text} [95% CI]"
    page.table(rows, cols, labels=labels, code=("expression", "candidate"), wide=True)
    page.image(files.get("bars"), "held-out score of every candidate and seed")
    page.image(files.get("overlays"), "overlays on held-out images: ground-truth boxes in green; under each "
                                      "picture the target class and the image's score")
    if "pareto" in files:
        page.heading("Pareto front (working images)")
        page.paragraph(", ".join(e.label for e in front) or "(empty)")
        page.image(files.get("pareto"))
    page.heading("Run")
    page.table([{"what": k, "count": v_} for k, v_ in sorted(counts.items())])
    if run:
        page.details("this run (raw)", "\n".join(f"{k}: {val}" for k, val in run.items()))
    if command:
        page.heading("Command")
        page.code(shlex.join(command))
    if settings:
        page.details("study settings (raw)", json.dumps(dict(settings), indent=1, default=str))
    return page.write(path)
