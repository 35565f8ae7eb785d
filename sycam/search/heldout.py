"""Scores on held-out images: the leaderboard of a study, its Pareto front, and the verdict.

The search selects on the working images only; this module re-scores the selected
candidates and **every seed** on images the search never saw, with 95 % intervals
(percentile bootstrap over images), and compares them pairwise (same images): the
difference of means with its interval, signed so that positive means "better".

Significance: a paired difference is tested with a sign-flip permutation test of its mean
(exact over every sign pattern up to :data:`EXACT_UP_TO` non-zero differences, Monte-Carlo
beyond), which is right at small n where a bootstrap p-value is not (two images with the same
difference gave p = 0). Below :data:`MIN_IMAGES` images no comparison is called significant at
all: the report says :data:`TOO_FEW`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import Tensor

from ..evidence.sets import EvidenceSet
from ..grammar.ast import Expr, complexity
from ..grammar.parser import parse
from ..grammar.printer import to_text
from ..metrics.aggregate import summarise
from .evaluate import Evaluator
from .ledger import info
from .objectives import ObjectiveSpec
from .selection import SE, winner
from .space import SearchSpace

#: fewer paired images than this: no significance claim, whatever the test says
MIN_IMAGES = 10
TOO_FEW = f"too few images to conclude (n < {MIN_IMAGES})"
#: up to this many non-zero differences the sign-flip test enumerates every sign pattern
EXACT_UP_TO = 16


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
    smallest: Expr | None = None              # the smallest candidate of the study with the same key
    full: bool = False                        # candidate is a whole CAM expression (a seed outside the space)
    maps: Tensor | None = None                # its maps on the first held-out images, where not from evidence

    @property
    def text(self) -> str:
        return to_text(self.candidate)

    @property
    def is_seed(self) -> bool:
        return self.source == "seed"

    def expression(self, space: SearchSpace) -> Expr:
        """The whole CAM expression (heatmap) of the entry."""
        return self.candidate if self.full else space.heatmap(self.candidate)


@dataclass
class Comparison:
    """``entry`` minus ``other`` on the held-out images (positive: entry is better): the paired
    difference with its sign-flip p-value, Holm-adjusted by :func:`verdict` over the seeds it
    compares with. Better or worse only where significant on at least :data:`MIN_IMAGES` images."""

    entry: str
    other: str
    objective: str
    paired: Paired

    @property
    def diff(self) -> Interval:
        return self.paired.diff

    @property
    def conclusive(self) -> bool:
        """Enough paired images (:data:`MIN_IMAGES`) to call the difference significant or not."""
        return self.paired.conclusive

    @property
    def better(self) -> bool:
        return self.paired.significant() and self.diff.mean > 0

    @property
    def worse(self) -> bool:
        return self.paired.significant() and self.diff.mean < 0

    @property
    def verdict(self) -> str:
        if not self.conclusive:
            return TOO_FEW
        return "better" if self.better else "worse" if self.worse else "not significant"

    def as_dict(self) -> dict:
        return {"seed": self.other, "objective": self.objective, **self.diff.as_dict(), "p": self.paired.p,
                "p_holm": self.paired.p_holm, "significantly_better": self.better,
                "significantly_worse": self.worse, "verdict": self.verdict}


def _entry(trial: optuna.trial.FrozenTrial, space: SearchSpace, smallest: Mapping[str, str] | None = None) -> Entry:
    i = info(trial)
    label = i.get("seed") or f"#{trial.number}"
    known = (smallest or {}).get(i.get("key", ""))
    return Entry(label, parse(i["expr"]), i.get("source", "?"), trial.number, i.get("seed"),
                 list(trial.values) if trial.values else None,
                 smallest=parse(known) if known and known != i["expr"] else None)


def smallest_forms(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[str, str]:
    """key -> the smallest expression the study holds with that key (duplicates included: the
    study's algebraic equivalence class of a candidate)."""
    out: dict[str, tuple[int, str]] = {}
    for t in trials:
        i = info(t)
        if i.get("key") and i.get("expr"):
            size = int(i.get("size", len(i["expr"])))
            if i["key"] not in out or (size, len(i["expr"])) < (out[i["key"]][0], len(out[i["key"]][1])):
                out[i["key"]] = (size, i["expr"])
    return {k: v for k, (_, v) in out.items()}


def select(study: optuna.Study, space: SearchSpace, directions: Sequence[str], top: int = 10, *,
           tolerance: str | float = SE, objective: int = 0) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """(top synthesised candidates on the working images, the seeds, the Pareto front for several
    objectives). The first is THE selected one: the simplest within ``tolerance`` of the best on
    objective ``objective`` (:func:`sycam.search.selection.winner`); the rest follow by score.
    Duplicates and pruned candidates are left out."""
    sign = 1.0 if directions[objective] == "maximize" else -1.0
    trials = study.get_trials(deepcopy=False)
    known = smallest_forms(trials)
    done = [t for t in trials if "duplicate_of" not in info(t) and info(t).get("expr")]
    seeds = [_entry(t, space) for t in done if info(t).get("source") == "seed"
             and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE and info(t).get("source") != "seed"]
    chosen = winner(complete, directions, objective=objective, tolerance=tolerance)
    complete.sort(key=lambda t: (t is not chosen, -sign * t.values[objective], len(info(t)["expr"])))
    tops = [_entry(t, space, known) for t in complete[:top]]
    front: list[Entry] = []
    if len(directions) > 1:
        for t in study.best_trials:
            if "duplicate_of" not in info(t) and info(t).get("expr"):
                front.append(_entry(t, space, known))
        front.sort(key=lambda e: -sign * e.train[objective])
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
                size = complexity(e.candidate)
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


def signed_difference(entry: Entry, other: Entry, spec: ObjectiveSpec, direction: str) -> Tensor:
    """Per image ``entry`` minus ``other`` on ``spec``, signed so that positive means entry is better
    (NaN where either is undefined)."""
    sign = 1.0 if direction == "maximize" else -1.0
    return sign * (entry.per_image[spec.text].double() - other.per_image[spec.text].double())


def compare(entry: Entry, other: Entry, spec: ObjectiveSpec, direction: str) -> Comparison:
    """Paired difference on the images where both are defined (sign: positive = entry better),
    its bootstrap interval and sign-flip p-value (:func:`paired_difference`); not yet corrected
    for the number of comparisons (:func:`verdict` does that)."""
    d = signed_difference(entry, other, spec, direction)
    paired = paired_difference(d, torch.zeros_like(d), method=entry.label, reference_name=other.label)
    return Comparison(entry.label, other.label, spec.text, paired)


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


def verdict(best: Entry | None, seeds: Sequence[Entry], spec: ObjectiveSpec, direction: str,
            name: str | None = None, expression: str | None = None) -> Verdict:
    """The honest statement the report leads with, Holm-corrected over every seed compared;
    ``expression``: the best candidate's CAM expression, which the verdict names (``name``: the
    whole phrase; default the label)."""
    if best is None:
        return Verdict(spec.text, None, False, None, None, [], "no synthesised candidate was completed")
    comps = [compare(best, s, spec, direction) for s in seeds]
    for c, adjusted in zip(comps, holm([c.paired.p for c in comps])):
        c.paired.p_holm = adjusted
    called = name or (f"The selected expression {expression}" if expression else best.label)
    label = expression or best.label
    if not comps:
        return Verdict(spec.text, label, True, None, None, [],
                       f"{called}: the space contains no seed to compare with")
    weakest = min(comps, key=lambda c: c.diff.mean)          # the strongest seed: smallest margin
    beats = all(c.diff.mean > 0 for c in comps)
    n = weakest.diff.images
    underpowered = (f"the comparison is underpowered: too few images to conclude ({n}, fewer than {MIN_IMAGES}): "
                    "no significance claimed")
    if beats:
        sig = sum(c.better for c in comps)
        msg = (f"{called} beats every seed compared ({len(comps)}) on {spec.text} on {n} held-out images: by "
               f"{weakest.diff.mean:+.4f} over the strongest seed {weakest.other} (95% CI {weakest.diff.low:+.4f} .. "
               f"{weakest.diff.high:+.4f}); "
               + (f"the difference is significant against {sig} of {len(comps)} seeds (sign-flip tests, "
                  f"Holm-corrected over the {len(comps)} seeds)" if weakest.conclusive else underpowered))
    else:
        losers = [c.other for c in comps if c.diff.mean <= 0]
        msg = (f"{called} does NOT beat every seed compared ({len(comps)}) on {spec.text} on {n} held-out images: "
               f"{', '.join(losers)} score as well or better; vs {weakest.other} it is {weakest.diff.mean:+.4f} "
               f"(95% CI {weakest.diff.low:+.4f} .. {weakest.diff.high:+.4f})"
               + ("" if weakest.conclusive else f"; {underpowered}"))
    return Verdict(spec.text, label, beats, weakest.other, weakest.diff, comps, msg)


# ----------------------------------------------------------------------------- paired comparisons
@dataclass
class Paired:
    """``method`` minus ``reference`` per image (raw units of the metric), its mean with a
    bootstrap interval, the two-sided sign-flip permutation p-value (:func:`sign_flip_p`) and the
    Holm-adjusted one. Never :meth:`significant` on fewer than :data:`MIN_IMAGES` images."""

    method: str
    reference: str
    diff: Interval
    p: float
    p_holm: float = math.nan
    level: float = 0.95            # confidence of the interval (Holm's step level where several)

    @property
    def conclusive(self) -> bool:
        """Enough paired images (:data:`MIN_IMAGES`) to claim anything."""
        return self.diff.images >= MIN_IMAGES

    def significant(self, alpha: float = 0.05) -> bool:
        if not self.conclusive:
            return False
        return self.p_holm < alpha if self.p_holm == self.p_holm else self.p < alpha

    def as_dict(self) -> dict:
        return {"method": self.method, "reference": self.reference, **self.diff.as_dict(), "p": self.p,
                "p_holm": self.p_holm, "level": self.level, "significant": self.significant(),
                "conclusive": self.conclusive}


def _bootstrap_means(d: Tensor, n_boot: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, d.numel(), (n_boot, d.numel()), generator=gen)
    return d[idx].mean(1)


def sign_flip_p(d: Tensor, n_perm: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of "mean paired difference = 0" by a sign-flip permutation test: under the
    null each difference is as likely positive as negative, so the share of sign patterns whose
    |mean| reaches the observed one is the p-value. Exact (every pattern of the non-zero
    differences; zeros do not change with their sign) up to :data:`EXACT_UP_TO` of them, else
    Monte-Carlo over ``n_perm`` random patterns ((hits + 1) / (n_perm + 1): never 0). NaN without data."""
    d = d.double().cpu()
    d = d[~d.isnan()]
    if d.numel() == 0:
        return math.nan
    nz = d[d != 0]
    k = nz.numel()
    if k == 0:
        return 1.0
    observed = float(nz.sum().abs())
    tol = 1e-9 * float(nz.abs().sum())          # sums of the same numbers in another order
    if k <= EXACT_UP_TO:
        patterns = torch.arange(2 ** k, dtype=torch.int64)[:, None] >> torch.arange(k, dtype=torch.int64)
        signs = 1.0 - 2.0 * (patterns & 1).double()
        hits = int(((signs @ nz).abs() >= observed - tol).sum())
        return hits / 2 ** k
    gen = torch.Generator().manual_seed(seed)
    hits = 0
    for start in range(0, n_perm, 4096):            # in blocks: n_perm x k signs at once can be large
        rows = min(4096, n_perm - start)
        signs = 1.0 - 2.0 * torch.randint(0, 2, (rows, k), generator=gen).double()
        hits += int(((signs @ nz).abs() >= observed - tol).sum())
    return (hits + 1) / (n_perm + 1)


def paired_difference(values: Tensor, reference: Tensor, *, method: str = "", reference_name: str = "",
                      level: float = 0.95, n_boot: int = 2000, n_perm: int = 20000, seed: int = 0,
                      p: float | None = None) -> Paired:
    """Per-image ``values - reference`` on the images where both are defined: mean, percentile
    bootstrap interval at ``level`` and the two-sided sign-flip permutation p-value of "mean
    difference = 0" (:func:`sign_flip_p`; right at small n; ``p`` when already known).
    Significance needs :data:`MIN_IMAGES`."""
    d = (values.double().cpu() - reference.double().cpu())
    d = d[~d.isnan()]
    m = d.numel()
    if m == 0:
        return Paired(method, reference_name, Interval(math.nan, math.nan, math.nan, 0), math.nan, level=level)
    mean = float(d.mean())
    p = sign_flip_p(d, n_perm, seed) if p is None else p
    if m == 1 or bool((d == d[0]).all()):
        return Paired(method, reference_name, Interval(mean, mean if m > 1 else math.nan,
                                                       mean if m > 1 else math.nan, m), p, level=level)
    boot = _bootstrap_means(d, n_boot, seed)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(boot, q).tolist()
    return Paired(method, reference_name, Interval(mean, lo, hi, m), p, level=level)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN)."""
    idx = [i for i, p in enumerate(pvalues) if p == p]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def against_best(per_image: Mapping[str, Tensor], higher_is_better: bool, *, alpha: float = 0.05,
                 n_boot: int = 2000, n_perm: int = 20000, seed: int = 0) -> tuple[str | None, list[Paired]]:
    """The method with the best mean, and every other method's paired difference to it
    (``method - best`` per image; p-values from the sign-flip permutation test), Holm-corrected
    over the comparisons: the p-values are adjusted, and the j-th smallest p-value's interval is
    taken at Holm's step level 1 - alpha / (m - j + 1) (plain 1 - alpha for a single comparison).
    A comparison on fewer than :data:`MIN_IMAGES` images is never significant."""
    means = {k: float(v[~v.isnan()].double().mean()) if bool((~v.isnan()).any()) else math.nan
             for k, v in per_image.items()}
    finite = {k: v for k, v in means.items() if v == v}
    if not finite:
        return None, []
    best = (max if higher_is_better else min)(finite, key=finite.get)
    others = [k for k in per_image if k != best]
    ps = [sign_flip_p(per_image[k].double().cpu() - per_image[best].double().cpu(), n_perm, seed) for k in others]
    adjusted = holm(ps)
    m = sum(p == p for p in ps)
    levels = [0.95] * len(others)                 # each interval once, at its Holm step level
    if m > 1:
        for rank, i in enumerate(sorted([i for i, p in enumerate(ps) if p == p], key=lambda i: ps[i])):
            levels[i] = 1 - alpha / (m - rank)
    out = []
    for i, k in enumerate(others):
        c = paired_difference(per_image[k], per_image[best], method=k, reference_name=best, level=levels[i],
                              n_boot=n_boot, n_perm=n_perm, seed=seed, p=ps[i])
        if ps[i] == ps[i]:
            c.p_holm = adjusted[i]
        out.append(c)
    return best, out
