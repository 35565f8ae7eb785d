"""``sycam eval``: methods x metrics on a benchmark, as a table, CSV/JSON and pictures."""
from __future__ import annotations

import csv
import json
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from rich.progress import Progress
from rich.table import Table

from ..errors import DataError
from ..report import header
from ..report.html import Page
from ..report.jsonfile import json_text
from .common import add_model_args, add_reshape_arg, check_out, check_reshape, console, load_bundle
from .problem import check_data_arg, read_data
from .targets import add_smoothing_args

DEFAULT_METRICS = ["pointing_game", "energy_pointing_game"]
BASELINES = ("center", "random")    # = sycam.evaluation.BASELINES (which loads torch; tests/test_startup.py checks)


def add(sub) -> None:
    p = sub.add_parser("eval", help="score methods with saliency metrics on a benchmark",
                       description="Every method x metric, mean and 95 % interval over images.")
    p.add_argument("methods", nargs="+", help="seed names or expressions; 'all' = every seed, "
                                              "'gradient' = the seeds that need one backward")
    add_model_args(p)
    add_reshape_arg(p)
    p.add_argument("--metric", action="append", dest="metrics",
                   help=f"metric name[:param=value,...], repeat for several (default: {' '.join(DEFAULT_METRICS)}); "
                        "`sycam metrics` lists them")
    p.add_argument("--data", default="default",
                   help="default (composites + real photos; needs `sycam data fetch`), fallback (bundled photos), "
                        "toy (with --model toy) or a folder with annotations")
    p.add_argument("--size", type=int, default=64, help="rows of the default benchmark")
    p.add_argument("--baseline", action="append", dest="baselines", choices=BASELINES,
                   help="score a baseline map too, repeat for both")
    p.add_argument("--chunk", type=int, default=None, help="images per evidence capture (default: 4 on CPU, 32 on GPU)")
    p.add_argument("--options", default="{}", help="evidence options as JSON, e.g. '{\"max_batch\": 64}'")
    add_smoothing_args(p)
    p.add_argument("--out", default="results/eval", help="output folder (report.html, results.csv/json, pictures)")
    p.set_defaults(run=run)


def expand_methods(names: list[str]) -> list[str]:
    from ..methods import SEEDS  # deferred: parsing the seed library (lark) would cost every command's start-up

    out: list[str] = []
    for name in names:
        if name == "all":
            out += list(SEEDS)
        elif name == "gradient":
            out += [s for s, seed in SEEDS.items() if "backward to the layer" in seed.cost or s == "cam"]
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def load_data(args, bundle, images=None):
    """The benchmark as a batch; ``images``: the folder already read by :func:`read_data`."""
    from ..data import default_benchmark, fallback_benchmark, to_batch  # deferred: keeps start-up torch-free

    if args.data == "toy":
        from ..search.toy import toy_problem  # deferred: keeps start-up torch-free

        return toy_problem(args.size)[1]
    if args.data == "default":
        return default_benchmark(args.size, bundle=bundle)
    if args.data == "fallback":
        return fallback_benchmark(bundle)
    images = images if images is not None else read_data(args)
    if images.skipped:
        console.print(f"[yellow]{len(images.skipped)} images skipped[/]: " +
                      "; ".join(f"{f} ({why})" for f, why in images.skipped[:5]))
    return to_batch(images.samples, bundle.preprocess)


def _toy_bundle(args):
    """The toy CNN as a bundle (``--model toy --data toy``: smoke tests and examples)."""
    from ..search.toy import toy_problem  # deferred: keeps start-up torch-free

    if args.data != "toy" or args.model != "toy":
        raise DataError("the toy model only explains toy data: use --model toy --data toy")
    model = toy_problem(2)[0].to(args.device)
    return SimpleNamespace(model=model, preprocess=None, default_layer="feat", classes=[str(i) for i in range(5)])


def run(args) -> int:
    # deferred: torch, the metrics and the CAM engine load here: `sycam eval --help` starts without them
    from ..evaluation import evaluate, resolve_metrics
    from ..methods.build import make_cam

    check_data_arg(args)
    images = read_data(args)                  # user images before the model
    check_out(args.out)                       # and the output folder: not a traceback after all the computing
    check_reshape(args.reshape)
    bundle = _toy_bundle(args) if "toy" in (args.data, args.model) else load_bundle(args)
    methods = expand_methods(args.methods)
    layers = args.layers or [bundle.default_layer]
    options = json.loads(args.options)
    cams = {m: make_cam(m, bundle.model, layers, options=options, preprocess=bundle.preprocess,
                        eigen_smooth=args.eigen_smooth, aug_smooth=args.aug_smooth, reshape=args.reshape)
            for m in methods}   # errors before any work
    names = args.metrics or list(DEFAULT_METRICS)
    metrics = resolve_metrics(names)
    batch = load_data(args, bundle, images).to(args.device)
    if "pointing_game" in metrics and batch.other_masks is not None and bool(batch.other_masks.any()) \
            and "pointing_other" not in metrics:
        metrics.update(resolve_metrics(["pointing_other"]))
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{len(methods)} methods x {len(metrics)} metrics", total=len(batch))
        result = evaluate(cams, metrics, batch, bundle.model, baselines=args.baselines or (), chunk=args.chunk,
                          progress=lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    paired = _paired(result, metrics)
    for row in rows:                     # each method against the best one, per metric
        for name, (best, comps) in paired.items():
            c = comps.get(row["method"])
            row[f"{name}_vs_best"] = 0.0 if row["method"] == best else (c.diff.mean if c else float("nan"))
            row[f"{name}_vs_best_low"] = c.diff.low if c else float("nan")
            row[f"{name}_vs_best_high"] = c.diff.high if c else float("nan")
            row[f"{name}_vs_best_p_holm"] = c.p_holm if c else float("nan")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    first = next(iter(metrics))
    verdict = _verdict(first, metrics[first], rows, paired[first])
    per_image = {metric: {m: [None if v != v else round(float(v), 5) for v in s.tolist()]
                          for m, s in by.items()} for metric, by in result.scores.items()}
    command = " ".join(shlex.quote(a) for a in ["sycam", *sys.argv[1:]])
    (out / "results.json").write_text(json_text({
        "command": command, "model": args.model, "weights": args.weights, "layers": layers, "data": args.data,
        "images": len(batch), "seconds": round(seconds, 2),
        "methods": {m: getattr(cams[m], "text", m) for m in methods},
        "metrics": {n: m.direction.value for n, m in metrics.items()},
        "verdict": verdict, "summary": rows,
        "paired": {n: {"best": best, "comparisons": [c.as_dict() for c in comps.values()]}
                   for n, (best, comps) in paired.items()},
        "per_image": per_image, "names": result.names}))
    files = {"curves": _curves(result, out), "grid": _grid(cams, batch, out, bundle, result, first)}
    _report(out, args, layers, metrics, rows, paired, verdict, files, len(batch), seconds, command)

    table = Table(title=f"{len(batch)} images, {args.data} benchmark, {seconds:.1f} s")
    table.add_column("method")
    for name, metric in metrics.items():
        table.add_column(f"{name} ({'↑' if metric.direction.value == 'higher' else '↓'})", justify="right")
    for row in rows:
        cells = []
        for name in metrics:
            cell = f"{row[name]:.3f} [{row[name + '_low']:.3f}, {row[name + '_high']:.3f}]"
            if f"{name}_class_mean" in row:
                cell += f" cls {row[name + '_class_mean']:.3f}"
            cells.append(cell)
        table.add_row(row["method"], *cells)
    console.print(table)
    diffs = Table(title="paired differences: method - best, per image (95% bootstrap CI; sign-flip permutation p, "
                        "Holm-corrected)")
    for col in ("metric", "method", "best", "difference [CI]", "p (Holm)", "verdict"):
        diffs.add_column(col, justify="right" if col in ("difference [CI]", "p (Holm)") else "left", overflow="fold")
    for name, (best, comps) in paired.items():
        for c in comps.values():
            diffs.add_row(name, c.method, best, f"{c.diff.mean:+.4f} [{c.diff.low:+.3f}, {c.diff.high:+.3f}]",
                          _p(c.p_holm), _judge(c))
    if diffs.row_count:
        console.print(diffs)
    console.print(verdict)
    console.print(f"wrote {out / 'report.html'}, {out / 'results.csv'}, {out / 'results.json'}, pictures in {out}")
    return 0


def _p(p: float) -> str:
    return "-" if p != p else ("<\u00a00.001" if p < 0.001 else f"{p:.3f}")


def _judge(c) -> str:
    """Is ``c.method`` worse than the best one (Holm-corrected), in words."""
    from ..search.heldout import TOO_FEW  # deferred: keeps start-up torch-free

    if c.diff.images == 0:
        return "no common image"
    if not c.conclusive:
        return TOO_FEW
    if not c.significant():
        return "not significantly different"
    return "significantly worse"


def _paired(result, metrics) -> dict:
    """metric -> (best method, {method: Paired}) from the per-image scores (NaN images left out)."""
    from ..search.heldout import against_best  # deferred: keeps start-up torch-free

    out = {}
    for name, metric in metrics.items():
        per = {m: result.scores[name][m] for m in result.methods}
        best, comps = against_best(per, metric.direction.value == "higher")
        out[name] = (best, {c.method: c for c in comps})
    return out


def _verdict(name: str, metric, rows, paired) -> str:
    best, comps = paired
    if best is None:
        return f"no method has a defined {name} on these images"
    row = next(r for r in rows if r["method"] == best)
    from ..search.heldout import TOO_FEW  # deferred: keeps start-up torch-free

    worse = [m for m, c in comps.items() if c.significant()]
    same = [m for m, c in comps.items() if c.conclusive and not c.significant()]
    few = [m for m, c in comps.items() if not c.conclusive]
    text = (f"{best} scores best on {name} ({metric.direction.value} is better): {row[name]:.3f} "
            f"[{row[name + '_low']:.3f}, {row[name + '_high']:.3f}] on {row[name + '_images']} images")
    if not comps:
        return text + "."
    if len(few) == len(comps):
        return text + f"; against the other methods: {TOO_FEW}, so no difference is claimed significant."
    text += (f"; paired per image (sign-flip permutation test, Holm-corrected over {len(comps)} comparisons) it is "
             f"significantly better than {len(worse)} of {len(comps)} other methods")
    if worse:
        text += f" ({', '.join(worse)})"
    if same:
        text += f"; not significantly different from {', '.join(same)}"
    if few:
        text += f"; against {', '.join(few)}: {TOO_FEW}"
    return text + "."


def _report(out: Path, args, layers, metrics, rows, paired, verdict: str, files, images: int, seconds: float,
            command: str) -> Path:
    """report.html: header, verdict, summary, paired differences, pictures (one self-contained file)."""
    page = Page(f"sycam eval: {len(rows)} methods x {len(metrics)} metrics")
    kind = args.data if args.data in ("default", "fallback", "toy") else "folder"
    page.header([("model", args.model), ("weights", header.weights_text(args.model, args.weights)),
                 ("layer", header.layers_text(layers)),
                 *[("metric", header.metric_text(n)) for n in metrics],
                 ("data", header.data_text({"kind": kind, "images": images, "size": args.size, "seed": 0,
                                            "path": args.data})),
                 ("compute time", f"{header.seconds_text(seconds)} (maps and metrics)"),
                 ("command", command)])
    page.paragraph(verdict, cls="verdict")
    page.heading("Scores (mean over images, 95% interval)")
    table, cols = [], ["method"]
    for name in metrics:
        cols.append(name)
    for r in rows:
        row = {"method": r["method"]}
        for name in metrics:
            cell = "-" if r[name] != r[name] else f"{r[name]:.4f} [{r[name + '_low']:.3f}, {r[name + '_high']:.3f}]"
            if f"{name}_class_mean" in r:
                cell += f"; class mean {r[name + '_class_mean']:.3f}"
            row[name] = cell + f" ({r[name + '_images']} images)"
        table.append(row)
    labels = {n: f"{n} ({m.direction.value} is better)" for n, m in metrics.items()}
    page.table(table, cols, labels=labels, code=("method",), wide=True)
    page.heading("Paired differences against the best method")
    page.paragraph("Per image, each method's score minus the best method's score on the same image; the mean "
                   "with a percentile-bootstrap interval and the p-value of a sign-flip permutation test of the mean "
                   "difference (exact up to 16 images). With fewer than 10 paired images nothing is called "
                   "significant. Where several methods are compared with the best one, the "
                   "p-values are Holm-corrected and each interval is taken at Holm's step level (the j-th smallest "
                   "p-value's at 1 - 0.05 / (m - j + 1)), so 'significantly worse' holds for all of them at once.",
                   cls="note")
    diff_rows = []
    for name, (best, comps) in paired.items():
        for c in comps.values():
            diff_rows.append({"metric": name, "method": c.method, "best": best, "difference": c.diff.mean,
                              "low": c.diff.low, "high": c.diff.high, "interval": f"{c.level:.1%}",
                              "images": c.diff.images, "p": _p(c.p), "p (Holm)": _p(c.p_holm),
                              "verdict": _judge(c)})
    page.table(diff_rows, code=("method", "best"), wide=True)
    page.image(files.get("grid"), "overlays: ground-truth boxes in green; under each picture the target class and "
                                  "the image's score")
    page.image(files.get("curves"), "deletion / insertion curves (mean over images)")
    return page.write(out / "report.html")


def _curves(result, out: Path) -> Path | None:
    if not result.curves:
        return None
    # deferred: keeps start-up torch-free; matplotlib costs 0.1 s, only the curves need it
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after use("Agg"), which must come first

    fig, axes = plt.subplots(1, len(result.curves), figsize=(5 * len(result.curves), 4), squeeze=False)
    for ax, (name, by_method) in zip(axes[0], result.curves.items()):
        frac = result.fractions[name].cpu()
        colours = plt.get_cmap("tab20")
        for i, (method, curve) in enumerate(by_method.items()):
            auc = float(torch.trapezoid(curve.cpu(), frac))
            baseline = method in BASELINES                  # dashed grey: not a method
            ax.plot(frac, curve.cpu(), label=f"{method} ({auc:.3f})", color="0.4" if baseline else colours(i % 20),
                    linestyle="--" if baseline else "-")
        ax.set_title(f"{name} (mean over images)")
        ax.set_xlabel("fraction of pixels " + ("removed" if name == "deletion" else "inserted"))
        ax.set_ylabel("target probability")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    return out / "curves.png"


def _grid(cams, batch, out: Path, bundle, result, metric: str, n: int = 6) -> Path:
    """grid.png: the first ``n`` images x every method (methods as columns, or as rows where there are
    more methods than images), ground-truth boxes drawn, full image and class names, the target
    class and the image's ``metric`` score under every overlay."""
    from ..methods.cam import explain_many  # deferred: keeps start-up torch-free
    from ..report.figures import class_name, overlay_grid, score_labels  # deferred: keeps start-up torch-free

    n = min(n, len(batch))
    part = batch[slice(0, n)]
    results = explain_many(cams, part.x, part.labels)
    names = part.names or [f"image {i}" for i in range(n)]
    classes = [class_name(int(c), bundle.classes) for c in part.labels.tolist()]
    labels = {m: score_labels(classes, metric, result.scores[metric][m][:n].tolist()) for m in results}
    return overlay_grid(out / "grid.png", part.images.cpu(), {m: r.maps.cpu() for m, r in results.items()},
                        boxes=part.boxes or None, row_titles=[f"{a}\ntarget: {c}" for a, c in zip(names, classes)],
                        cell_labels=labels, by="image" if len(results) <= max(4, n) else "map")
