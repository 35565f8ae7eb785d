"""Gradient CAMs: sycam vs the floor and vs pytorch-grad-cam, measured side by side.

The floor is what any gradient CAM must pay: one forward and ``torch.autograd.grad`` of
the target score to the layer's output. For each model (random-weight resnet18, resnet50,
vgg16, vit_b_16 and swin_t, and the pretrained EfficientNet-Lite0) and method, the script
alternates floor/sycam and sycam/grad-cam runs and prints median per-pair ratios:

  x floor     sycam time / floor time          (target: <= 1.10)
  speed-up    grad-cam time / sycam time       (target: >= 2 on resnet50)

    python benchmarks/gradient_cams.py [--threads 2] [--repeats 7] [--quick] [--json out.json]

The transformers are explained at their last block's first norm, a token layer: sycam reshapes
it by itself, grad-cam gets its tutorial's ``reshape_transform``; the floor differentiates to the
tokens (the reshape of A and G is part of what sycam pays).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from _timing import paired  # noqa: E402

import sycam  # noqa: E402
from sycam.evidence.layers import resolve_layer  # noqa: E402

METHODS = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam"]
MODELS = {"resnet18": "layer4", "resnet50": "layer4", "vgg16": "features.29", "efficientnet-lite0": "head",
          "vit_b_16": "encoder.layers.encoder_layer_11.ln_1", "swin_t": "features.7.1.norm1"}


def vit_recipe(t):
    """grad-cam's ViT tutorial: the class token dropped, tokens -> (b, c, 14, 14)."""
    return t[:, 1:, :].reshape(t.size(0), 14, 14, t.size(2)).permute(0, 3, 1, 2)


#: grad-cam's reshape_transform for the token layers
RECIPES = {"vit_b_16": vit_recipe, "swin_t": lambda t: t.permute(0, 3, 1, 2)}


def build(name: str):
    if name == "efficientnet-lite0" or name in RECIPES:   # sycam draws ViT's zero-initialised head
        from sycam.models import load_model
        return load_model(name).model
    return getattr(torchvision.models, name)().eval()


def floor_fn(model, module, x, c):
    def run():
        store = {}
        handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        try:
            with torch.enable_grad():
                out = model(x)
                torch.autograd.grad(out[:, c].sum(), store["a"])
        finally:
            handle.remove()
    return run


def gradcam_peer(method: str, model, module, reshape=None):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": pgc.GradCAM, "gradcampp": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
           "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM}[method]
    cam = cls(model=model, target_layers=[module], reshape_transform=reshape)
    return lambda x, c: cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--quick", action="store_true", help="3 repeats, resnet18 and resnet50 only")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.models = 3, ["resnet18", "resnet50"]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, 224x224, "
          f"median of {args.repeats} paired runs")
    print(f"{'model':20s} {'method':10s} {'floor ms':>9s} {'sycam ms':>9s} {'x floor':>8s} "
          f"{'grad-cam ms':>12s} {'speed-up':>9s}")
    for name in args.models:
        model = build(name)
        layer = MODELS[name]
        module = resolve_layer(model, layer).module
        x = torch.randn(args.batch, 3, 224, 224)
        c = 1
        floor = floor_fn(model, module, x, c)
        for method in args.methods:
            cam = sycam.CAM(method, model, layer)
            ours = lambda cam=cam, x=x, c=c: cam(x, c)  # noqa: E731
            peer = gradcam_peer(method, model, module, RECIPES.get(name))
            theirs = lambda peer=peer, x=x, c=c: peer(x, c)  # noqa: E731
            vs_floor = paired(ours, floor, args.repeats)
            vs_peer = paired(theirs, ours, args.repeats)
            row = {"model": name, "layer": layer, "method": method, "floor_ms": vs_floor["baseline_ms"],
                   "sycam_ms": vs_floor["method_ms"], "x_floor": vs_floor["ratio"],
                   "gradcam_ms": vs_peer["method_ms"], "speedup_vs_gradcam": vs_peer["ratio"]}
            rows.append(row)
            print(f"{name:20s} {method:10s} {row['floor_ms']:9.1f} {row['sycam_ms']:9.1f} {row['x_floor']:8.2f} "
                  f"{row['gradcam_ms']:12.1f} {row['speedup_vs_gradcam']:9.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "batch": args.batch, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
