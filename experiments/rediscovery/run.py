"""Rediscovery on the real default model: can the enumerative search find an expression whose
maps match those of a known expression it was not given?

For each target expression: target maps are computed through the public CAM path on the
training images; the search (``sycam.search.synthesise``) maximises the ``target_pearson``
metric with a threshold, with the target kept out of the seeds; the expression it finds is
then run through the public CAM path on held-out images and compared with the target there.

    .venv/bin/python experiments/rediscovery/run.py --layer blocks.15 --seconds 300 \
        --out experiments/rediscovery/results_blocks15.json

Writes a JSON file (one record per target and protocol) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sycam.data import default_benchmark, split  # noqa: E402
from sycam.grammar import parse  # noqa: E402
from sycam.grammar.printer import to_text  # noqa: E402
from sycam.models import load_model  # noqa: E402
from sycam.search import Budget, EvidenceSet, SearchSpace, pearson_to, reference_maps, synthesise  # noqa: E402

TARGETS = {
    "gradcampp": "gradcampp",
    "xgradcam": "xgradcam",
    # invented (not seeds); sizes of the weight expressions: 7 and 10
    "relu_g_a_over_max_a": "relu(sum(relu(G) * A / max(A, hw) * A, k))",
    "g2a_over_abs_g": "relu(sum(sum(G2 * A, hw) / (sum(abs(G), hw) + 1) * A, k))",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", default="blocks.15")
    ap.add_argument("--images", type=int, default=64, help="benchmark rows (a quarter held out)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--protocols", default="seeds,noseeds",
                    help="seeds: all gradient seeds except the target; noseeds: enumeration only")
    ap.add_argument("--seconds", type=float, default=300, help="budget per search")
    ap.add_argument("--threshold", type=float, default=0.99)
    ap.add_argument("--mode", default="mean", choices=["mean", "each"])
    ap.add_argument("--operators", default="+,-,*,/,relu,abs,sum:hw,mean:hw,max:hw")
    ap.add_argument("--terminals", default="A,G,G2,G3")
    ap.add_argument("--constants", default="1,2")
    ap.add_argument("--max-size", type=int, default=11)
    ap.add_argument("--sympy", default="off", choices=["before", "after", "off"])
    ap.add_argument("--probe", type=int, default=None, help="probe images (default: the working images)")
    ap.add_argument("--memory-gb", type=float, default=2.0, help="enumerator memory budget")
    ap.add_argument("--working", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    space = SearchSpace(operators=args.operators, terminals=args.terminals, constants=args.constants,
                        max_size=args.max_size, result="weight_maps")
    t0 = time.perf_counter()
    bundle = load_model()
    data = default_benchmark(args.images, bundle=bundle)
    train, held = split(data, held_out=0.25, seed=0)
    model = bundle.model
    ev = EvidenceSet.capture(model, train, args.layer, needs=space.evidence_terms)
    setup_s = time.perf_counter() - t0
    print(f"{len(train)} training / {len(held)} held-out images, layer {args.layer}; model, data and evidence "
          f"in {setup_s:.1f} s; space: {space.describe()}", flush=True)

    records = []
    for name in args.targets.split(","):
        target = TARGETS.get(name, name)
        ref_train = reference_maps(target, model, train.x, args.layer, train.labels)
        ref_held = reference_maps(target, model, held.x, args.layer, held.labels)
        target_tree = parse(target) if "(" in target else None
        for protocol in args.protocols.split(","):
            seeds = protocol == "seeds"
            exclude = [target] if (seeds and target_tree is None) else (
                [space.candidate(target_tree)] if seeds else [])
            t1 = time.perf_counter()
            r = synthesise(space, ev, "target_pearson", metric_params={"reference": ref_train, "images": train.x,
                                                                "labels": train.labels},
                           threshold=args.threshold, mode=args.mode, seeds=seeds, exclude=exclude,
                           sympy=args.sympy, probe=args.probe, working=args.working,
                           budget=Budget(seconds=args.seconds, memory_bytes=int(args.memory_gb * (1 << 30))))
            search_s = time.perf_counter() - t1
            found = r.accepted[0] if r.accepted else r.best
            held_r = None
            if found is not None:
                maps = reference_maps(space.heatmap(found.expr), model, held.x, args.layer, held.labels)
                held_r = pearson_to(maps, ref_held)
            rec = {
                "target": name, "target_expression": target if target_tree else to_text(
                    __import__("sycam.methods.seeds", fromlist=["SEEDS"]).SEEDS[target].tree),
                "protocol": protocol, "layer": args.layer, "found": r.found,
                "expression": found.text if found else None, "source": found.source if found else None,
                "size": found.expr.size if found else None,
                "train_pearson_mean": found.score if found else None,
                "held_out_pearson_mean": float(held_r.mean()) if held_r is not None else None,
                "held_out_pearson_min": float(held_r.min()) if held_r is not None else None,
                "seconds": round(search_s, 2), "budget_seconds": args.seconds, "stop_reason": r.stop_reason,
                "candidates_scored": r.scored, "candidate_images": r.candidate_images,
                "seeds": {k: round(v, 4) for k, v in r.seeds.items()}, "equivalent": r.equivalent,
                "working_set": len(r.working), "counts": r.counts,
            }
            records.append(rec)
            print(f"{name:>22} {protocol:>8}: {rec['expression']}  train {rec['train_pearson_mean']}  "
                  f"held-out mean {rec['held_out_pearson_mean']} min {rec['held_out_pearson_min']}  "
                  f"{search_s:.1f} s, {r.scored} candidates ({r.stop_reason})", flush=True)
    meta = {"command": " ".join(sys.argv), "layer": args.layer, "train_images": len(train),
            "held_out_images": len(held), "space": space.to_dict(), "threshold": args.threshold,
            "mode": args.mode, "sympy": args.sympy, "probe": args.probe, "working": args.working,
            "memory_gb": args.memory_gb, "setup_seconds": round(setup_s, 1),
            "torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
            "processor_count": __import__("os").cpu_count()}
    args.out.write_text(json.dumps({"meta": meta, "results": records}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
