"""``sycam explain``: heatmaps of one or more methods on images, as overlays and a table."""
from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import SycamError
from .common import (
    add_model_args,
    add_reshape_arg,
    check_out,
    check_reshape,
    console,
    load_bundle,
    read_images,
    resolve_class,
    slug,
)
from .targets import (
    add_smoothing_args,
    add_target_args,
    embedding_model,
    read_reference,
    read_segment,
    segmentation_target,
    similarity_target,
)


def add(sub) -> None:
    p = sub.add_parser("explain", help="explain images with seed methods or expressions",
                       description="Write heatmap overlays, a grid and a table for each method on each image.")
    add_model_args(p)
    add_reshape_arg(p)
    p.add_argument("images", nargs="*", help="image files (default: the photos bundled with scikit-image/matplotlib)")
    p.add_argument("--method", action="append", dest="methods",
                   help="seed name or expression text; repeat for several; 'all' = every seed (default gradcam)")
    add_target_args(p)
    add_smoothing_args(p)
    p.add_argument("--fuse", choices=["mean", "max", "layercam", "attention"],
                   help="how the maps of several --layer combine (default: the seed's own, else mean)")
    p.add_argument("--batch-size", type=int, default=8, help="images per evidence capture")
    p.add_argument("--out", default="results/explain", help="output folder")
    p.set_defaults(run=run)


def default_images():
    from ..data.real import real_photos  # deferred: keeps start-up torch-free

    samples = real_photos("fallback").samples
    return [s.image for s in samples], [s.name.split("/")[-1].rsplit(".", 1)[0] for s in samples]


def run(args) -> int:
    # deferred: torch, the seed library and the CAM engine load here: `sycam explain --help` starts without them
    import torch

    from ..methods import SEEDS
    from ..methods.build import make_cam
    from ..models import RANDOM_WEIGHTS_SEED, RandomWeightsWarning
    from ..report.overlay import overlay, save_grid

    images, names = read_images(args.images) if args.images else default_images()   # before the model
    segment = read_segment(args.segment, images) if args.segment else None          # ... and so are the
    reference = read_reference(args.similar_to) if args.similar_to else None        # target's files
    check_out(args.out)                                                             # ... and --out
    check_reshape(args.reshape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)    # said below, in the console
        bundle = load_bundle(args)
    if reference is not None:
        embedding_model(bundle.model)
    random_weights = bool(getattr(bundle, "random_weights", False))
    if random_weights:
        console.print(f"[bold yellow]warning:[/] {args.model} has [bold]random weights[/] (no --weights file "
                      f"given): its predictions and maps mean nothing. They are the same on every run (torch seed "
                      f"{RANDOM_WEIGHTS_SEED}). Pass --weights FILE for a trained model.")
    methods = list(dict.fromkeys(args.methods or ["gradcam"]))
    if "all" in methods:
        methods = [m for m in methods if m != "all"] + [s for s in SEEDS if s not in methods]
    layers = args.layers or [bundle.default_layer]
    cams = {m: make_cam(m, bundle.model, layers, fuse=args.fuse, preprocess=bundle.preprocess,
                        eigen_smooth=args.eigen_smooth, aug_smooth=args.aug_smooth, reshape=args.reshape)
            for m in methods}   # bad methods fail here
    if segment is not None:
        target, what = segmentation_target(segment, bundle, images)
    elif reference is not None:
        target = similarity_target(reference, bundle, args.device)
        what = f"similarity to {Path(args.similar_to).name}"
    else:
        target, what = resolve_class(args.target, bundle.classes), None
    x = torch.stack([bundle.preprocess(im) for im in images]).to(args.device)
    crops = [bundle.preprocess.crop_box(im) for im in images]

    on_cpu = torch.device(args.device).type == "cpu"
    channels, seconds_per_forward = probe(bundle.model, x[:1], layers, args.reshape, timed=on_cpu)
    costs = {m: method_cost(cams[m], channels, x.shape[-1]) for m in methods}
    if on_cpu:
        for line in cost_warnings(costs, len(images), seconds_per_forward):
            console.print(line)

    started = time.perf_counter()
    maps, valid, logits = explain_images(cams, x, target, args.batch_size, costs, names)
    seconds = time.perf_counter() - started

    out = Path(args.out)
    rows = []
    files = overlay_files(names, methods)
    if what is None:
        labels, fields, titles = class_labels(logits, target, bundle.classes, names)
    else:
        if segment is not None:
            what = f"{bundle.classes[target.classes]} over the {segment.region}"
        labels, fields, titles = score_labels(logits, target, what, names)
    for i, name in enumerate(names):
        for m in methods:
            label = f"{labels[i]} · {m}"
            overlay(images[i], maps[m][i], box=crops[i], label=label, colorbar=True,
                    path=out / "overlays" / files[name, m])
            rows.append({"image": name, "method": m, "expression": cams[m].text, **fields[i],
                         "label": label, "valid": bool(valid[m][i]),
                         "overlay": f"overlays/{files[name, m]}"})
    save_grid(out / "grid.png", images, maps, row_titles=titles, crops=crops,
              title=f"{args.model}{' (random weights)' if random_weights else ''} / {', '.join(layers)}")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps(
        {"model": args.model, "weights": args.weights, "random_weights": random_weights, "layers": layers,
         "target": (None if target is None else bundle.classes[target]) if what is None else what,
         "methods": {m: cams[m].text for m in methods}, "seconds": round(seconds, 3), "images": len(images),
         "inputs": [{"image": n, "size": [int(im.shape[-1]), int(im.shape[-2])],
                     "model_crop": [round(v, 2) for v in crop]} for n, im, crop in zip(names, images, crops)],
         "rows": rows}, indent=1))

    table = Table(title=f"{len(images)} images x {len(methods)} methods in {seconds:.2f} s")
    columns = list(fields[0])
    for col in ["image", *columns]:
        table.add_column(col.replace("_", " "), justify="left" if col in ("image", "explained_class", "predicted",
                                                                          "explained") else "right")
    for name, row in zip(names, fields):
        table.add_row(name, *(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
    bad = {m: int((~v).sum()) for m, v in valid.items() if not v.all()}
    if bad:
        console.print(f"[yellow]non-finite maps (shown blank): {bad}[/]")
    console.print(f"wrote {out / 'grid.png'}, {out / 'results.csv'}, {out / 'results.json'} and "
                  f"{len(rows)} overlays in {out / 'overlays'} (at each image's size, the model's "
                  f"{bundle.preprocess.size}x{bundle.preprocess.size} crop outlined)")
    return 0


def class_labels(logits, target: int | None, classes: list[str], names: list[str]):
    """Per image: the overlay label (the explained class and its probability), the table's fields
    and the grid's row title, for a classifier."""
    probs = logits.softmax(1)
    top = [int(p.argmax()) for p in probs]
    explained = [t if target is None else target for t in top]
    labels = [f"{classes[c]} {float(probs[i, c]):.2f}" for i, c in enumerate(explained)]
    fields = [{"explained_class": classes[c], "explained_probability": round(float(probs[i, c]), 4),
               "predicted": classes[top[i]], "probability": round(float(probs[i, top[i]]), 4)}
              for i, c in enumerate(explained)]
    titles = [row_title(n, classes, probs[i], explained[i]) for i, n in enumerate(names)]
    return labels, fields, titles


def score_labels(logits, target, what: str, names: list[str]):
    """As :func:`class_labels` for a segmentation or embedding target: what is explained and its
    score S (the class's scores summed over the region, the cosine similarity)."""
    import torch  # deferred: keeps start-up torch-free

    with torch.no_grad():
        scores = target(logits)
    fields = [{"explained": what, "score": round(float(s), 4)} for s in scores]
    labels = [f"{what}: S = {float(s):.3g}" for s in scores]
    return labels, fields, [f"{n}: {label}" for n, label in zip(names, labels)]


def row_title(name: str, classes: list[str], probs, explained: int) -> str:
    """``name: explained-class p``, and the top-1 class where it is another one."""
    top = int(probs.argmax())
    text = f"{name}: {classes[explained]} {float(probs[explained]):.2f}"
    return text if top == explained else f"{text} (top-1: {classes[top]} {float(probs[top]):.2f})"


# ---------------------------------------------------------------------- cost and progress
#: a method needing at least this many forward-equivalents per image gets a cost warning on a CPU,
#: and its own progress steps, image by image
COSTLY = 50


@dataclass
class Cost:
    """Rough model passes per image of a method, in forward-equivalents, and what they are."""

    forwards: int
    what: str
    per_image: bool = False      # runs image by image (meta-methods, perturbation families)


def probe(model, x1, layers, reshape=None, timed: bool = False) -> tuple[dict[str, int], float]:
    """The channel count of each layer's map (a token layer's reshaped by ``reshape``) on one forward
    of ``x1`` (one image) and, with ``timed``, the seconds of one forward (timed on a second pass).
    A layer that gives no map is an error here, before the methods run."""
    # deferred: keeps start-up torch-free
    import torch

    from ..evidence.layers import resolve_layers

    refs = resolve_layers(model, layers, reshape)
    seen: dict[str, list] = {r.name: [] for r in refs}
    handles = [r.module.register_forward_hook(lambda _m, _i, out, name=r.name: seen[name].append(out))
               for r in refs]
    try:
        with torch.no_grad():
            model(x1)
            seconds = 0.0
            if timed:
                handles, old = [], handles
                for h in old:
                    h.remove()
                start = time.perf_counter()
                model(x1)
                seconds = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    channels = {}
    for r in refs:
        calls = seen[r.name]
        out = calls[r.call] if calls and -len(calls) <= r.call < len(calls) else None
        channels[r.name] = int(r.map(out).shape[1]) if out is not None else 0
    return channels, seconds


def method_cost(cam, channels: dict[str, int], input_size: int) -> Cost:
    """How many model passes ``cam`` needs per image (see each seed's ``cost`` in ``sycam seeds``)."""
    if hasattr(cam, "views"):                             # aug_smooth: the method once per view
        inner = method_cost(cam.inner, channels, input_size)
        v = len(cam.views)
        return Cost(inner.forwards * v, f"{v} augmented views x ({inner.what})",
                    per_image=inner.per_image or inner.forwards * v >= COSTLY)
    if hasattr(cam, "super_iters"):                       # GPNN-CAM
        v = cam.n * cam.super_iters
        return Cost(20 * v + 2 * v, f"{v} GPNN variations (~0.5-0.9 s of CPU each) + {v} forwards and backwards",
                    per_image=True)
    if hasattr(cam, "cams"):                              # MetaCAM and the adaptive thresholds
        parts = [method_cost(c, channels, input_size) for c in cam.cams.values()]
        inner = max(p.forwards for p in parts) + sum(p.forwards for p in parts if p.forwards > 2)
        road = 19 * len(cam.grid) if getattr(cam, "adaptive", False) else 0
        what = "the components' capture" + (f" + {len(cam.grid)} x 19 forwards for ROAD" if road else "")
        return Cost(inner + road, what, per_image=True)
    needs = getattr(cam, "needs", set())
    options = getattr(cam, "options", None)
    layers = [r.name for r in cam.layers] if getattr(cam, "layers", None) else list(channels)
    k = sum(channels.get(name, 0) for name in layers)
    if options is not None and options.top_k is not None:
        k = min(k, options.top_k * len(layers))
    where = f"{k} channels at {', '.join(layers)}"     # each part below ends with it
    total = 2 if needs & {"G", "G2", "G3", "W", "R", "HA", "Gx", "FB", "GB"} else 1
    parts = []
    if "HA" in needs:
        total += 1
        parts.append("1 forward + 1 backward + 1 Hessian-vector product")
    if "GB" in needs and needs & {"G", "W", "HA", "Gx", "FB"}:
        total += 1
        parts.append("1 forward + 1 backward + 1 guided backward to the input")
    if "score" in needs:
        total += k
        parts.append(f"one masked forward per channel; {where}")
    if "score_ss" in needs:
        total += options.ss_n * k
        parts.append(f"{options.ss_n} noisy masked forwards per channel; {where}")
    if "score_is" in needs:
        total += options.is_n * k
        parts.append(f"{options.is_n} scaled masked forwards per channel; {where}")
    if "ablation" in needs:
        total += k
        parts.append(f"one pass of the layers after the explained one per channel; {where}")
    if needs & {"As", "Gs", "keep"}:
        scales = options.scales
        total += round(2 * sum((s / input_size) ** 2 for s in scales))
        parts.append(f"{len(scales)} forwards + backwards at sizes up to {max(scales)} px")
    if needs & {"Av", "Gv", "G2v", "G3v"}:
        total += 2 * options.noise_n
        parts.append(f"{options.noise_n} noisy forwards + backwards")
    what = "; ".join(parts) or ("1 forward + 1 backward" if total == 2 else "1 forward")
    return Cost(total, what, per_image=total >= COSTLY)


def cost_warnings(costs: dict[str, Cost], n_images: int, seconds_per_forward: float) -> list[str]:
    """One warning line per costly method (about how many forwards, and how long on this CPU)."""
    lines = []
    for m, cost in costs.items():
        if cost.forwards < COSTLY:
            continue
        total = cost.forwards * n_images
        when = ""
        if seconds_per_forward > 0:
            secs = total * seconds_per_forward
            when = (f": {secs / 60:.0f} min or more" if secs >= 90 else f": {secs:.0f} s or more") + \
                f" on this CPU ({seconds_per_forward * 1000:.0f} ms per forward)"
        lines.append(f"[bold yellow]cost:[/] {m} needs about {cost.forwards:,} forwards per image ({cost.what}), "
                     f"~{total:,} for {n_images} image{'s' if n_images != 1 else ''}{when}. A GPU (--device cuda) "
                     "is much faster; gradient methods need 1 forward + 1 backward.")
    return lines


def explain_images(cams: dict, x, target, batch_size: int, costs: dict[str, Cost], names: list[str]):
    """Every method's maps on every image: (maps {method: (n, H, W)}, valid {method: (n,)}, logits (n, C)
    (or the model's scores: per pixel, an embedding)). ``target``: a class index, None (each image's
    top-1) or a target for the n images (:mod:`sycam.evidence.targets`).

    Methods that cost a forward or two share one evidence capture per batch of ``batch_size``
    images; costly ones (perturbation families, meta-methods) run image by image, so the
    progress bar (weighted by each method's forwards, with the time left) moves for each image.
    """
    # deferred: keeps start-up torch-free
    import torch

    from ..evidence.targets import target_rows
    from ..methods.cam import explain_many

    n = x.shape[0]
    batch_size = max(1, int(batch_size))
    single = [m for m in cams if costs[m].per_image]
    shared = [m for m in cams if m not in single]
    shared_units = max((costs[m].forwards for m in shared), default=0)
    maps = {m: [None] * n for m in cams}
    valid = {m: [None] * n for m in cams}
    logits = [None] * n

    def keep(results, start):
        for m, r in results.items():
            for j in range(r.maps.shape[0]):
                maps[m][start + j] = r.maps[j].cpu()
                valid[m][start + j] = r.valid[j].cpu()
        first = next(iter(results.values()))
        for j in range(first.maps.shape[0]):
            if logits[start + j] is None and first.logits is not None:
                logits[start + j] = first.logits[j].detach().float().cpu()

    def targets(start, stop):
        if target is None or isinstance(target, int):
            return None if target is None else [target] * (stop - start)
        return target_rows(target, torch.arange(start, stop))

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("image {task.fields[image]}/{task.fields[images]}"), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())
    total = n * (shared_units + sum(costs[m].forwards for m in single))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("explaining", total=total, image=0, images=n)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if shared:
                progress.update(task, description=f"{names[start]}{'..' + names[stop - 1] if stop - start > 1 else ''}"
                                                  f": {', '.join(shared)}")
                keep(explain_many({m: cams[m] for m in shared}, x[start:stop], targets(start, stop)), start)
                progress.update(task, advance=(stop - start) * shared_units, image=stop if not single else start)
            for i in range(start, stop):
                for m in single:
                    progress.update(task, description=f"{names[i]}: {m}")
                    keep(explain_many({m: cams[m]}, x[i:i + 1], targets(i, i + 1)), i)
                    progress.update(task, advance=costs[m].forwards, image=i + 1)
    if any(v is None for v in logits):
        raise SycamError("the model gave no class scores to label the images with")
    return ({m: torch.stack(v) for m, v in maps.items()}, {m: torch.stack(v) for m, v in valid.items()},
            torch.stack(logits))


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
