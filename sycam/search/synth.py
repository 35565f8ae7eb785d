"""The synthesis loop (SyCAM): seeds, then bottom-up enumeration checked by the two oracles.

    result = synthesise(space, evidence, "pointing_game", budget=Budget(seconds=60))
    result = synthesise(space, evidence, "target_pearson", metric_params={...}, threshold=0.99)

1. The metric, space and evidence are validated before any work (unknown names raise
   :class:`~sycam.errors.UnknownNameError` with close matches).
2. The seed methods inside the space (the gradient seeds, minus ``exclude``) are scored on all
   images; in incumbent mode the best is the first incumbent; every seed is registered with
   the equivalence oracle so the enumerator does not re-score it.
3. :class:`~sycam.search.enumerate.Enumerator` yields distinct candidates by size (probe
   images = the initial working images, or the first ``probe`` of them);
   :class:`~sycam.search.correctness.CorrectnessOracle` scores each chunk on the working images
   (from the probe maps the enumerator already computed, plus counterexample rows through the
   evaluator) and verifies passers on the rest, adding counterexamples to the working set.
4. It stops at the first accepted candidate (``stop="first"``, threshold mode), when the
   space is exhausted, or when the budget (seconds, candidates, memory) is spent.

Progress goes to an optional callback ``progress(SearchEvent)``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import SycamError
from ..evidence.sets import EvidenceSet
from ..grammar.ast import Expr
from ..grammar.printer import to_text
from ..kernels.memo import MiB
from .correctness import Accepted, CorrectnessOracle
from .enumerate import Enumerator, Progress
from .evaluate import Evaluator, Scores
from .space import SearchSpace


@dataclass(frozen=True)
class Budget:
    """Limits of one run: wall-clock seconds, distinct candidates scored, bytes of memory
    (enumerator bank + its value cache; the evaluator's memo has ``memo_bytes`` besides)."""

    seconds: float | None = 60.0
    candidates: int | None = None
    memory_bytes: int = 512 * MiB
    memo_bytes: int = 256 * MiB

    def __post_init__(self):
        if self.seconds is not None and not self.seconds > 0:
            raise SycamError(f"budget seconds must be > 0, not {self.seconds}")
        if self.candidates is not None and self.candidates < 1:
            raise SycamError(f"budget candidates must be >= 1, not {self.candidates}")
        if self.memory_bytes < MiB:
            raise SycamError(f"memory budget must be at least 1 MiB, not {self.memory_bytes} bytes")


@dataclass
class SearchEvent:
    """Progress of a run: ``kind`` is "seeds", "level", "chunk", "accepted" or "done"."""

    kind: str
    size: int = 0
    scored: int = 0
    accepted: int = 0
    best: str = ""
    best_score: float = math.nan
    elapsed: float = 0.0
    working: int = 0
    message: str = ""


@dataclass
class Found:
    """A candidate with its score on all the run's images (in the metric's units)."""

    expr: Expr
    score: float
    source: str = "enumerated"     # or the seed's name

    @property
    def text(self) -> str:
        return to_text(self.expr)

    def as_dict(self) -> dict:
        return {"expression": self.text, "score": self.score, "size": self.expr.size, "source": self.source}


@dataclass
class SearchResult:
    """What a run found and what it cost."""

    space: SearchSpace
    metric: str
    higher_is_better: bool
    best: Found | None
    accepted: list[Found]
    seeds: dict[str, float]
    equivalent: dict[str, str]
    counts: list[dict]
    working: list[int]
    counterexamples: list[tuple[int, list[int]]]
    stop_reason: str
    seconds: float
    scored: int
    candidate_images: int
    memory: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.accepted)

    def as_dict(self) -> dict:
        return {"space": self.space.to_dict(), "metric": self.metric, "higher_is_better": self.higher_is_better,
                "best": self.best.as_dict() if self.best else None,
                "accepted": [a.as_dict() for a in self.accepted], "seeds": self.seeds,
                "equivalent": self.equivalent, "counts": self.counts, "working": self.working,
                "counterexamples": [{"after": n, "rows": r} for n, r in self.counterexamples],
                "stop_reason": self.stop_reason, "seconds": self.seconds, "scored": self.scored,
                "candidate_images": self.candidate_images, "memory": self.memory}

    def summary(self) -> str:
        lines = [f"{self.metric}: {self.scored} distinct candidates scored in {self.seconds:.1f} s "
                 f"({self.stop_reason}); working set {len(self.working)} images"]
        if self.best:
            lines.append(f"best: {self.best.text}  ({self.metric} {self.best.score:.4f}, {self.best.source})")
        for name, s in self.seeds.items():
            lines.append(f"seed {name}: {s:.4f}")
        for name, e in self.equivalent.items():
            lines.append(f"seed {name} is equivalent on the probe images to the smaller {e}")
        lines.append("size  generated  sympy  valid  observational | candidates  cand_sympy  distinct  "
                     "scored  passed_working  accepted")
        for c in self.counts:
            lines.append(f"{c['size']:>4}  {c['generated']:>9}  {c['sympy']:>5}  {c['valid']:>5}  "
                         f"{c['observational']:>13} | {c['candidates']:>10}  {c['candidates_sympy']:>10}  "
                         f"{c['candidates_observational']:>8}  {c.get('scored', 0):>6}  "
                         f"{c.get('passed_working', 0):>14}  {c.get('accepted', 0):>8}")
        return "\n".join(lines)


def synthesise(space: SearchSpace, evidence: EvidenceSet, metric, *, metric_params: Mapping[str, Any] | None = None,
               threshold: float | None = None, mode: str = "mean", stop: str = "first",
               probe: int | None = None, working: int | Sequence[int] = 4, add: int = 2,
               seeds: bool | Sequence[str] = True, exclude: Sequence[str | Expr] = (),
               budget: Budget = Budget(), sympy: str = "before", atol: float = 1e-3, chunk: int = 256,
               progress: Callable[[SearchEvent], None] | None = None, **resources: Any) -> SearchResult:
    """Search ``space`` for a candidate that scores well on ``metric`` over the evidence's images.

    ``threshold`` (metric units) with ``mode`` "mean" | "each": accept candidates that reach it
    (``stop="first"`` ends at the first, ``stop="budget"`` keeps going); ``threshold=None``:
    incumbent mode, accept every candidate that beats the best so far. ``seeds``: True for the
    gradient seeds, a list of seed names, or False; ``exclude``: seeds (names or candidate
    expressions) kept out, e.g. the target of a rediscovery.
    """
    t_start = time.perf_counter()
    if stop not in ("first", "budget"):
        raise SycamError(f"stop must be 'first' or 'budget', not {stop!r}")
    evaluator = Evaluator(evidence, space, metric, metric_params=metric_params, memo_bytes=budget.memo_bytes,
                          chunk=chunk, **resources)
    oracle = CorrectnessOracle(evaluator, threshold=threshold, mode=mode, working=working, add=add)
    sign = evaluator.metric.direction.sign
    probe_rows = oracle.working if probe is None else oracle.working[: max(1, int(probe))]
    state = {"best": None, "best_internal": -math.inf, "accepted": [], "scored": 0}

    def emit(kind: str, size: int = 0, message: str = "") -> None:
        if progress is None:
            return
        best = state["best"]
        progress(SearchEvent(kind, size, state["scored"], len(state["accepted"]), best.text if best else "",
                             best.score if best else math.nan, time.perf_counter() - t_start,
                             len(oracle.working), message))

    def consider(expr: Expr, internal_mean: float | None, source: str) -> None:
        if internal_mean is not None and internal_mean > state["best_internal"]:
            state["best_internal"] = internal_mean
            state["best"] = Found(expr, internal_mean * sign, source)

    # ---- seeds
    names = None if seeds is True else ([] if seeds is False else list(seeds))
    seed_cands = space.seeds(names, exclude) if seeds is not False else {}
    seed_scores: dict[str, float] = {}
    enum = Enumerator(space, evidence.rows(probe_rows), memory_bytes=budget.memory_bytes, sympy=sympy,
                      atol=atol, chunk=chunk)
    if seed_cands:
        exprs = list(seed_cands.values())
        s = evaluator.score(exprs)
        for (name, expr), m in zip(seed_cands.items(), s.mean.tolist()):
            seed_scores[name] = m * sign
            consider(expr, m, name)
            enum.register(name, expr)
        if threshold is None:
            i = max(range(len(exprs)), key=lambda j: s.mean[j])
            oracle.incumbent = Accepted(exprs[i], float(s.mean[i]), s.internal[i])
        else:
            for (name, expr), v in zip(seed_cands.items(), oracle.check(exprs)):
                if v.accepted:
                    state["accepted"].append(Found(expr, v.mean * sign, name))
        emit("seeds", message=f"{len(seed_cands)} seeds scored")

    # ---- enumeration
    per_size: dict[int, dict[str, int]] = {}
    stop_reason = ""
    deadline = None if budget.seconds is None else t_start + budget.seconds

    def on_progress(p: Progress) -> None:
        if p.kind == "level":
            emit("level", p.size)

    enum.progress = on_progress
    probe_set = set(probe_rows)

    def working_scores(exprs, maps):
        """Scores on the working images: the probe rows from the enumerator's maps (no
        re-evaluation), any other working rows (counterexamples) through the evaluator."""
        work = list(oracle.working)
        on_probe = evaluator.score_maps(maps, probe_rows)
        extra = [r for r in work if r not in probe_set]
        if not extra:
            return on_probe
        others = evaluator.score(exprs, extra)
        col = {r: ("p", i) for i, r in enumerate(probe_rows)} | {r: ("e", i) for i, r in enumerate(extra)}
        pick = lambda a, b: torch.stack([(a if col[r][0] == "p" else b)[:, col[r][1]] for r in work], 1)  # noqa: E731
        return Scores(pick(on_probe.value, others.value), pick(on_probe.internal, others.internal),
                      pick(on_probe.valid, others.valid), work, on_probe.higher_is_better)
    gen = enum.candidates(deadline=deadline)
    top: list[tuple[float, Expr]] = []      # best candidates on the working images
    try:
        for chunk_exprs in gen:
            size = max(e.size for e in chunk_exprs)
            verdicts = oracle.check(chunk_exprs, working_scores(chunk_exprs, enum.last_maps))
            row = per_size.setdefault(size, {"scored": 0, "passed_working": 0, "accepted": 0})
            for v in verdicts:
                size_row = per_size.setdefault(v.expr.size, {"scored": 0, "passed_working": 0, "accepted": 0})
                size_row["scored"] += 1
                size_row["passed_working"] += v.passed_working
                if v.mean is not None:
                    consider(v.expr, v.mean, "enumerated")
                top.append((v.working_mean, v.expr))
                if v.accepted:
                    size_row["accepted"] += 1
                    state["accepted"].append(Found(v.expr, v.mean * sign, "enumerated"))
                    emit("accepted", v.expr.size, to_text(v.expr))
            del row
            top.sort(key=lambda t: -t[0])
            del top[8:]
            state["scored"] += len(chunk_exprs)
            emit("chunk", size)
            if threshold is not None and stop == "first" and state["accepted"]:
                stop_reason = "found"
                break
            if budget.candidates is not None and state["scored"] >= budget.candidates:
                stop_reason = "candidates"
                break
            if deadline is not None and time.perf_counter() > deadline:
                stop_reason = "time"
                break
        if threshold is not None and stop == "first" and state["accepted"] and not stop_reason:
            stop_reason = "found"
    finally:
        gen.close()
    stop_reason = stop_reason or enum.stop_reason or "exhausted"
    if not state["accepted"] and top:
        # nothing accepted: the best few on the working images, scored on every image
        exprs = [e for _, e in top]
        for e, m in zip(exprs, evaluator.score(exprs).mean.tolist()):
            consider(e, m, "enumerated (best on the working images)")

    counts = []
    for c in enum.count_table():
        c.update(per_size.get(c["size"], {"scored": 0, "passed_working": 0, "accepted": 0}))
        counts.append(c)
    accepted = state["accepted"]
    best = state["best"]
    if threshold is not None and accepted:
        best = max(accepted, key=lambda f: f.score * sign)
    result = SearchResult(
        space, evaluator.metric.name, sign > 0, best, accepted, seed_scores, enum.describe_equivalences(),
        counts, list(oracle.working), list(oracle.history), stop_reason, time.perf_counter() - t_start,
        state["scored"], evaluator.scored,
        {"enumerator_cache": asdict(enum.cache.stats), "enumerator_bookkeeping": enum.bookkeeping_bytes,
         "evaluator_memo": asdict(evaluator.memo_stats), "bank_terms": enum.n_terms,
         "budget_bytes": budget.memory_bytes})
    emit("done", message=stop_reason)
    return result
