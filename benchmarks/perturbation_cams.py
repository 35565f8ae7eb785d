"""Perturbation CAMs: sycam vs pytorch-grad-cam and torchcam at equal batch sizes.

* Ablation-CAM, random-weight resnet18 layer4, one 224 px image: sycam re-runs only the
  layers after the split (torch.fx); grad-cam re-runs the whole network per batch of
  ablations. Target: >= 50x faster.
* Score-CAM, pretrained EfficientNet-Lite0 head (1280 channels), one real photo: sycam
  skips channels whose maps are constant (dead ReLU6 channels); all three libraries use
  batches of 32 masked images. Target: >= 1.3x faster than grad-cam.
* Peak memory of Score-CAM for several batch budgets (each run in a forked child, peak
  RSS minus the child's RSS at start): grows with the budget, not with the channel count.
* GPNN: time to generate variations of one 224 px image.

    python benchmarks/perturbation_cams.py [--threads 2] [--repeats 2] [--quick]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from _timing import paired  # noqa: E402

import sycam  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _child(fn, queue):
    start = rss_mb()
    fn()
    queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start)


def peak_mb(fn) -> float:
    """Peak resident memory a call adds, measured in a forked child."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def ablation(repeats: int) -> None:
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    ours = sycam.CAM("ablationcam", model, "layer4", options={"max_batch": 32})
    peer = AblationCAM(model=model, target_layers=[model.layer4[-1]], batch_size=32)
    r = paired(lambda: peer(input_tensor=x, targets=[ClassifierOutputTarget(1)]), lambda: ours(x, 1),
               repeats, warmup=1)
    print(f"Ablation-CAM resnet18 layer4 (512 ch, batch 32): sycam {r['baseline_ms']:.0f} ms, "
          f"grad-cam {r['method_ms']:.0f} ms -> sycam {r['ratio']:.0f}x faster")


def scorecam(repeats: int, quick: bool) -> None:
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    from sycam.data import real_photos, to_batch
    from sycam.models import load_model

    bundle = load_model()
    model = bundle.model
    photo = [s for s in real_photos("fallback").samples if "coffee" in s.name]
    x = to_batch(photo, bundle.preprocess).x
    c = int(model(x).argmax())
    A = sycam.capture(model, x, ["head"], needs={"A"}).layers["head"].A
    dead = int((A.flatten(2).amax(2) == A.flatten(2).amin(2)).sum())
    print(f"Score-CAM EfficientNet-Lite0 head: {A.shape[1]} channels, {dead} constant on this image")
    ours = sycam.CAM("relu(sum(score * A, k))", model, "head",   # grad-cam's recipe (sycam seeds)
                     options={"max_batch": 32, "score_variant": "gradcam"})
    gc = ScoreCAM(model=model, target_layers=[model.head])
    gc.batch_size = 32
    run_ours = lambda: ours(x, c)  # noqa: E731
    run_gc = lambda: gc(input_tensor=x, targets=[ClassifierOutputTarget(c)])  # noqa: E731
    r = paired(run_gc, run_ours, repeats, warmup=0)
    print(f"  vs grad-cam (batch 32): sycam {r['baseline_ms'] / 1e3:.1f} s, grad-cam {r['method_ms'] / 1e3:.1f} s"
          f" -> sycam {r['ratio']:.2f}x faster")
    if not quick:
        tc = TorchcamScoreCAM(model, target_layer="head", batch_size=32)

        def run_tc():
            model(x)
            return tc(class_idx=c)
        r = paired(run_tc, run_ours, repeats, warmup=0)
        tc.remove_hooks()
        print(f"  vs torchcam (batch 32): sycam {r['baseline_ms'] / 1e3:.1f} s, torchcam {r['method_ms'] / 1e3:.1f} s"
              f" -> sycam {r['ratio']:.2f}x faster")
    print("  peak memory added by one Score-CAM call (MB):")
    for budget in (8, 32, 128):
        cam = sycam.CAM("scorecam", model, "head", options={"max_batch": budget})
        print(f"    sycam max_batch={budget:4d}: {peak_mb(lambda cam=cam: cam(x, c)):7.0f}")
    print(f"    grad-cam batch_size=32: {peak_mb(run_gc):7.0f}  (builds all {A.shape[1]} masked images first)")


def gpnn() -> None:
    try:
        from sycam.evidence import gpnn as g
    except ImportError:
        print("GPNN: not available")
        return
    from skimage import data

    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    image = torch.nn.functional.interpolate(image[None], size=(224, 224), mode="bilinear", antialias=True)[0]
    t0 = time.perf_counter()
    g.gpnn_variations(image, 4, seed=0)
    print(f"GPNN: 4 variations of a 224 px image in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one repeat, no torchcam Score-CAM run")
    ap.add_argument("--only", choices=["ablation", "scorecam", "gpnn"])
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {args.threads} threads")
    if args.only in (None, "ablation"):
        ablation(args.repeats)
    if args.only in (None, "scorecam"):
        scorecam(args.repeats, args.quick)
    if args.only in (None, "gpnn"):
        gpnn()


if __name__ == "__main__":
    main()
