"""Rediscovery on the real default model: can the enumerative search find an expression whose
maps match those of a known expression it was not given?

For each target expression: target maps are computed through the public CAM path on the
training images; the search (``sycam.search.run``, enumeration with a threshold and
``stop="first"``) maximises the ``target_pearson`` metric, with the target kept out of the
seeds; the expression it finds is then run through the public CAM path on held-out images and
compared with the target there.

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
from sycam.metrics import get_metric  # noqa: E402
from sycam.models import load_model  # noqa: E402
from sycam.search import (  # noqa: E402
    EvidenceSet,
    Options,
    Problem,
    SearchSpace,
    pearson_to,
    reference_maps,
    run,
)
from sycam.search.ledger import info  # noqa: E402

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
    ap.add_argument("--operators", default="+,-,*,/,relu,abs,sum:hw,mean:hw,max:hw")
    ap.add_argument("--terminals", default="A,G,G2,G3")
    ap.add_argument("--constants", default="1,2")
    ap.add_argument("--max-size", type=int, default=11)
    ap.add_argument("--sympy", default="off", choices=["before", "after", "off"])
    ap.add_argument("--probe", type=int, default=8, help="images the enumerator's equivalence oracle compares on")
    ap.add_argument("--working", type=int, default=4, help="initial working subset (counterexamples join it)")
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
            metric = get_metric("target_pearson", reference=ref_train, images=train.x, labels=train.labels)
            job = Problem(model, [args.layer], train, held, space=space, objectives=[metric],
                          seeds=space.seeds(None, exclude) if seeds else {}, evidence=ev,
                          study=f"{name}-{protocol}")
            r = run(job, Options(strategy="enumerate", budget=None, seconds=args.seconds, threshold=args.threshold,
                                 stop="first", fidelity=args.working, probe=args.probe, sympy=args.sympy))
            search_s = time.perf_counter() - t1
            found = r.best
            held_r = None
            if found is not None:
                maps = reference_maps(space.heatmap(found.expr), model, held.x, args.layer, held.labels)
                held_r = pearson_to(maps, ref_held)
            seed_scores = {info(t).get("seed"): t.values[0] for t in r.study.get_trials(deepcopy=False)
                           if info(t).get("source") == "seed" and t.values}
            rec = {
                "target": name, "target_expression": target if target_tree else to_text(
                    __import__("sycam.methods.seeds", fromlist=["SEEDS"]).SEEDS[target].tree),
                "protocol": protocol, "layer": args.layer, "found": r.found,
                "expression": found.text if found else None, "source": found.source if found else None,
                "size": found.expr.size if found else None,
                "scored_on_every_image": found.complete if found else None,
                "train_pearson_mean": found.values[0] if found else None,
                "held_out_pearson_mean": float(held_r.mean()) if held_r is not None else None,
                "held_out_pearson_min": float(held_r.min()) if held_r is not None else None,
                "seconds": round(search_s, 2), "budget_seconds": args.seconds, "stop_reason": r.summary.reason,
                "candidates_scored": r.summary.evaluated, "pruned_on_working_subset": r.summary.pruned,
                "seeds": {k: round(v, 4) for k, v in seed_scores.items()},
                "working_set": len(r.working), "counterexamples": r.summary.counterexamples,
            }
            records.append(rec)
            print(f"{name:>22} {protocol:>8}: {rec['expression']}  train {rec['train_pearson_mean']}  "
                  f"held-out mean {rec['held_out_pearson_mean']} min {rec['held_out_pearson_min']}  "
                  f"{search_s:.1f} s, {r.summary.evaluated} candidates ({r.summary.reason})", flush=True)
    meta = {"command": " ".join(sys.argv), "layer": args.layer, "train_images": len(train),
            "held_out_images": len(held), "space": space.to_dict(), "threshold": args.threshold,
            "sympy": args.sympy, "probe": args.probe, "working": args.working, "setup_seconds": round(setup_s, 1),
            "torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
            "processor_count": __import__("os").cpu_count()}
    args.out.write_text(json.dumps({"meta": meta, "results": records}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
