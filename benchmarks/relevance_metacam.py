"""Relevance-CAM and MetaCAM on the default model (EfficientNet-Lite0, layer ``head``), one image.

Prints wall time of each step and its ratio to Grad-CAM measured in the same run (median of
``--repeats``; MetaCAM's ROAD steps once). There is no speed target for these methods; the
numbers say where the time goes: Relevance-CAM adds one forward and one LRP backward; MetaCAM's
components share one capture; adaptive thresholding costs len(grid) ROAD evaluations (18
imputations + 18 forwards each); the CRE scores 2^n - 1 ensembles.

    python benchmarks/relevance_metacam.py [--threads 1] [--repeats 5] [--cre 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cre", type=int, default=3, help="components in the CRE run (exhaustive, fixed k)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from sycam.api import CAM, explain_many, make_cam
    from sycam.commands.explain import default_images
    from sycam.methods.metacam import DEFAULT_COMPONENTS, MetaCAM
    from sycam.models import load_model

    bundle = load_model()
    model = bundle.model
    images, _ = default_images()
    x = torch.stack([bundle.preprocess(images[0])])
    rows = []

    def run(name, fn, repeats=args.repeats):
        fn()                                  # warm-up
        rows.append((name, timed(fn, repeats)))

    run("gradcam", lambda: CAM("gradcam", model, "head")(x))
    run("relevancecam", lambda: CAM("relevancecam", model, "head")(x))
    cams = {n: CAM(n, model, "head") for n in DEFAULT_COMPONENTS}
    run(f"{len(cams)} components, shared capture", lambda: explain_many(cams, x))
    run("metacam, k = 0.2", lambda: make_cam("metacam", model, "head", adaptive=False)(x))
    rows.append(("adaptivegradcam (9 k x ROAD)", timed(lambda: make_cam("adaptivegradcam", model, "head")(x), 1)))
    rows.append(("metacam adaptive (9 k x ROAD)", timed(lambda: make_cam("metacam", model, "head")(x), 1)))
    comps = list(DEFAULT_COMPONENTS[:args.cre])
    rows.append((f"CRE of {len(comps)} components, k = 0.2 ({2 ** len(comps) - 1} ROAD)",
                 timed(lambda: MetaCAM(comps, model, "head").cre(x), 1)))

    base = rows[0][1]
    print(f"EfficientNet-Lite0 / head, 1 image 224x224, {args.threads} thread(s)")
    for name, seconds in rows:
        print(f"{name:<48}{seconds:>9.3f} s{seconds / base:>9.1f} x Grad-CAM")


if __name__ == "__main__":
    main()
