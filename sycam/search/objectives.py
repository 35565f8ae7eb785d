"""What a search optimises: one metric, or several (and the expression size), scored in stages.

An objective is written ``name`` or ``name:param=value,...`` (``pointing_game:tolerance=15``);
``size`` is the candidate's number of nodes (minimised). Names are checked when parsed, so a
misspelt metric fails before any model or data work.

:class:`Objectives` scores candidates on the search's images in the search's one staging
scheme. With one objective and ``fidelity`` = k, a candidate is first scored on the
**working subset** (the first k images, plus the counterexamples the search added since,
:func:`counterexamples`); each image's score is an intermediate value for the pruner
(``prune(steps) -> bool``, Optuna's ``WilcoxonPruner`` against the best trial) and only
candidates it keeps are scored on the other images. A candidate whose map is not finite on
some image is *invalid*. All metrics share one value cache and one memo per image subset
(:meth:`~sycam.search.evaluate.Evaluator.with_metric`).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import SycamError
from ..evidence.sets import EvidenceSet
from ..grammar.ast import Expr, complexity
from ..metrics.base import Metric
from ..metrics.registry import get_metric
from .evaluate import Evaluator, Scores
from .reexplain import unsearchable
from .selection import standard_error
from .space import SearchSpace

SIZE = "size"


class ObjectiveError(SycamError, ValueError):
    """An objective that cannot be used (bad syntax, repeated, only ``size``)."""


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: a metric with parameters, or ``size``; or a metric instance (``instance``,
    e.g. ``target_pearson`` with reference maps), recorded in a study's settings by its name."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    instance: Metric | None = field(default=None, compare=False, repr=False)

    @property
    def is_size(self) -> bool:
        return self.name == SIZE

    @property
    def text(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    def metric(self):
        if self.instance is not None:
            return self.instance
        return None if self.is_size else get_metric(self.name, **dict(self.params))

    @property
    def direction(self) -> str:
        """Optuna's direction: ``maximize`` or ``minimize``."""
        if self.is_size:
            return "minimize"
        return "maximize" if self.metric().direction.sign > 0 else "minimize"


_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::(.*))?$")


def parse_objective(text: str) -> ObjectiveSpec:
    m = _SPEC.match(str(text))
    if not m:
        raise ObjectiveError(f"cannot read objective {text!r}: write a metric name, name:param=value,... or size")
    name, rest = m.group(1), m.group(2)
    params: list[tuple[str, Any]] = []
    for item in (rest or "").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ObjectiveError(f"objective {text!r}: parameters are written name=value, not {item.strip()!r}")
        params.append((key.strip(), _value(value)))
    spec = ObjectiveSpec(name, tuple(params))
    if spec.is_size:
        if params:
            raise ObjectiveError("the size objective takes no parameters")
        return spec
    reason = unsearchable(spec.metric())   # UnknownNameError with close matches / bad parameters
    if reason:
        raise ObjectiveError(reason)
    return spec


def as_objective(item: str | ObjectiveSpec | Metric) -> ObjectiveSpec:
    """An objective from a CLI string, a spec or a metric instance."""
    if isinstance(item, ObjectiveSpec):
        return item
    if isinstance(item, Metric):
        if getattr(item, "uses_maps", True) is False:
            raise ObjectiveError(f"metric {item.name!r} does not score maps; the search scores candidate maps")
        return ObjectiveSpec(item.name, instance=item)
    return parse_objective(item)


def parse_objectives(texts: Sequence[str | ObjectiveSpec | Metric] | str) -> list[ObjectiveSpec]:
    """Objectives from CLI strings, specs or metric instances; at least one metric, no repeats."""
    if isinstance(texts, str):
        texts = [texts]
    specs = [as_objective(t) for t in texts]
    if not specs:
        raise ObjectiveError("give at least one metric")
    if all(s.is_size for s in specs):
        raise ObjectiveError("size alone is not an objective: add a metric (e.g. --metric pointing_game --metric size)")
    seen = set()
    for s in specs:
        if s.text in seen:
            raise ObjectiveError(f"objective {s.text!r} is given twice")
        seen.add(s.text)
    return specs


@dataclass
class Outcome:
    """The result of scoring one candidate.

    status: ``complete`` (values set), ``pruned`` (stopped after the working subset) or ``invalid``;
    steps: per-image values of the first objective (image -> value): on the working subset for
    a pruned candidate, on every image for a complete one (empty without multi-fidelity); se: the
    standard error of the first objective's per-image values (what :mod:`sycam.search.selection`
    reads as its default tolerance).
    """

    status: str
    values: list[float] | None = None
    steps: dict[int, float] = field(default_factory=dict)
    images: int = 0
    reason: str = ""
    se: float = math.nan


def _mean_values(scores: Scores, i: int) -> float:
    v = scores.value[i]
    ok = ~torch.isnan(v)
    return float(v[ok].mean()) if bool(ok.any()) else math.nan


def _nanmean(values: Sequence[float]) -> float:
    ok = [v for v in values if not math.isnan(v)]
    return sum(ok) / len(ok) if ok else math.nan


def counterexamples(steps: Mapping[int, float], incumbent: Mapping[int, float] | None, working: Sequence[int], *,
                    sign: float, threshold: float | None = None, add: int = 2) -> list[int]:
    """Images that join the working subset after a complete candidate (CEGIS).

    With per-image scores s (``steps``, every image) and ``sign`` the metric's direction: the
    candidate was *promising* if its mean over the working subset W passed, i.e.
    ``sign * mean_W(s) >= sign * threshold``, or (no threshold) ``sign * mean_W(s) > sign * mean_W(s*)``
    for the incumbent s*; if it then fails on all images, the images outside W where it fails
    (``sign * s_i < sign * threshold``, or ``sign * s_i < sign * s*_i``) are counterexamples,
    worst first, at most ``add`` of them. A candidate that passes everywhere adds none.
    """
    w = [r for r in working if r in steps]
    if not w or add < 1 or (threshold is None and not incumbent):
        return []
    inc = dict(incumbent or {})
    if threshold is None and any(r not in inc for r in w):
        return []

    def passes(rows: Sequence[int]) -> bool:
        mine = sign * _nanmean([steps[r] for r in rows])
        if threshold is not None:
            return mine >= sign * threshold
        return mine > sign * _nanmean([inc[r] for r in rows if r in inc])

    if not passes(w) or passes(list(steps)):
        return []
    ws = set(w)
    gap = {r: sign * (v - (threshold if threshold is not None else inc[r]))
           for r, v in steps.items() if r not in ws and not math.isnan(v) and (threshold is not None or r in inc)}
    failing = sorted((g, r) for r, g in gap.items() if g < 0)
    return [r for _, r in failing[:add]]


class Objectives:
    """Scores candidates of ``space`` on ``evidence`` for every objective (one shared value cache)."""

    def __init__(self, specs: Sequence[ObjectiveSpec], evidence: EvidenceSet, space: SearchSpace, *,
                 fidelity: int = 0, resources: Mapping[str, Any] | None = None, memo_bytes: int = 256 << 20,
                 fusion: str = "mean"):
        self.specs = list(specs)
        self.space = space
        self.evidence = evidence
        n = len(evidence)
        self.fidelity = int(fidelity) if 0 < int(fidelity) < n and len(self.specs) == 1 else 0
        metrics = [(i, s) for i, s in enumerate(self.specs) if not s.is_size]
        first = Evaluator(evidence, space, metrics[0][1].metric(), memo_bytes=memo_bytes, fusion=fusion,
                          **dict(resources or {}))
        self.evaluators: dict[int, Evaluator] = {metrics[0][0]: first}
        for i, s in metrics[1:]:
            self.evaluators[i] = first.with_metric(s.metric())
        self.first = metrics[0][0]
        self.directions = [s.direction for s in self.specs]
        rows = list(range(n))
        self.working: list[int] = rows[: self.fidelity] if self.fidelity else rows

    @property
    def names(self) -> list[str]:
        return [s.text for s in self.specs]

    @property
    def rest(self) -> list[int]:
        """The images outside the working subset (scored only for candidates the pruner keeps)."""
        w = set(self.working)
        return [r for r in range(len(self.evidence)) if r not in w] if self.fidelity else []

    def set_working(self, rows: Sequence[int]) -> None:
        """Make ``rows`` (the initial subset and counterexamples, e.g. read back from a study) the
        working subset; ignored without multi-fidelity."""
        if not self.fidelity:
            return
        n = len(self.evidence)
        rows = sorted({int(r) for r in rows})
        if not rows or rows[0] < 0 or rows[-1] >= n:
            raise ObjectiveError(f"a working subset must name some of the {n} working images, not {rows}")
        self.working = rows

    def _score(self, k: int, candidates: Sequence[Expr], rows: Sequence[int] | None = None) -> Scores:
        return self.evaluators[k].score(list(candidates), rows)

    def evaluate(self, candidates: Sequence[Expr], prune: Callable[[dict[int, float]], bool] | None = None
                 ) -> list[Outcome]:
        """Outcomes of the candidates, in order (pruning only with one objective and fidelity > 0)."""
        out: list[Outcome | None] = [None] * len(candidates)
        if not candidates:
            return []
        n = len(self.evidence)
        work, rest = (list(self.working), self.rest) if self.fidelity else (None, [])
        stage1 = work if work is not None else list(range(n))
        s1 = self._score(self.first, candidates, work)
        alive: list[int] = []
        steps_of: dict[int, dict[int, float]] = {}
        for i in range(len(candidates)):
            if not bool(s1.valid[i].all()):
                bad = int((~s1.valid[i]).sum())
                out[i] = Outcome("invalid", images=len(stage1), reason=f"non-finite map on {bad} image(s)")
                continue
            steps = ({int(r): float(v) for r, v in zip(stage1, s1.value[i].tolist()) if not math.isnan(v)}
                     if self.fidelity else {})
            steps_of[i] = steps
            if rest and prune is not None and prune(steps):
                out[i] = Outcome("pruned", steps=steps, images=len(stage1))
                continue
            alive.append(i)
        firsts: dict[int, float] = {}
        ses: dict[int, float] = {}
        if rest and alive:
            s2 = self._score(self.first, [candidates[i] for i in alive], rest)
            for j, i in enumerate(alive):
                if not bool(s2.valid[j].all()):
                    bad = int((~s2.valid[j]).sum())
                    out[i] = Outcome("invalid", steps=steps_of[i], images=n, reason=f"non-finite map on {bad} image(s)")
                    continue
                steps_of[i].update({int(r): float(v) for r, v in zip(rest, s2.value[j].tolist()) if not math.isnan(v)})
                both = torch.cat([s1.value[i], s2.value[j]])
                ok = ~torch.isnan(both)
                firsts[i] = float(both[ok].mean()) if bool(ok.any()) else math.nan
                ses[i] = standard_error(both.tolist())
        else:
            for i in alive:
                firsts[i] = _mean_values(s1, i)
                ses[i] = standard_error(s1.value[i].tolist())
        alive = [i for i in alive if out[i] is None]
        others: dict[int, Scores] = {}
        if alive:
            subsets = [work, rest] if rest else [work]      # the first objective's row subsets: their memos
            for k in self.evaluators:
                if k != self.first:
                    parts = [self._score(k, [candidates[i] for i in alive], rows) for rows in subsets]
                    others[k] = parts[0] if len(parts) == 1 else Scores(
                        torch.cat([p.value for p in parts], 1), torch.cat([p.internal for p in parts], 1),
                        torch.cat([p.valid for p in parts], 1), [r for p in parts for r in p.rows],
                        parts[0].higher_is_better)
        for j, i in enumerate(alive):
            row: list[float] = []
            reason = ""
            for k, spec in enumerate(self.specs):
                if spec.is_size:
                    row.append(complexity(candidates[i]))
                elif k == self.first:
                    row.append(firsts[i])
                else:
                    s = others[k]
                    if not bool(s.valid[j].all()):
                        reason = f"non-finite map ({spec.text})"
                    row.append(_mean_values(s, j))
            if reason or any(math.isnan(v) for v in row):
                out[i] = Outcome("invalid", steps=steps_of[i], images=n,
                                 reason=reason or "metric undefined on every image")
            else:
                out[i] = Outcome("complete", values=row, steps=steps_of[i], images=n, se=ses[i])
        return out   # every slot is set
