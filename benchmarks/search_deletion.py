"""Deletion as a search objective: one candidate at a time vs batched vs batched + staged (a script).

    .venv/bin/python benchmarks/search_deletion.py [--threads 1] [--images 32] [--steps 20]
        [--enumerated 12] [--fidelity 8,4] [--chunk 8] [--sample 3] [--device cpu] [--quick]

Model: the default pretrained EfficientNet-Lite0 at 224x224, its default layer (head); images:
the default benchmark (or the 6 fallback photos when the data is not fetched); objective:
``deletion`` (RISE deletion AUC, ``--steps`` points, substrate 0: steps - 1 model inputs per
candidate and image plus the 2 endpoints). Candidates: the gradient seeds of the default search
space (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, SSGrad-CAM(++)) -- the search's
first trials -- then the first ``--enumerated`` distinct candidates of the enumerator (sizes 1,
2, ...; equivalence-pruned on 8 probe images, seeds registered first, as the search does).
All arms run in this process on the same evidence, model and images, one after the other:

* **one at a time**: ``Evaluator.score([candidate])`` per candidate on every image, i.e. the
  metric called with one candidate: every call runs its own endpoints. Timed on a sample of
  ``--sample`` candidates (its cost per candidate is the same for every candidate: the same
  number of model inputs); its rate is candidates / second.
* **batched**: ``Evaluator.score(candidates)`` on every image: the masked inputs of many
  candidates in one stream of full model batches, the endpoints once per call, inputs that
  two candidates share (same image, point and pixel set) run once. Seeds and enumerated
  candidates are timed separately (phases of a search).
* **batched + staged**: the enumerated candidates through ``Objectives`` with ``fidelity`` k
  (one arm per k of ``--fidelity``; 8 is ``sycam search``'s default), in chunks of ``--chunk``,
  as the search does: each candidate is scored on k images; the Wilcoxon pruner
  (``search/pruning.py``, p < 0.1, as ``sycam search``) stops one that is significantly worse
  than the incumbent (the best complete candidate so far, the best seed first: the seeds are
  the search's first trials, never pruned, scored in the batched arm), and only the others
  are scored on the remaining images.

The table gives the rate of each arm and the ratio to one at a time, and the model inputs
each arm ran (counted by a wrapper around the model), which says what each factor saved:
shared endpoints (batched without sharing inputs: counted, not run), shared inputs, staging.
Scores of the batched arms are checked against one at a time (the sample) and each other.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sycam.errors import DataError  # noqa: E402
from sycam.metrics import Deletion  # noqa: E402
from sycam.models import load_model  # noqa: E402
from sycam.search import Enumerator, Evaluator, EvidenceSet, SearchSpace  # noqa: E402
from sycam.search.objectives import Objectives, parse_objective  # noqa: E402
from sycam.search.pruning import WilcoxonPruner  # noqa: E402


class Counted(nn.Module):
    """The model, counting the inputs (rows) it is given."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.model(x)


class Ledger(Deletion):
    """Deletion that records, per call, the inputs it would run without sharing and those it ran."""

    calls: list[tuple[int, int, int, int]] = []   # (candidates, images, jobs in all, jobs run)

    def _jobs(self, flat_maps, cnt, n, b):
        jobs, where = super()._jobs(flat_maps, cnt, n, b)
        Ledger.calls.append((n, b, where.numel(), jobs.numel()))
        return jobs, where


class Incumbent:
    """What the Wilcoxon pruner reads from a study: its best trial and direction."""

    def __init__(self, trial, direction):
        self.best_trial, self.direction = trial, direction


def data(bundle, n: int):
    from sycam.data import default_benchmark, fallback_benchmark

    try:
        return default_benchmark(n, bundle=bundle), "default benchmark"
    except DataError:
        return fallback_benchmark(bundle), "fallback photos (run `sycam data fetch` for the default benchmark)"


def enumerated(space: SearchSpace, ev: EvidenceSet, seeds: dict, n: int, probe: int = 8) -> list:
    enum = Enumerator(space, ev.rows(range(min(probe, len(ev)))))
    for name, cand in seeds.items():
        enum.register(name, cand)
    out: list = []
    for chunk in enum.candidates():
        out += chunk
        if len(out) >= n:
            break
    return out[:n]


def clocked(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--enumerated", type=int, default=12)
    ap.add_argument("--fidelity", default="8,4",
                    help="images of the first stage, one staged arm each (8: sycam search's default)")
    ap.add_argument("--chunk", type=int, default=256,
                    help="enumerated candidates per chunk, the incumbent fixed in a chunk (the search's default)")
    ap.add_argument("--sample", type=int, default=3, help="candidates timed one at a time")
    ap.add_argument("--batched", type=int, default=None,
                    help="enumerated candidates in the batched arm (default: all; its cost per candidate "
                         "is the same for every candidate, so a prefix gives its rate)")
    ap.add_argument("--quick", action="store_true", help="8 images, 5 steps, 6 enumerated, fidelity 4 (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.steps, args.enumerated, args.fidelity, args.sample = 8, 5, 6, "4", 2
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    device = torch.device(args.device)

    bundle = load_model()
    model = bundle.model.to(device).eval()
    layer = bundle.default_layer
    batch, source = data(bundle, args.images)
    batch = batch.to(device)
    space = SearchSpace.default()
    ev = EvidenceSet.capture(model, batch, layer, needs=space.evidence_terms)
    seeds = space.seeds()
    enum = enumerated(space, ev, seeds, args.enumerated)
    counted = Counted(model)
    text = f"deletion:steps={args.steps}"
    spec = parse_objective(text)

    def metric() -> Ledger:
        return Ledger(steps=args.steps)

    b = len(ev)
    print(f"{b} images ({source}), layer {layer}, {args.threads} thread(s), device {device}, "
          f"torch {torch.__version__}; deletion with {args.steps} steps: {args.steps - 1} inputs per candidate "
          "and image + 2 endpoints")
    print(f"candidates: {len(seeds)} seeds ({', '.join(seeds)}) then {len(enum)} enumerated "
          f"(sizes {enum[0].size}-{enum[-1].size})")

    def run(label, fn):
        Ledger.calls.clear()
        counted.rows = 0
        out, secs, cpu = clocked(fn)
        calls = list(Ledger.calls)
        return {"label": label, "out": out, "s": secs, "cpu": cpu, "rows": counted.rows,
                "rows_unshared": sum(2 * cb + total for _, cb, total, _ in calls), "calls": len(calls)}

    def evaluator():
        return Evaluator(ev, space, metric(), model_fn=counted, row_block=b)

    # ---- one at a time, on a sample of the candidates (every candidate costs the same inputs)
    enum_batched = enum[:args.batched] if args.batched else enum
    pool = [*seeds.values(), *enum_batched]
    step = max(1, len(pool) // args.sample)
    sample = [pool[i] for i in range(0, len(pool), step)][:args.sample]
    alone = run("one at a time", lambda: torch.cat([evaluator().score([c]).value for c in sample]))
    # ---- batched: the seeds, then the enumerated candidates (one call per chunk of maps that fits)
    seeds_b = run("batched seeds", lambda: evaluator().score(list(seeds.values())).value)
    enum_b = run("batched enumerated", lambda: evaluator().score(enum_batched).value)

    # ---- batched + staged: the seeds' scores (batched above) make the first incumbent (seeds are
    # the search's first trials, never pruned), then the enumerated candidates in chunks, pruned
    # against the best so far
    pruner = WilcoxonPruner(p_threshold=0.1)
    direction = optuna_direction(spec.direction)
    sign = 1.0 if spec.direction == "maximize" else -1.0
    seed_values = seeds_b["out"]

    def staged(fidelity: int):
        objectives = Objectives([spec], ev, space, fidelity=fidelity, resources={"model_fn": counted})
        objectives.evaluators[objectives.first].metric = metric()
        top = int(torch.argmax(sign * seed_values.mean(1)))
        best = (float(seed_values[top].mean()), {r: float(seed_values[top, r]) for r in range(fidelity)})
        outs = []
        for i in range(0, len(enum), args.chunk):
            incumbent = Incumbent(as_trial(best[1], best[0]), direction)

            def prune(steps, incumbent=incumbent):
                return bool(pruner.prune(incumbent, as_trial(steps)))
            outs += objectives.evaluate(enum[i:i + args.chunk], prune)
            for o in outs:
                if o.status == "complete" and sign * o.values[0] > sign * best[0]:
                    best = (o.values[0], o.steps)
        return outs

    fidelities = [int(f) for f in str(args.fidelity).split(",")]
    staged_runs = {k: run(f"staged k={k}", lambda k=k: staged(k)) for k in fidelities}

    # ---- the same scores, whichever way they were computed
    full_enum = enum_b["out"].mean(1)
    sample_batched = torch.cat([seeds_b["out"], enum_b["out"]])[[pool.index(c) for c in sample]]
    diff_alone = float((alone["out"] - sample_batched).abs().max())
    diff_staged = max([abs(o.values[0] - float(full_enum[j])) for r in staged_runs.values()
                       for j, o in enumerate(r["out"][:len(enum_batched)]) if o.status == "complete"],
                      default=0.0)

    rate_alone = len(sample) / alone["s"]
    cpu_alone = len(sample) / alone["cpu"]
    rows_alone = alone["rows"] / len(sample)
    print(f"\none at a time: {len(sample)} candidates timed, {rows_alone:.0f} model inputs each "
          f"({alone['s'] / len(sample) / rows_alone * 1e3:.1f} ms per input)")
    print(f"scores: batched vs one at a time max |diff| {diff_alone:.2e}; staged (complete) vs batched "
          f"{diff_staged:.2e}")
    for k, r in staged_runs.items():
        pruned = sum(o.status == "pruned" for o in r["out"])
        print(f"staged k={k}: {pruned} of {len(enum)} enumerated candidates pruned after {k} of {b} images")
    head = (f"{'arm':<40}{'cands':>6}{'s':>9}{'cand/s':>9}{'ratio':>8}{'cpu ratio':>10}{'inputs':>9}"
            f"{'no sharing':>12}{'ms/input':>10}")
    print("\n" + head + "\n" + "-" * len(head))

    def line(label, n, r):
        rate = n / r["s"]
        cpu = n / r["cpu"] / cpu_alone
        print(f"{label:<40}{n:>6}{r['s']:>9.1f}{rate:>9.4f}{rate / rate_alone:>7.2f}x{cpu:>9.2f}x{r['rows']:>9}"
              f"{r['rows_unshared'] or n * rows_alone:>12.0f}{r['s'] / max(r['rows'], 1) * 1e3:>10.1f}")

    def plus(r1, r2):
        return {k: r1[k] + r2[k] for k in ("s", "cpu", "rows", "rows_unshared")}

    line("one at a time (sample)", len(sample), alone)
    line("batched: seeds", len(seeds), seeds_b)
    line("batched: enumerated", len(enum_batched), enum_b)
    for k, r in staged_runs.items():
        line(f"batched + staged k={k}: enumerated", len(enum), r)
    line("batched: seeds + enumerated", len(pool), plus(seeds_b, enum_b))
    for k, r in staged_runs.items():
        line(f"seeds batched, enumerated staged k={k}", len(seeds) + len(enum), plus(seeds_b, r))
    print("\nratio: candidates per second over one at a time's (wall clock); cpu ratio: the same in this "
          "process's CPU time (less sensitive to other processes on a shared machine)")
    print("inputs: model inputs run; no sharing: what the same calls would run without shared inputs "
          f"(endpoints still once per call); one at a time runs {rows_alone:.0f} inputs per candidate "
          "(its endpoints in every call)")
    print("factors, in model inputs per candidate: "
          + "; ".join(f"{name}: endpoints once per call {rows_alone / (r['rows_unshared'] / n):.2f}x, "
                      f"shared inputs {r['rows_unshared'] / max(r['rows'], 1):.2f}x"
                      for name, n, r in (("seeds", len(seeds), seeds_b), ("enumerated", len(enum_batched), enum_b)))
          + "".join(f"; staging k={k} (enumerated) "
                    f"{(enum_b['rows'] / len(enum_batched)) / max(r['rows'] / len(enum), 1):.2f}x"
                    for k, r in staged_runs.items()))


def optuna_direction(text: str):
    from optuna.study import StudyDirection

    return StudyDirection.MAXIMIZE if text == "maximize" else StudyDirection.MINIMIZE


def as_trial(steps: dict[int, float], value: float = 0.0):
    from optuna.trial import TrialState, create_trial

    return create_trial(state=TrialState.COMPLETE, value=value, intermediate_values=steps)


if __name__ == "__main__":
    main()
