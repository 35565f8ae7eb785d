"""What a search optimises: one metric, or several (and the expression size), scored in stages.

An objective is written ``name`` or ``name:param=value,...`` (``pointing_game:tolerance=15``);
``size`` is the candidate's number of nodes (minimised). Names are checked when parsed, so a
misspelt metric fails before any model or data work.

:class:`Objectives` scores candidates on the working images. With one objective and
``fidelity`` = k, a candidate is first scored on the first k images; each image's score is
an intermediate value for the pruner (``prune(steps) -> bool``, e.g. Optuna's
``WilcoxonPruner`` against the best trial) and only candidates it keeps are scored on the
remaining images. A candidate whose map is not finite on some image is *invalid*.
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
from ..metrics.registry import get_metric
from .evaluate import Evaluator, Scores
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
    """One objective: a metric with parameters, or ``size``."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def is_size(self) -> bool:
        return self.name == SIZE

    @property
    def text(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    def metric(self):
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
    m = spec.metric()          # UnknownNameError with close matches / bad parameters
    if getattr(m, "uses_maps", True) is False:
        raise ObjectiveError(f"metric {name!r} does not score maps; the search scores candidate maps")
    return spec


def parse_objectives(texts: Sequence[str] | str) -> list[ObjectiveSpec]:
    """Objectives from CLI strings; at least one metric, no repeats."""
    if isinstance(texts, str):
        texts = [texts]
    specs = [parse_objective(t) for t in texts]
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

    status: ``complete`` (values set), ``pruned`` (stopped after the first stage) or ``invalid``;
    steps: per-image values of the first objective on the first-stage images (image -> value;
    empty without multi-fidelity); se: the standard error of the first objective's per-image
    values (what :mod:`sycam.search.selection` reads as its default tolerance).
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


class Objectives:
    """Scores candidates of ``space`` on ``evidence`` for every objective (one Evaluator per metric)."""

    def __init__(self, specs: Sequence[ObjectiveSpec], evidence: EvidenceSet, space: SearchSpace, *,
                 fidelity: int = 0, resources: Mapping[str, Any] | None = None, memo_bytes: int = 256 << 20,
                 fusion: str = "mean"):
        self.specs = list(specs)
        self.space = space
        self.evidence = evidence
        n = len(evidence)
        self.fidelity = int(fidelity) if 0 < int(fidelity) < n and len(self.specs) == 1 else 0
        per = max(1, memo_bytes // max(1, sum(not s.is_size for s in self.specs)))
        self.evaluators: dict[int, Evaluator] = {
            i: Evaluator(evidence, space, s.metric(), memo_bytes=per, fusion=fusion, **dict(resources or {}))
            for i, s in enumerate(self.specs) if not s.is_size}
        for ev in self.evaluators.values():
            # one block for the working images: the evaluator keeps only a few row subsets' memos,
            # and blocks of the two stages would evict each other on every batch
            if hasattr(ev, "row_block"):
                ev.row_block = max(ev.row_block, n)
        self.first = min(self.evaluators)
        self.directions = [s.direction for s in self.specs]
        rows = list(range(n))
        self.stage1 = rows[: self.fidelity] if self.fidelity else rows
        self.rest = rows[self.fidelity:] if self.fidelity else []

    @property
    def names(self) -> list[str]:
        return [s.text for s in self.specs]

    def evaluate(self, candidates: Sequence[Expr], prune: Callable[[dict[int, float]], bool] | None = None
                 ) -> list[Outcome]:
        """Outcomes of the candidates, in order (pruning only with one objective and fidelity > 0)."""
        out: list[Outcome | None] = [None] * len(candidates)
        if not candidates:
            return []
        first = self.evaluators[self.first]
        s1 = first.score(list(candidates), self.stage1)
        alive: list[int] = []
        steps_of: dict[int, dict[int, float]] = {}
        for i in range(len(candidates)):
            if not bool(s1.valid[i].all()):
                bad = int((~s1.valid[i]).sum())
                out[i] = Outcome("invalid", images=len(self.stage1), reason=f"non-finite map on {bad} image(s)")
                continue
            row_values = s1.value[i].tolist()
            steps = ({int(r): float(v) for r, v in zip(self.stage1, row_values) if not math.isnan(v)}
                     if self.fidelity else {})
            steps_of[i] = steps
            if self.rest and prune is not None and prune(steps):
                out[i] = Outcome("pruned", steps=steps, images=len(self.stage1))
                continue
            alive.append(i)
        firsts: dict[int, float] = {}
        ses: dict[int, float] = {}
        if self.rest and alive:
            s2 = first.score([candidates[i] for i in alive], self.rest)
            for j, i in enumerate(alive):
                if not bool(s2.valid[j].all()):
                    bad = int((~s2.valid[j]).sum())
                    out[i] = Outcome("invalid", steps=steps_of[i], images=len(self.evidence),
                                     reason=f"non-finite map on {bad} image(s)")
                    continue
                both = torch.cat([s1.value[i], s2.value[j]])
                ok = ~torch.isnan(both)
                firsts[i] = float(both[ok].mean()) if bool(ok.any()) else math.nan
                ses[i] = standard_error(both.tolist())
        else:
            for i in alive:
                firsts[i] = _mean_values(s1, i)
                ses[i] = standard_error(s1.value[i].tolist())
        alive = [i for i in alive if out[i] is None]
        others = {k: ev.score([candidates[i] for i in alive]) for k, ev in self.evaluators.items()
                  if k != self.first} if alive else {}
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
                out[i] = Outcome("invalid", steps=steps_of[i], images=len(self.evidence),
                                 reason=reason or "metric undefined on every image")
            else:
                out[i] = Outcome("complete", values=row, steps=steps_of[i], images=len(self.evidence), se=ses[i])
        return out   # every slot is set
