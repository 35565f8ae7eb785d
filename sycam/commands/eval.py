"""``sycam eval``: methods x metrics on a benchmark, as a table, CSV/JSON and pictures."""
from __future__ import annotations

import csv
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from rich.progress import Progress
from rich.table import Table

from ..api import make_cam
from ..evaluation import BASELINES, evaluate, resolve_metrics
from ..methods import SEEDS
from ..report.overlay import save_grid
from .common import add_model_args, console, load_bundle
from .problem import check_data_arg, read_data

DEFAULT_METRICS = ["pointing_game", "energy_pointing_game"]


def add(sub) -> None:
    p = sub.add_parser("eval", help="score methods with saliency metrics on a benchmark",
                       description="Every method x metric, mean and 95 % interval over images.")
    p.add_argument("methods", nargs="+", help="seed names or expressions; 'all' = every seed, "
                                              "'gradient' = the seeds that need one backward")
    add_model_args(p)
    p.add_argument("--metric", action="append", dest="metrics",
                   help=f"metric name (repeat; default {' '.join(DEFAULT_METRICS)}); `sycam metrics` lists them")
    p.add_argument("--data", default="default",
                   help="default (composites + real photos; needs `sycam data fetch`), fallback (bundled photos) "
                        "or a folder with annotations")
    p.add_argument("--size", type=int, default=64, help="rows of the default benchmark")
    p.add_argument("--baseline", action="append", dest="baselines", choices=BASELINES,
                   help="score a baseline map too (center, random)")
    p.add_argument("--chunk", type=int, default=None, help="images per evidence capture (default: 4 on CPU, 32 on GPU)")
    p.add_argument("--options", default="{}", help="evidence options as JSON, e.g. '{\"max_batch\": 64}'")
    p.add_argument("--out", default="results/eval")
    p.set_defaults(run=run)


def expand_methods(names: list[str]) -> list[str]:
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
    from ..data import default_benchmark, fallback_benchmark, to_batch

    if args.data == "default":
        return default_benchmark(args.size, bundle=bundle)
    if args.data == "fallback":
        return fallback_benchmark(bundle)
    images = images if images is not None else read_data(args)
    if images.skipped:
        console.print(f"[yellow]{len(images.skipped)} images skipped[/]: " +
                      "; ".join(f"{f} ({why})" for f, why in images.skipped[:5]))
    return to_batch(images.samples, bundle.preprocess)


def run(args) -> int:
    check_data_arg(args)
    images = read_data(args)                  # user images before the model
    bundle = load_bundle(args)
    methods = expand_methods(args.methods)
    layers = args.layers or [bundle.default_layer]
    options = json.loads(args.options)
    cams = {m: make_cam(m, bundle.model, layers, options=options, preprocess=bundle.preprocess)
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
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    per_image = {metric: {m: [None if v != v else round(float(v), 5) for v in s.tolist()]
                          for m, s in by.items()} for metric, by in result.scores.items()}
    (out / "results.json").write_text(json.dumps({
        "command": " ".join(shlex.quote(a) for a in ["sycam", *sys.argv[1:]]),
        "model": args.model, "layers": layers, "data": args.data, "images": len(batch), "seconds": round(seconds, 2),
        "methods": {m: cams[m].text for m in methods}, "metrics": {n: m.direction.value for n, m in metrics.items()},
        "summary": rows, "per_image": per_image, "names": result.names}, indent=1))
    _curves(result, out)
    _grid(cams, batch, out, bundle)

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
    console.print(f"wrote {out / 'results.csv'}, {out / 'results.json'}, pictures in {out}")
    return 0


def _curves(result, out: Path) -> None:
    if not result.curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _grid(cams, batch, out: Path, bundle, n: int = 8) -> None:
    from ..api import explain_many

    part = batch[slice(0, n)]
    results = explain_many(cams, part.x, part.labels)
    titles = [f"{name[:18]}: {bundle.classes[int(c)][:14]}" for name, c in zip(part.names, part.labels)]
    save_grid(out / "grid.png", part.images.cpu(), {m: r.maps.cpu() for m, r in results.items()},
              row_titles=titles)
