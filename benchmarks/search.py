"""Candidate throughput of the search from cached evidence vs the naive loop (a script, not a test).

    .venv/bin/python benchmarks/search.py [--threads 1] [--quick] [--layer head] [--images 32] [--candidates 1000]

Model: the default pretrained EfficientNet-Lite0 at 224x224 (CPU); images: the default
benchmark (or the 6 fallback photos when the data is not fetched); candidates: the first N
distinct candidates the enumerator yields (sizes 1, 2, 3, ... in order) from two spaces over
A, G, G2, G3 with the default operators: SyCAM's channel weights w (map relu(sum_k w A_k), the
maps of all candidates in one batched product) and the default weight maps W (b, k, h, w)
(map relu(sum_k W A), one full-size tensor per candidate). Metrics: pointing game and energy
pointing game (forward-free).

* **cached**: evidence captured once for all images (one forward + backward per chunk of
  images, timed separately and amortised in the last column), then
  ``Evaluator.score(candidates)`` on every image (cold memo): all the candidates' distinct
  sub-terms computed once per block of images (``sycam.kernels.blocks.BlockMemo``: one torch
  call per sub-term and block, no Python per candidate and image; channels innermost in
  memory), each candidate's map formed in the same pass (channel weights of all candidates in
  one batched product, a weight map's sum over k in place), the metric batched over
  candidates and images at feature resolution.
* **naive**: what one does with a CAM library in a loop: for each candidate and each image,
  a ``sycam.CAM`` of the candidate's heatmap expression runs the model forward and backward
  on that image, then the metric scores the map. **grad-cam**: the same loop with
  pytorch-grad-cam (a ``BaseCAM`` subclass whose ``get_cam_image`` evaluates the candidate on
  grad-cam's numpy activations and gradients), i.e. the issue's "grad-cam in a loop". It is far too slow to run on every
  candidate: it runs on a sample of candidates x images, alternating with the cached runs
  (rounds), and its time per candidate-image is extrapolated.

The table reports, per metric, the median over rounds of candidates/s and candidate-images/s
and the ratio cached / naive of candidate-images per second, measured in this process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sycam.api import CAM  # noqa: E402
from sycam.errors import DataError  # noqa: E402
from sycam.evidence.layers import resolve_layer  # noqa: E402
from sycam.metrics import get_metric  # noqa: E402
from sycam.models import load_model  # noqa: E402
from sycam.search import Enumerator, Evaluator, EvidenceSet, SearchSpace  # noqa: E402

METRICS = ("pointing_game", "energy_pointing_game")


def data(bundle, n: int):
    from sycam.data import default_benchmark, fallback_benchmark

    try:
        return default_benchmark(n, bundle=bundle), "default benchmark"
    except DataError:
        return fallback_benchmark(bundle), "fallback photos (run `sycam data fetch` for the default benchmark)"


def candidates(space: SearchSpace, ev: EvidenceSet, n: int) -> tuple[list, float]:
    t0 = time.perf_counter()
    enum = Enumerator(space, ev.rows(range(min(2, len(ev)))), sympy="off", memory_bytes=2 << 30)
    out = []
    for chunk in enum.candidates():
        out += chunk
        if len(out) >= n:
            break
    return out[:n], time.perf_counter() - t0


def naive(explainers, batch, metric, images) -> float:
    """Seconds per candidate-image of the per-candidate, per-image loop: ``explainers`` yields one
    function image index -> map per candidate (built inside the timed loop, as a user would)."""
    t0 = time.perf_counter()
    count = 0
    for explain in explainers:
        for i in images:
            metric(explain(i), batch[[i]])
            count += 1
    return (time.perf_counter() - t0) / count


def sycam_explainers(model, layer, batch, cands, space):
    """A ``sycam.CAM`` of each candidate's heatmap expression (forward + backward per image)."""
    for c in cands:
        cam = CAM(space.heatmap(c), model, layers=layer)
        yield lambda i, cam=cam: cam(batch.x[i:i + 1], targets=batch.labels[i:i + 1])


def gradcam_explainers(model, layer_module, batch, cands, space):
    """The same with pytorch-grad-cam: a BaseCAM whose map is the candidate's heatmap
    expression evaluated on grad-cam's (numpy) activations and gradients."""
    from pytorch_grad_cam.base_cam import BaseCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from sycam.evidence.terminals import TERMINALS
    from sycam.kernels import compile_expression, to_layout

    class ExpressionCAM(BaseCAM):
        def __init__(self, program):
            super().__init__(model, [layer_module])
            self.program = program

        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False):
            a, g = torch.from_numpy(activations), torch.from_numpy(grads)
            values = {"A": a, "G": g, "G2": g ** 2, "G3": g ** 3}
            raw = self.program({k: to_layout(v, "bkhw") for k, v in values.items()})[0]
            return raw.reshape(a.shape[0], *a.shape[2:]).numpy()

    for c in cands:
        cam = ExpressionCAM(compile_expression(space.heatmap(c), TERMINALS))
        yield lambda i, cam=cam: torch.from_numpy(cam(batch.x[i:i + 1],
                                                      targets=[ClassifierOutputTarget(int(batch.labels[i]))]))
        cam.activations_and_grads.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer images, candidates and rounds")
    ap.add_argument("--layer", default=None, help="default: the model's default layer (head)")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--candidates", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    n_images = args.images or (16 if args.quick else 32)
    n_cands = args.candidates or (300 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 3)
    naive_c, naive_i = (2, 2) if args.quick else (4, 4)

    bundle = load_model()
    layer = args.layer or bundle.default_layer
    batch, source = data(bundle, n_images)
    default = SearchSpace.default()
    t0 = time.perf_counter()
    ev = EvidenceSet.capture(bundle.model, batch, layer, needs=default.evidence_terms)
    module = resolve_layer(bundle.model, layer).module
    capture_s = time.perf_counter() - t0
    print(f"{len(batch)} images ({source}), layer {layer} {tuple(ev.layers[layer]['A'].shape[3:])}, "
          f"{args.threads} thread(s), torch {torch.__version__}; evidence capture (once): {capture_s:.2f} s")
    images = list(range(0, len(batch), max(1, len(batch) // naive_i)))[:naive_i]
    rows = []
    for result in ("weights", "weight_maps"):
        space = default.replace(result=result)
        cands, enum_s = candidates(space, ev, n_cands)
        print(f"{result}: enumeration of {len(cands)} distinct candidates (sizes {cands[0].size}-{cands[-1].size}) "
              f"on 2 probe images: {enum_s:.2f} s")
        step = max(1, len(cands) // naive_c)
        sample = cands[::step][:naive_c]
        for name in METRICS:
            metric = get_metric(name)
            cached_s, naive_s, gc_s = [], [], []
            for _ in range(rounds):
                ours = sycam_explainers(bundle.model, layer, batch, sample, space)
                naive_s.append(naive(ours, batch, metric, images))
                peers = gradcam_explainers(bundle.model, module, batch, sample, space)
                gc_s.append(naive(peers, batch, metric, images))
                evaluator = Evaluator(ev, space, metric)          # a cold memo every round
                t1 = time.perf_counter()
                evaluator.score(cands)
                cached_s.append(time.perf_counter() - t1)
            c = statistics.median(cached_s)
            per_ci_naive = statistics.median(naive_s)
            ci = len(cands) * len(batch)
            cached_rate = ci / c
            amortised = ci / (c + capture_s)
            per_ci_gc = statistics.median(gc_s)
            rows.append((result, name, len(cands) / c, cached_rate, amortised, 1 / per_ci_naive,
                         cached_rate * per_ci_naive, amortised * per_ci_naive, 1 / per_ci_gc,
                         cached_rate * per_ci_gc, amortised * per_ci_gc))
    print(f"\nnaive loop sampled on {naive_c} candidates x {len(images)} images per round, {rounds} rounds; "
          "cached: all candidates x all images, cold memo; (+capture): the evidence capture counted too")
    head = (f"{'space':<12}{'metric':<22}{'cached cand/s':>14}{'cand-img/s':>12}{'(+capture)':>12}"
            f"{'naive cand-img/s':>18}{'ratio':>9}{'(+capture)':>12}"
            f"{'grad-cam cand-img/s':>21}{'ratio':>9}{'(+capture)':>12}")
    print(head)
    print("-" * len(head))
    for result, name, cps, cips, amort, nips, ratio, ratio_amort, gips, gratio, gratio_amort in rows:
        print(f"{result:<12}{name:<22}{cps:>14.0f}{cips:>12.0f}{amort:>12.0f}{nips:>18.2f}{ratio:>8.0f}x"
              f"{ratio_amort:>11.0f}x{gips:>21.2f}{gratio:>8.0f}x{gratio_amort:>11.0f}x")


if __name__ == "__main__":
    main()
