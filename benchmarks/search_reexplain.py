"""Cost per candidate of the search's re-explaining objectives vs energy pointing game (a script, not a test).

    .venv/bin/python benchmarks/search_reexplain.py [--threads 1] [--images 32] [--candidates 256] [--samples 4]

Model: the default pretrained EfficientNet-Lite0 at 224x224, its default layer (``head``);
images: the default benchmark (or the fallback photos when the data is not fetched);
candidates: the first N distinct candidates the enumerator yields in the channel-weights space
and in the default weight-map space. Per metric, a fresh :class:`~sycam.search.evaluate.Evaluator`
(cold memo) scores all candidates on all images; for noise_robustness (T = ``--samples`` noisy
copies) and equivariance_flip (T = 1 flipped copy) a fresh
:class:`~sycam.search.reexplain.Reexplainer` first captures the evidence of the copies (timed
apart: once per image set, as the search's seed chunk does), then every candidate is evaluated
on cached evidence (Pearson at feature resolution). The target: per candidate at most
(1 + T) x the cost of energy pointing game; the table prints the ratio to that bound.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sycam.models import load_model  # noqa: E402
from sycam.search import Evaluator, EvidenceSet, SearchSpace  # noqa: E402
from sycam.search.reexplain import Reexplainer  # noqa: E402

_spec = importlib.util.spec_from_file_location("search_benchmark", Path(__file__).with_name("search.py"))
search_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search_benchmark)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--candidates", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4, help="noisy copies T of noise_robustness")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    bundle = load_model()
    model = bundle.model.to(device).eval()
    layer = bundle.default_layer
    batch, source = search_benchmark.data(bundle, args.images)
    batch = batch.to(device)
    default = SearchSpace.default()
    t0 = time.perf_counter()
    ev = EvidenceSet.capture(model, batch, layer, needs=default.evidence_terms)
    print(f"{len(batch)} images ({source}), layer {layer} {tuple(ev.layers[layer]['A'].shape[3:])}, "
          f"{args.threads} thread(s), {device}, torch {torch.__version__}; "
          f"evidence capture of the images: {time.perf_counter() - t0:.2f} s")
    metrics = [("energy_pointing_game", {}, 0), ("noise_robustness", {"samples": args.samples}, args.samples),
               ("equivariance_flip", {}, 1)]
    rows = []
    for result in ("weights", "weight_maps"):
        space = default.replace(result=result)
        cands, enum_s = search_benchmark.candidates(space, ev, args.candidates)
        print(f"{result}: {len(cands)} candidates (sizes {cands[0].size}-{cands[-1].size}), enumerated in {enum_s:.1f} s")
        per: dict[str, float] = {}
        for name, params, t in metrics:
            runs, captures = [], []
            for _ in range(args.rounds):
                rx = Reexplainer(model, [layer], space.evidence_terms, relu=space.relu)
                resources = {"model_fn": model, "model": model, "reexplainer": rx} if t else {}
                # the search scores the working images in one block (search.objectives.Objectives)
                e = Evaluator(ev, space, name, metric_params=params, row_block=len(ev) if t else None, **resources)
                captures.append(timed(lambda e=e: e.score(cands[:1])) if t else 0.0)   # the seed chunk: captures
                e = Evaluator(ev, space, e.metric, row_block=len(ev) if t else None, **resources)   # cold memo
                runs.append(timed(lambda e=e: e.score(cands)))
            per[name] = statistics.median(runs) / len(cands)
            bound = (1 + t) * per["energy_pointing_game"]
            rows.append((result, name, t, per[name] * 1e3, statistics.median(captures), per[name] / bound))
    print(f"\nmedian of {args.rounds} rounds; cost = seconds per candidate on all {len(batch)} images, cold memo; "
          "capture: the copies' evidence (once per image set)")
    head = f"{'space':<12}{'metric':<22}{'T':>3}{'ms/candidate':>14}{'capture s':>11}{'/ ((1+T) x EPG)':>17}"
    print(head)
    print("-" * len(head))
    for result, name, t, ms, cap, ratio in rows:
        print(f"{result:<12}{name:<22}{t:>3}{ms:>14.3f}{cap:>11.2f}{ratio:>17.2f}")


if __name__ == "__main__":
    main()
