"""GPNN-CAM end to end on the default benchmark with the default model, against Grad-CAM(++).

One GPNN-CAM run per image gives several maps, all scored on the same images:
  gradcam / gradcampp   the base CAMs of the source (sycam.api.CAM)
  gpnn_phase1           the phase-1 map H (Grad-CAM averaged over the variations, unpermuted)
  gpnn_p2_<layer>       phase 2 from one regression layer alone
  gpnncam               phase 2 combined over --final layers (the method's output; default blocks.10)
  gpnn_p2_mean_all      mean of every regression layer's map
Writes results.json (settings, per-image scores, summaries, timings), table.md, and for the first
--figures images an overlay sheet (source, variations, Grad-CAM, phase 1, phase 2, final) and a
variation grid.

  .venv/bin/python experiments/gpnn_cam/run.py --size 64 --out experiments/gpnn_cam
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64, help="rows of the default benchmark")
    ap.add_argument("--first", type=int, default=None, help="only the first N rows")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--super-iters", type=int, default=2)
    ap.add_argument("--sigma", type=float, default=3.0)
    ap.add_argument("--base", default="gradcam")
    ap.add_argument("--regression", nargs="+", default=["blocks.10", "blocks.15", "head"])
    ap.add_argument("--final", nargs="+", default=["blocks.10"], help="layers combined into 'gpnncam'")
    ap.add_argument("--combine", default="mean")
    ap.add_argument("--no-source", action="store_true")
    ap.add_argument("--prob-weight", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figures", type=int, default=4)
    ap.add_argument("--out", default="experiments/gpnn_cam")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sycam.api import CAM, explain_many
    from sycam.data import default_benchmark
    from sycam.evaluation import resolve_metrics
    from sycam.evidence.gpnn import GPNNParams
    from sycam.kernels.postprocess import finalize, minmax
    from sycam.methods.gpnn_cam import GPNNCAM, combine_layers
    from sycam.metrics import summarise
    from sycam.metrics.aggregate import class_mean
    from sycam.models import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"_{args.tag}" if args.tag else ""
    bundle = load_model()
    batch = default_benchmark(args.size, bundle=bundle)
    if args.first:
        batch = batch[slice(0, args.first)]
    metrics = resolve_metrics(["pointing_game", "energy_pointing_game"])
    base = {m: CAM(m, bundle.model, "head") for m in ("gradcam", "gradcampp")}
    g = GPNNCAM(bundle.model, "head", base=args.base, regression_layers=args.regression, n=args.n,
                super_iters=args.super_iters, gpnn=GPNNParams(sigma=args.sigma), seed=args.seed,
                combine=args.combine, include_source=not args.no_source, prob_weight=args.prob_weight,
                preprocess=bundle.preprocess, keep_variations=False)

    scores: dict[str, dict[str, list[float]]] = {}
    timings, fig_rows = [], []
    started = time.perf_counter()
    for i in range(len(batch)):
        part = batch[[i]]
        keep = i < args.figures
        g.keep_variations = keep
        t0, c0 = time.perf_counter(), time.process_time()
        e = g.explain(part.x, part.labels, images01=part.images)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        base_res = explain_many(base, part.x, part.labels)
        size = part.size
        maps = {"gradcam": base_res["gradcam"].maps, "gradcampp": base_res["gradcampp"].maps,
                "gpnn_phase1": minmax(e.phase1)}
        for name, m in e.layer_maps.items():
            maps[f"gpnn_p2_{name}"] = finalize(m, size)[0]
        maps["gpnncam"] = combine_layers([e.layer_maps[n] for n in args.final], size, args.combine)
        maps["gpnn_p2_mean_all"] = combine_layers(list(e.layer_maps.values()), size, "mean")
        stack = torch.stack([maps[k] for k in maps])
        for mname, metric in metrics.items():
            vals = metric(stack, part)
            for k, v in zip(maps, vals):
                scores.setdefault(mname, {}).setdefault(k, []).append(float(v[0]))
        n_views = args.n * args.super_iters
        timings.append({"image": part.names[0], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                        "variations": n_views, "load": round(os.getloadavg()[0], 2), **e.seconds,
                        "r2": {k: round(v.r2, 3) for k, v in e.fits[0].items()},
                        "p_source": round(float(e.probs[0][0]), 4),
                        "p_variations_mean": round(float(e.probs[0][1:].mean()), 4)})
        pgs, epgs = scores["pointing_game"], scores["energy_pointing_game"]
        print(f"[{i + 1}/{len(batch)}] {part.names[0]} {wall:.1f}s wall {cpu:.1f}s cpu "
              f"PG gradcam {pgs['gradcam'][-1]:.0f} gpnncam {pgs['gpnncam'][-1]:.0f}"
              f" | EPG {epgs['gradcam'][-1]:.3f} -> {epgs['gpnncam'][-1]:.3f}",
              flush=True)
        if keep:
            fig_rows.append((part, e, maps))
    total = time.perf_counter() - started

    labels = batch.labels
    summary = {}
    for mname, by in scores.items():
        for k, v in by.items():
            t = torch.tensor(v)
            s = summarise(t, method="bootstrap" if mname == "pointing_game" else "t")
            row = {"mean": float(s.mean), "low": float(s.low), "high": float(s.high), "images": int(s.count)}
            if mname == "pointing_game":
                row["class_mean"] = float(class_mean(t[None], labels)[0])
            summary.setdefault(mname, {})[k] = row
    paired = {}
    for mname, by in scores.items():
        ref = torch.tensor(by["gradcam"])
        for k, v in by.items():
            if k == "gradcam":
                continue
            d = torch.tensor(v) - ref
            s = summarise(d, method="bootstrap")
            paired.setdefault(mname, {})[k] = {"diff": float(s.mean), "low": float(s.low), "high": float(s.high),
                                               "better": int((d > 0).sum()), "worse": int((d < 0).sum())}
    result = {"settings": vars(args), "gpnn": g.gpnn.__dict__ if hasattr(g.gpnn, "__dict__") else str(g.gpnn),
              "method": g.text, "images": len(batch), "names": list(batch.names), "labels": labels.tolist(),
              "seconds_total": round(total, 1), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(),
              "summary": summary, "paired_vs_gradcam": paired, "per_image": scores, "timings": timings}
    (out / f"results{tag}.json").write_text(json.dumps(result, indent=1))

    lines = [f"{len(batch)} images of the default benchmark, {g.text}", "",
             "| method | pointing game [95% CI] | class mean | energy PG [95% CI] | dPG vs Grad-CAM (+/-) "
             "| dEPG vs Grad-CAM [95% CI] (+/-) |",
             "|---|---|---|---|---|---|"]
    for k in scores["pointing_game"]:
        pg, epg = summary["pointing_game"][k], summary["energy_pointing_game"][k]
        dpg = paired["pointing_game"].get(k)
        depg = paired["energy_pointing_game"].get(k)
        dpg_s = f"{dpg['diff']:+.3f} ({dpg['better']}/{dpg['worse']})" if dpg else "-"
        depg_s = (f"{depg['diff']:+.3f} [{depg['low']:+.3f}, {depg['high']:+.3f}] ({depg['better']}/{depg['worse']})"
                  if depg else "-")
        lines.append(f"| {k} | {pg['mean']:.3f} [{pg['low']:.3f}, {pg['high']:.3f}] | {pg['class_mean']:.3f} | "
                     f"{epg['mean']:.3f} [{epg['low']:.3f}, {epg['high']:.3f}] | {dpg_s} | {depg_s} |")
    w = [t["wall_s"] for t in timings]
    c = [t["cpu_s"] for t in timings]
    lines += ["", f"per image: wall {sum(w) / len(w):.1f} s (min {min(w):.1f}, max {max(w):.1f}), "
              f"CPU {sum(c) / len(c):.1f} s, {args.n * args.super_iters} variations; total {total:.0f} s; "
              f"gpnn {sum(t['gpnn'] for t in timings) / len(w):.1f} s, "
              f"capture {sum(t['capture'] for t in timings) / len(w):.1f} s, "
              f"phase 2 {sum(t['phase2'] for t in timings) / len(w):.2f} s per image (wall)"]
    (out / f"table{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for j, (part, e, maps) in enumerate(fig_rows):
        sheet(out / f"overlay{tag}_{j}.jpg", part, e, maps, bundle.classes)
        e.save_variations(out / f"variations{tag}_{j}.jpg", 0, images01=part.images)


def sheet(path, part, e, maps, classes) -> None:
    """One picture: source (with the box), 6 variations with their Grad-CAM, then the maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sycam.kernels.postprocess import minmax
    from sycam.report.overlay import overlay

    img = part.images[0]
    var, cams = e.variations[0], e.variation_cams[0]
    nv = min(6, len(var))
    phase2 = [k for k in maps if k.startswith("gpnn_p2_") and k != "gpnn_p2_mean_all"]
    keys = ["gradcam", "gpnn_phase1", *phase2, "gpnncam"]
    cols = max(nv + 1, len(keys) + 1)
    fig, ax = plt.subplots(3, cols, figsize=(2.0 * cols, 6.6))
    for a in ax.flat:
        a.axis("off")
    box = part.boxes[0] if part.boxes else None

    def show(a, rgb, title):
        a.imshow(rgb.permute(1, 2, 0).numpy())
        a.set_title(title, fontsize=7)
        if box is not None:
            for x0, y0, x1, y1 in box.tolist():
                a.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="white", lw=1))

    cls = classes[int(e.classes[0])]
    show(ax[0, 0], img, f"{part.names[0][-22:]}\n{cls[:20]} p={float(e.probs[0][0]):.2f}")
    for v in range(nv):
        ax[0, v + 1].imshow(var[v].permute(1, 2, 0).clamp(0, 1).numpy())
        ax[0, v + 1].set_title(f"variation {v}  p={float(e.probs[0][v + 1]):.2f}", fontsize=7)
        ax[1, v + 1].imshow(overlay(var[v], cams[v]).permute(1, 2, 0).numpy())
        ax[1, v + 1].set_title(f"Grad-CAM on variation {v}", fontsize=7)
    ax[1, 0].imshow(minmax(e.mass[0]).numpy(), cmap="gray")
    ax[1, 0].set_title(f"mass (max {float(e.mass[0].max()):.1f}, min {float(e.mass[0].min()):.1f})", fontsize=7)
    for j, k in enumerate(keys):
        show(ax[2, j + 1], overlay(img, maps[k][0]), k)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
