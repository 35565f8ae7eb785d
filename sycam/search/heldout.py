"""Scores on held-out images: the leaderboard of a study, its Pareto front, and the verdict.

The search selects on the working images only; this module re-scores the selected
candidates and **every seed** on images the search never saw, with 95 % intervals
(percentile bootstrap over images), and compares them pairwise (same images): the
difference of means with its interval, signed so that positive means "better".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import Tensor

from ..grammar.ast import Expr
from ..grammar.parser import parse
from ..grammar.printer import to_text
from ..metrics.aggregate import summarise
from .evaluate import Evaluator, EvidenceSet
from .ledger import info
from .objectives import ObjectiveSpec
from .space import SearchSpace


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    images: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "images": self.images}

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def interval(values: Tensor, seed: int = 0) -> Interval:
    """Mean of the non-NaN values with a 95 % percentile-bootstrap interval."""
    s = summarise(values.double(), method="bootstrap", seed=seed)
    return Interval(float(s.mean), float(s.low), float(s.high), int(s.count))


@dataclass
class Entry:
    """One candidate of the leaderboard (a seed or a synthesised expression)."""

    label: str
    candidate: Expr
    source: str
    trial: int | None = None
    seed: str | None = None
    train: list[float] | None = None          # the study's values (working images); None if pruned
    held: dict[str, Interval] = field(default_factory=dict)
    per_image: dict[str, Tensor] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return to_text(self.candidate)

    @property
    def is_seed(self) -> bool:
        return self.source == "seed"


@dataclass
class Comparison:
    """``entry`` minus ``other`` on the held-out images (positive: entry is better)."""

    entry: str
    other: str
    objective: str
    diff: Interval
    better: bool          # the interval lies above 0
    worse: bool           # ... below 0


def _entry(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> Entry:
    i = info(trial)
    label = i.get("seed") or f"#{trial.number}"
    return Entry(label, parse(i["expr"]), i.get("source", "?"), trial.number, i.get("seed"),
                 list(trial.values) if trial.values else None)


def select(study: optuna.Study, space: SearchSpace, directions: Sequence[str], top: int = 10
           ) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """(top synthesised candidates by the first objective on the working images, the seeds,
    the Pareto front for several objectives). Duplicates and pruned candidates are left out."""
    sign = 1.0 if directions[0] == "maximize" else -1.0
    done = [t for t in study.get_trials(deepcopy=False)
            if "duplicate_of" not in info(t) and info(t).get("expr")]
    seeds = [_entry(t, space) for t in done if info(t).get("source") == "seed"
             and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE and info(t).get("source") != "seed"]
    complete.sort(key=lambda t: (-sign * t.values[0], len(info(t)["expr"])))
    tops = [_entry(t, space) for t in complete[:top]]
    front: list[Entry] = []
    if len(directions) > 1:
        for t in study.best_trials:
            if "duplicate_of" not in info(t) and info(t).get("expr"):
                front.append(_entry(t, space))
        front.sort(key=lambda e: -sign * e.train[0])
    return tops, seeds, front


def score(entries: Sequence[Entry], objectives: Sequence[ObjectiveSpec], evidence: EvidenceSet,
          space: SearchSpace, resources: Mapping[str, Any] | None = None) -> None:
    """Fill ``held`` and ``per_image`` of each entry on the (held-out) ``evidence``."""
    entries = list(entries)
    if not entries:
        return
    cands = [e.candidate for e in entries]
    for spec in objectives:
        if spec.is_size:
            for e in entries:
                size = float(e.candidate.size)
                e.held[spec.text] = Interval(size, size, size, len(evidence))
                e.per_image[spec.text] = torch.full((len(evidence),), size, dtype=torch.float64)
            continue
        ev = Evaluator(evidence, space, spec.metric(), **dict(resources or {}))
        s = ev.score(cands)
        for i, e in enumerate(entries):
            values = s.value[i].double().cpu()
            e.per_image[spec.text] = values
            e.held[spec.text] = interval(values) if bool(s.valid[i].all()) else Interval(math.nan, math.nan,
                                                                                          math.nan, 0)


def compare(entry: Entry, other: Entry, spec: ObjectiveSpec, direction: str) -> Comparison:
    """Paired difference on the images where both are defined (sign: positive = entry better)."""
    a, b = entry.per_image[spec.text], other.per_image[spec.text]
    sign = 1.0 if direction == "maximize" else -1.0
    d = sign * (a - b)
    iv = interval(d)
    return Comparison(entry.label, other.label, spec.text, iv, iv.low > 0, iv.high < 0)


@dataclass
class Verdict:
    """Does the best synthesised candidate beat every seed on the first objective, held out?"""

    objective: str
    best: str | None
    beats_every_seed: bool
    strongest_seed: str | None
    margin: Interval | None             # best minus the strongest seed (positive: best is better)
    comparisons: list[Comparison]
    message: str

    def as_dict(self) -> dict:
        return {"objective": self.objective, "best": self.best, "beats_every_seed": self.beats_every_seed,
                "strongest_seed": self.strongest_seed, "margin": self.margin.as_dict() if self.margin else None,
                "significant": [c.other for c in self.comparisons if c.better],
                "message": self.message}


def verdict(best: Entry | None, seeds: Sequence[Entry], spec: ObjectiveSpec, direction: str) -> Verdict:
    """The honest statement the report leads with."""
    if best is None:
        return Verdict(spec.text, None, False, None, None, [], "no synthesised candidate was completed")
    comps = [compare(best, s, spec, direction) for s in seeds]
    if not comps:
        return Verdict(spec.text, best.label, True, None, None, [], "the space contains no seed to compare with")
    weakest = min(comps, key=lambda c: c.diff.mean)          # the strongest seed: smallest margin
    beats = all(c.diff.mean > 0 for c in comps)
    n = weakest.diff.images
    if beats:
        sig = sum(c.better for c in comps)
        msg = (f"{best.label} beats every seed on {spec.text} on {n} held-out images: by {weakest.diff.mean:+.4f} "
               f"over the strongest seed {weakest.other} (95% CI {weakest.diff.low:+.4f} .. {weakest.diff.high:+.4f}); "
               f"the difference is significant against {sig} of {len(comps)} seeds")
    else:
        losers = [c.other for c in comps if c.diff.mean <= 0]
        msg = (f"{best.label} does NOT beat every seed on {spec.text} on {n} held-out images: "
               f"{', '.join(losers)} score as well or better; vs {weakest.other} it is {weakest.diff.mean:+.4f} "
               f"(95% CI {weakest.diff.low:+.4f} .. {weakest.diff.high:+.4f})")
    return Verdict(spec.text, best.label, beats, weakest.other, weakest.diff, comps, msg)
