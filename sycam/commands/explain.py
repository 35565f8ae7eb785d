"""``sycam explain``: heatmaps of one or more methods on images, as overlays and a table."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch
from rich.progress import Progress
from rich.table import Table

from ..api import explain_many, make_cam
from ..methods import SEEDS
from ..report.overlay import overlay, save_grid, save_png
from .common import add_model_args, console, load_bundle, read_images, resolve_class, slug


def add(sub) -> None:
    p = sub.add_parser("explain", help="explain images with seed methods or expressions",
                       description="Write heatmap overlays, a grid and a table for each method on each image.")
    add_model_args(p)
    p.add_argument("images", nargs="*", help="image files (default: the photos bundled with scikit-image/matplotlib)")
    p.add_argument("--method", action="append", dest="methods",
                   help="seed name or expression text; repeat for several; 'all' = every seed (default gradcam)")
    p.add_argument("--target", help="class to explain (index or ImageNet name); default: each image's top-1")
    p.add_argument("--fuse", choices=["mean", "max", "layercam", "attention"], help="how several layers combine")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="results/explain", help="output folder")
    p.set_defaults(run=run)


def default_images():
    from ..data.real import real_photos

    samples = real_photos("fallback").samples
    return [s.image for s in samples], [s.name.split("/")[-1].rsplit(".", 1)[0] for s in samples]


def run(args) -> int:
    images, names = read_images(args.images) if args.images else default_images()   # before the model
    bundle = load_bundle(args)
    methods = list(dict.fromkeys(args.methods or ["gradcam"]))
    if "all" in methods:
        methods = [m for m in methods if m != "all"] + [s for s in SEEDS if s not in methods]
    layers = args.layers or [bundle.default_layer]
    cams = {m: make_cam(m, bundle.model, layers, fuse=args.fuse, preprocess=bundle.preprocess)
            for m in methods}   # bad methods fail here
    target = resolve_class(args.target, bundle.classes)
    x = torch.stack([bundle.preprocess(im) for im in images]).to(args.device)
    shown = torch.stack([bundle.preprocess.geometry(im) for im in images])

    maps = {m: [] for m in methods}
    valid = {m: [] for m in methods}
    logits = []
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("explaining", total=len(images))
        for i in range(0, len(images), args.batch_size):
            xb = x[i:i + args.batch_size]
            results = explain_many(cams, xb, None if target is None else [target] * len(xb))
            for m, r in results.items():
                maps[m].append(r.maps.cpu())
                valid[m].append(r.valid.cpu())
            logits.append(next(iter(results.values())).logits.cpu())
            progress.advance(task, len(xb))
    seconds = time.perf_counter() - started
    maps = {m: torch.cat(v) for m, v in maps.items()}
    valid = {m: torch.cat(v) for m, v in valid.items()}
    probs = torch.cat(logits).softmax(1)

    out = Path(args.out)
    rows = []
    files = overlay_files(names, methods)
    for i, name in enumerate(names):
        top = int(probs[i].argmax())
        explained = top if target is None else target
        for m in methods:
            path = save_png(out / "overlays" / files[name, m], overlay(shown[i], maps[m][i]))
            rows.append({"image": name, "method": m, "expression": cams[m].text,
                         "predicted": bundle.classes[top], "probability": round(float(probs[i, top]), 4),
                         "explained_class": bundle.classes[explained], "valid": bool(valid[m][i]),
                         "overlay": str(path.relative_to(out))})
    titles = [f"{n}: {bundle.classes[int(p.argmax())]} {float(p.max()):.2f}" for n, p in zip(names, probs)]
    save_grid(out / "grid.png", shown, {m: maps[m] for m in methods}, row_titles=titles,
              title=f"{args.model} / {', '.join(layers)}")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps(
        {"model": args.model, "layers": layers, "methods": {m: cams[m].text for m in methods},
         "seconds": round(seconds, 3), "images": len(images), "rows": rows}, indent=1))

    table = Table(title=f"{len(images)} images x {len(methods)} methods in {seconds:.2f} s")
    table.add_column("image")
    table.add_column("predicted")
    table.add_column("p", justify="right")
    for i, name in enumerate(names):
        top = int(probs[i].argmax())
        table.add_row(name, bundle.classes[top], f"{float(probs[i, top]):.2f}")
    console.print(table)
    bad = {m: int((~v).sum()) for m, v in valid.items() if not v.all()}
    if bad:
        console.print(f"[yellow]non-finite maps (shown blank): {bad}[/]")
    console.print(f"wrote {out / 'grid.png'}, {out / 'results.csv'}, {out / 'results.json'} and "
                  f"{len(rows)} overlays in {out / 'overlays'}")
    return 0


def overlay_files(names: list[str], methods: list[str]) -> dict[tuple[str, str], str]:
    """One file name per (image, method), never shared (see :func:`~sycam.commands.common.slug`)."""
    files: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    for name in names:
        for m in methods:
            stem = f"{slug(name)}__{slug(m)}"
            if stem in taken:                 # 'a__b' + 'c' against 'a' + 'b__c'
                stem = slug(f"{stem}\n{name}\n{m}")
            taken.add(stem)
            files[name, m] = f"{stem}.png"
    return files
