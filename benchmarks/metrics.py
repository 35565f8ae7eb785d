"""Benchmark of sycam's metrics against torchcam 0.5.0 and grad-cam 1.5.7 (a script, not a test).

    .venv/bin/python benchmarks/metrics.py [--threads 2] [--quick] [--repeats 3] [--images 2]

Model: torchvision resnet18 with random weights at 224x224 (CPU). Maps: smooth CAM-like maps
(7x7 noise, bilinear upsampling, min-max). Every comparison runs both libraries in the same
process on the same maps and settings, alternating which goes first; the table reports the
median over repeats of the per-pair ratio ``ours/theirs`` and the median ms per image (on a
shared CPU the absolute times drift between minutes, the paired ratios much less).

1. Deletion + insertion AUC, ``steps`` intervals, substrate 0 for both curves (torchcam's
   ``DeletionInsertionMetric`` uses one baseline for both), softmax probability of the class;
   torchcam is handed the same maps through a stub extractor (its own CAM is not timed).
   Twice: at equal rows per model call (32, torchcam's default), then with sycam's default
   rows per call (``sycam.batching``: 4 on CPU) against torchcam's default - a comparison of
   defaults, not of implementations (``--model lite0`` shows where it matters).
2. ROAD combined (MoRF and LeRF over the same percentiles, noise 0.01) vs grad-cam's
   ``ROADCombined`` with ``ClassifierOutputSoftmaxTarget``; plus the imputation alone (our
   batched multigrid CG vs grad-cam's scipy ``spsolve`` imputer) and its accuracy at 224^2.
3. Forward-free metrics (pointing game, energy pointing game, IoU) on many candidate maps:
   candidate-images per second, at input resolution and on ``LowResMaps`` (7x7, exact).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sycam.batching import model_rows  # noqa: E402
from sycam.data.batch import Batch  # noqa: E402
from sycam.metrics import (  # noqa: E402
    ROAD,
    Deletion,
    EnergyPointingGame,
    Insertion,
    IoU,
    LowResMaps,
    PointingGame,
    linear_impute,
    removal_masks,
    spsolve_impute,
)

S = 224


class StubExtractor:
    """Gives torchcam precomputed maps (the interface its metrics call)."""

    def __init__(self, model, cams):
        self.model, self.cams = model, cams

    def __call__(self, class_idx=None, scores=None, normalized=True, **kw):
        return [self.cams]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def cam_like(n: int, b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return LowResMaps(torch.randn(n, b, 7, 7, generator=g), (S, S)).full()


def make_batch(b: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, S, S, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    masks = torch.zeros(b, S, S, dtype=torch.bool)
    boxes = []
    for i in range(b):
        y0, x0 = (torch.randint(0, S // 2, (2,), generator=g)).tolist()
        masks[i, y0:y0 + 80, x0:x0 + 100] = True
        boxes.append(torch.tensor([[x0, y0, min(x0 + 100, S), min(y0 + 80, S)]], dtype=torch.float32))
    return Batch((images - mean) / std, images, torch.randint(0, 1000, (b,), generator=g), masks, boxes)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def paired(ours, theirs, repeats: int) -> dict:
    """Alternate the order; return median ms of each and the median per-pair ratio."""
    to, tt, ratios = [], [], []
    for r in range(repeats):
        if r % 2 == 0:
            a, _ = timed(ours)
            b, _ = timed(theirs)
        else:
            b, _ = timed(theirs)
            a, _ = timed(ours)
        to.append(a)
        tt.append(b)
        ratios.append(a / b)
    return {"ours": statistics.median(to), "theirs": statistics.median(tt), "ratio": statistics.median(ratios),
            "ratios": ratios}


def forward_floor(model, n: int, batch_size: int = 32) -> float:
    """Seconds for ``n`` bare forwards in batches of ``batch_size`` (the cost no metric can avoid)."""
    x = torch.randn(batch_size, 3, S, S)
    with torch.no_grad():
        t, _ = timed(lambda: [model(x[:min(batch_size, n - i)]) for i in range(0, n, batch_size)])
    return t


def row(name: str, res: dict, per: int, note: str = "") -> None:
    print(f"  {name:38s} ours {1000 * res['ours'] / per:9.1f} ms/img   theirs {1000 * res['theirs'] / per:9.1f} "
          f"ms/img   ours/theirs {res['ratio']:.2f}  (pairs: {', '.join(f'{r:.2f}' for r in res['ratios'])}) {note}",
          flush=True)


def bench_deletion_insertion(model, batch: Batch, maps: torch.Tensor, steps: int, repeats: int,
                             rows: int | None = 32) -> None:
    """``rows``: our rows per model call (torchcam's is its default, 32); None: sycam's default."""
    from torchcam.metrics import DeletionInsertionMetric

    b = len(batch)
    labels = batch.labels.tolist()
    dele, ins = Deletion(steps=steps, substrate="zero"), Insertion(steps=steps, substrate="zero")

    def ours():
        return dele(maps, batch, model_fn=model, batch_size=rows), ins(maps, batch, model_fn=model, batch_size=rows)

    def theirs():
        out = []
        for i in range(b):  # per image: torchcam reports batch means only
            m = DeletionInsertionMetric(StubExtractor(model, maps[0, i:i + 1]), partial(torch.softmax, dim=-1),
                                        steps=steps, batch_size=32)
            m.update(batch.x[i:i + 1], class_idx=[labels[i]])
            out.append(m.summary())
        return out

    d, i_ = ours()
    ref = theirs()
    err = max(max(abs(d[0, k].item() - ref[k]["deletion_auc"]), abs(i_[0, k].item() - ref[k]["insertion_auc"]))
              for k in range(b))
    res = paired(ours, theirs, repeats)
    p = len(range(0, S * S, -(-S * S // steps))) + 1
    setting = "equal rows/call (32)" if rows == 32 else f"rows/call {model_rows(batch.x.device, rows)} vs 32"
    row(f"deletion+insertion, steps={steps}, {setting}", res, b,
        f"[fwd/img: ours {2 * (p - 2) + 4}, torchcam {2 * (p - 2) + 2}; max |AUC diff| {err:.1e}]")
    n_fwd = (2 * (p - 2) + 4) * b
    t_floor = forward_floor(model, n_fwd, model_rows(batch.x.device, rows))
    print(f"  {'':38s} forward floor for our {n_fwd} forwards: {1000 * t_floor / b:9.1f} ms/img "
          f"(ours/floor {res['ours'] / t_floor:.2f})", flush=True)


def bench_road(model, batch: Batch, maps: torch.Tensor, percentiles: list[int], repeats: int) -> None:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    b = len(batch)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in batch.labels]
    fractions = [1 - p / 100 for p in percentiles]
    ours_metric = ROAD("combined", fractions, noise=0.01)
    cams_np = maps[0].numpy()
    theirs_metric = ROADCombined(percentiles=percentiles)

    def ours():
        return ours_metric(maps, batch, model_fn=model, batch_size=32)

    def theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return theirs_metric(batch.x, cams_np, targets, model)

    a, t = ours(), theirs()
    res = paired(ours, theirs, repeats)
    k = len(percentiles)
    row(f"ROAD combined, {k} percentiles", res, b,
        f"[fwd/img: ours {2 * k + 1}, grad-cam {4 * k}; scores ours {a[0].tolist()} grad-cam {t.tolist()} "
        "(noise draws differ)]")

    # imputation alone, the same 2k masks per image
    masks = torch.cat([removal_masks(maps[0], torch.full((b,), f), o) for o in ("morf", "lerf") for f in fractions])
    xs = batch.x.repeat(2 * k, 1, 1, 1)
    imputer = NoisyLinearImputer(noise=0.0)

    def ours_imp():
        return linear_impute(xs, masks)

    def theirs_imp():
        return torch.stack([imputer(xs[j], (~masks[j]).float()) for j in range(xs.shape[0])])

    ours_out, theirs_out = ours_imp(), theirs_imp()
    res = paired(ours_imp, theirs_imp, repeats)
    diff = (ours_out - theirs_out).abs().max().item()
    sp = spsolve_impute(xs[:2].double(), masks[:2])
    diff_sp = (ours_out[:2].double() - sp).abs().max().item()
    row(f"imputation only ({2 * k} masks/img)", res, b,
        f"[max |ours - grad-cam| {diff:.1e}, max |ours - spsolve(float64)| {diff_sp:.1e}]")


def bench_forward_free(batch: Batch, n_full: int, n_low: int, repeats: int) -> None:
    b = len(batch)
    full = cam_like(n_full, b, seed=1)
    low = LowResMaps(torch.randn(n_low, b, 7, 7, generator=torch.Generator().manual_seed(2)), (S, S))
    metrics = {"pointing_game": PointingGame(), "energy_pointing_game": EnergyPointingGame(), "iou_mask": IoU()}
    print(f"  input resolution: {n_full} candidates x {b} images of {S}x{S}", flush=True)
    for name, m in metrics.items():
        m(full[:2], batch)
        t = statistics.median(timed(lambda m=m: m(full, batch))[0] for _ in range(repeats))
        print(f"    {name:28s} {n_full * b / t:12,.0f} candidate-images/s", flush=True)
    print(f"  LowResMaps (7x7, exact): {n_low} candidates x {b} images", flush=True)
    for name in ("pointing_game", "energy_pointing_game"):
        m = metrics[name]
        m(LowResMaps(low.a[:2], (S, S)), batch)
        t = statistics.median(timed(lambda m=m: m(low, batch))[0] for _ in range(repeats))
        print(f"    {name:28s} {n_low * b / t:12,.0f} candidate-images/s", flush=True)
    both = statistics.median(timed(lambda: (metrics["pointing_game"](low, batch),
                                            metrics["energy_pointing_game"](low, batch)))[0] for _ in range(repeats))
    print(f"    {'pointing + energy together':28s} {n_low * b / both:12,.0f} candidate-images/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer images, steps, percentiles and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--only", choices=["curves", "road", "free"], default=None)
    ap.add_argument("--model", choices=["resnet18", "lite0"], default="resnet18",
                    help="lite0: the pretrained default model (its per-image cost grows with the batch on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    b = args.images or (1 if args.quick else 2)
    import torchvision

    torch.manual_seed(0)
    if args.model == "lite0":
        from sycam.models import load_model
        model = load_model().model.eval()
    else:
        model = torchvision.models.resnet18(weights=None).eval()
    batch = make_batch(b)
    maps = cam_like(1, b)
    model_name = "resnet18 (random weights)" if args.model == "resnet18" else "EfficientNet-Lite0"
    print(f"sycam metrics benchmark: {model_name}, {S}x{S}, {b} image(s), threads={args.threads}, "
          f"repeats={repeats}, torch {torch.__version__}", flush=True)
    with torch.inference_mode(False):
        if args.only in (None, "curves"):
            print("[1] deletion + insertion vs torchcam DeletionInsertionMetric", flush=True)
            for rows in (32, None):       # equal settings; then each library's default rows per call
                bench_deletion_insertion(model, batch, maps, 8 if args.quick else 20, repeats, rows)
        if args.only in (None, "road"):
            print("[2] ROAD vs grad-cam ROADCombined", flush=True)
            bench_road(model, batch, maps, [20, 40, 60, 80] if args.quick else list(range(10, 100, 10)), repeats)
        if args.only in (None, "free"):
            print("[3] forward-free metrics, many candidates at once", flush=True)
            fb = make_batch(8, seed=3)
            bench_forward_free(fb, 16 if args.quick else 64, 1024 if args.quick else 8192, repeats)


if __name__ == "__main__":
    main()
