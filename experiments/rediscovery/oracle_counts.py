"""Counts of terms and candidates before and after each oracle, per size, on the default space.

    .venv/bin/python experiments/rediscovery/oracle_counts.py --layer blocks.15 --max-size 6 \
        --out experiments/rediscovery/oracle_counts_blocks15.json

Default space (weight maps over A, G, G2, G3; + - * / relu abs sum:hw mean:hw max:hw;
constants 1, 2), the real default model, the first ``--probe`` images of the default
benchmark as probe images. Terms: generated (well-typed, within bounds, cheap syntactic
rules) -> new sympy form -> valid (finite, not constant) -> new probe value (the bank).
Candidates: generated -> new term with a new candidate form -> new normalised heatmap.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sycam.data import default_benchmark  # noqa: E402
from sycam.models import load_model  # noqa: E402
from sycam.search import Enumerator, EvidenceSet, SearchSpace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", default="blocks.15")
    ap.add_argument("--max-size", type=int, default=6)
    ap.add_argument("--probe", type=int, default=4)
    ap.add_argument("--sympy", default="before", choices=["before", "after", "off"])
    ap.add_argument("--memory-gb", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_model()
    batch = default_benchmark(max(2, args.probe), bundle=bundle)[: args.probe]
    space = SearchSpace.default().replace(max_size=args.max_size)
    ev = EvidenceSet.capture(bundle.model, batch, args.layer, needs=space.evidence_terms)
    enum = Enumerator(space, ev, sympy=args.sympy, memory_bytes=int(args.memory_gb * (1 << 30)))
    for name, cand in SearchSpace.default().seeds().items():    # all gradient seeds, whatever --max-size
        enum.register(name, cand)
    t0 = time.perf_counter()
    n = sum(len(chunk) for chunk in enum.candidates())
    seconds = time.perf_counter() - t0
    cols = ["size", "generated", "sympy", "valid", "observational", "candidates", "candidates_sympy",
            "candidates_observational", "seconds"]
    print(f"layer {args.layer}, {args.probe} probe images, sympy {args.sympy}: {n} distinct candidates in "
          f"{seconds:.1f} s ({enum.stop_reason}); seeds equal on the probe to a smaller expression: "
          f"{enum.describe_equivalences() or 'none'}")
    widths = [max(8, len(c) + 2) for c in cols]
    print("".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
    for row in enum.count_table():
        print("".join(f"{row[c]:>{w}.2f}" if c == "seconds" else f"{row[c]:>{w}}" for c, w in zip(cols, widths)))
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "layer": args.layer, "probe": args.probe,
                                        "sympy": args.sympy, "space": space.to_dict(), "seconds": seconds,
                                        "stop_reason": enum.stop_reason, "distinct_candidates": n,
                                        "equivalent_seeds": enum.describe_equivalences(),
                                        "counts": enum.count_table()}, indent=1))


if __name__ == "__main__":
    main()
