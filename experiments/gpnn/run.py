"""Make GPNN variations of skimage's bundled photos, time them, score them, save picture grids.

    .venv/bin/python experiments/gpnn/run.py --image chelsea coffee --n 8 --threads 1 --out experiments/gpnn
    .venv/bin/python experiments/gpnn/run.py --image chelsea --n 8 --set sigma=3.0 --tag sigma3
    .venv/bin/python experiments/gpnn/run.py --n 10 --threads 2 --repeat 3 --no-grid --tag t2 --out DIR

Scores (per variation, averaged):
  patch_err  mean over 2000 random output 7x7 patches of min_j ||y_i - x_j||^2 / 147 (raw pixels):
             how far the result is from being made of source patches (blur, seams raise it);
  used       fraction of source pixels that some copied patch covers (completeness);
  change     mean |y - x| per pixel (0 = the source itself).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def load(name: str, side: int) -> torch.Tensor:
    """skimage.data.<name>() -> (3, side, side) in [0, 1]: short side resized to ``side``, centre crop."""
    from skimage import data
    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
    h, w = x.shape[1:]
    s = side / min(h, w)
    x = F.interpolate(x[None], size=(round(h * s), round(w * s)), mode="bilinear", antialias=True,
                      align_corners=False)[0]
    h, w = x.shape[1:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[:, top:top + side, left:left + side].clamp(0, 1).contiguous()


def scores(source: torch.Tensor, result, p: int = 7, samples: int = 2000, seed: int = 0) -> dict:
    from sycam.evidence.gpnn import coverage
    keys = F.unfold(source[None], p)[0].t()  # (L, 3 p p)
    k2 = keys.pow(2).sum(1)
    g = torch.Generator().manual_seed(seed)
    errs = []
    for y in result.images:
        q = F.unfold(y[None], p)[0].t()
        q = q[torch.randperm(q.shape[0], generator=g)[:samples]]
        d2 = q.pow(2).sum(1, keepdim=True) + k2 - 2 * q @ keys.t()
        errs.append(d2.clamp_min(0).min(1).values.mean() / keys.shape[1])
    return {"patch_err": float(torch.stack(errs).mean()),
            "used": float((coverage(result.correspondence) > 0).float().mean()),
            "change": float((result.images - source).abs().mean())}


def parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", nargs="+", default=["chelsea", "coffee"])
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="GPNNParams overrides")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=None, help="folder for the PNG grids and the JSON record")
    ap.add_argument("--repeat", type=int, default=1, help="time the generation this many times")
    ap.add_argument("--no-grid", action="store_true", help="only the JSON record, no pictures")
    ap.add_argument("--coverage", action="store_true",
                    help="also save <image>_coverage.png: P_I^T 1 per variation (gray = once)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sycam.evidence.gpnn import coverage, gpnn_variations, save_variation_grid
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    records = []
    for name in args.image:
        x = load(name, args.side)
        gpnn_variations(x, 1, seed=args.seed, **overrides)  # warm-up (allocator, kernels)
        walls, cpus = [], []
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            res = gpnn_variations(x, args.n, seed=args.seed, **overrides)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        rec = {"image": name, "size": list(x.shape[1:]), "n": args.n, "threads": args.threads,
               "wall_s": round(min(walls), 2), "cpu_s": round(min(cpus), 2),
               "load_avg": open("/proc/loadavg").read().split()[:3], "overrides": overrides,
               **{k: round(v, 5) for k, v in scores(x, res).items()},
               "levels": [(lv["size"][0], lv["search"], lv["iters"], lv["seconds"]) for lv in res.levels]}
        print(json.dumps(rec))
        records.append(rec)
        if args.out and not args.no_grid:
            tag = f"_{args.tag}" if args.tag else ""
            title = (f"{name} {x.shape[1]}x{x.shape[2]} (red) + {args.n} GPNN variations, seed {args.seed}"
                     + (f", {overrides}" if overrides else ""))
            save_variation_grid(x, res.images, Path(args.out) / f"{name}{tag}.png", title=title)
            if args.coverage:
                cov = coverage(res.correspondence)  # (n, H, W), 1 = used once, 0 = not used
                gray = (cov / 2).clamp(max=1)[:, None].expand(-1, 3, -1, -1)
                save_variation_grid(x, gray, Path(args.out) / f"{name}{tag}_coverage.png",
                                    title=f"{name}: P_I^T 1, how often each source pixel was copied "
                                          "(black 0, gray 1, white >= 2)")
    if args.out:
        tag = f"_{args.tag}" if args.tag else ""
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"timing{tag}.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
