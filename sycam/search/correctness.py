"""The correctness oracle with counterexamples (CEGIS): is this candidate good enough?

A candidate is first scored on the **working** images (a few). Only if it passes there is it
checked on the **rest**; the images of the rest on which it fails become *counterexamples*
and join the working set, so later candidates meet them early. The working set grows only
by images that a working-set pass failed to predict.

Passing (scores are "higher is better", ``s = direction.sign * metric``):

* ``threshold`` t given (in the metric's units; converted to ``sign * t``):
  ``mode="mean"``: the mean over the images is >= t; ``mode="each"``: every image >= t.
  Counterexamples: the rest's images below t (worst first).
* ``threshold=None`` (**incumbent** mode, SyCAM's "beats the incumbent"): the mean is
  greater than the incumbent's mean on the same images; an accepted candidate becomes the
  incumbent. Counterexamples: the rest's images where it scores below the incumbent.

Images where the metric is undefined (NaN) are left out of means and never counterexamples.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import SycamError
from ..grammar.ast import Expr
from .evaluate import Evaluator, Scores

MODES = ("mean", "each")


@dataclass
class Verdict:
    """What the oracle said about one candidate."""

    expr: Expr
    working_mean: float                   # internal score (higher is better) on the working images
    passed_working: bool
    mean: float | None = None             # internal mean on all images (only if it passed the working set)
    accepted: bool = False
    counterexamples: list[int] = field(default_factory=list)


@dataclass
class Accepted:
    expr: Expr
    mean: float                            # internal mean on all images
    per_image: Tensor                      # (N,) internal scores on all images


def _nanmean(x: Tensor) -> Tensor:
    defined = ~torch.isnan(x)
    total = torch.where(defined, x, torch.zeros_like(x)).sum(-1)
    n = defined.sum(-1)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, -math.inf))


class CorrectnessOracle:
    """Scores candidates on a growing working set, verifies passers on the rest (CEGIS).

    ``working``: the initial working images (row indices, or a number n for the first n).
    ``add``: at most this many counterexamples join the working set per failed verification.
    """

    def __init__(self, evaluator: Evaluator, *, threshold: float | None = None, mode: str = "mean",
                 working: int | Sequence[int] = 8, add: int = 2, incumbent: Accepted | None = None):
        if mode not in MODES:
            raise SycamError(f"correctness mode must be one of {', '.join(MODES)}, not {mode!r}")
        if threshold is not None and not math.isfinite(float(threshold)):
            raise SycamError(f"threshold must be a finite number, not {threshold!r}")
        n = len(evaluator)
        rows = list(range(min(int(working), n))) if isinstance(working, int) else sorted({int(r) for r in working})
        if not rows or any(not 0 <= r < n for r in rows):
            raise SycamError(f"working images must be a non-empty subset of the {n} images")
        self.evaluator = evaluator
        self.threshold = None if threshold is None else float(threshold)
        self.tau = None if threshold is None else evaluator.metric.direction.sign * float(threshold)
        self.mode = mode
        self.working: list[int] = rows
        self.add = int(add)
        self.incumbent = incumbent
        self.accepted: list[Accepted] = []
        self.history: list[tuple[int, list[int]]] = []   # (candidates checked so far, rows added)
        self.checked = 0
        self.verified = 0

    @property
    def rest(self) -> list[int]:
        w = set(self.working)
        return [r for r in range(len(self.evaluator)) if r not in w]

    def _passes(self, per_image: Tensor, incumbent: Tensor | None) -> Tensor:
        """(n,) bool for (n, b) internal scores."""
        if self.tau is None:
            if incumbent is None:
                return torch.ones(per_image.shape[0], dtype=torch.bool, device=per_image.device)
            return _nanmean(per_image) > _nanmean(incumbent[None])[0]
        if self.mode == "mean":
            return _nanmean(per_image) >= self.tau
        ok = torch.isnan(per_image) | (per_image >= self.tau)
        return ok.all(-1) & ~torch.isnan(per_image).all(-1)

    def _failing(self, per_image: Tensor, incumbent: Tensor | None) -> Tensor:
        """(b,) bool: images on which a candidate with these (b,) scores fails."""
        if self.tau is None:
            if incumbent is None:
                return torch.zeros_like(per_image, dtype=torch.bool)
            return per_image < incumbent
        return per_image < self.tau       # NaN compares False

    def check(self, candidates: Sequence[Expr], scores: Scores | None = None) -> list[Verdict]:
        """Verdicts for a chunk of candidates (``scores``: their scores on the working set, if known)."""
        if not candidates:
            return []
        work = list(self.working)
        if scores is None:
            scores = self.evaluator.score(candidates, work)
        inc_work = None
        if self.incumbent is not None:
            inc_work = self.incumbent.per_image[work]
        per = scores.internal
        means = _nanmean(per).tolist()
        passed = self._passes(per, inc_work).tolist()
        self.checked += len(candidates)
        verdicts = [Verdict(c, m, bool(p)) for c, m, p in zip(candidates, means, passed)]
        passers = [(j, v) for j, v in enumerate(verdicts) if v.passed_working]
        if not passers:
            return verdicts
        rest = [r for r in range(len(self.evaluator)) if r not in set(work)]
        rest_scores = self.evaluator.score([v.expr for _, v in passers], rest) if rest else None
        added: list[int] = []
        for i, (j, v) in enumerate(passers):
            self.verified += 1
            full = torch.empty(len(self.evaluator), dtype=per.dtype, device=per.device)
            full[work] = per[j]
            if rest_scores is not None:
                full[rest] = rest_scores.internal[i].to(full.dtype)
            inc_full = None if self.incumbent is None else self.incumbent.per_image.to(full.device)
            v.mean = float(_nanmean(full))
            v.accepted = bool(self._passes(full[None], inc_full)[0])
            if v.accepted:
                acc = Accepted(v.expr, v.mean, full)
                self.accepted.append(acc)
                if self.tau is None:
                    self.incumbent = acc
                continue
            if rest_scores is None:
                continue
            r_scores = rest_scores.internal[i]
            fail = self._failing(r_scores, None if inc_full is None else inc_full[rest])
            idx = torch.nonzero(fail).flatten()
            order = idx[torch.argsort(r_scores[idx], stable=True)].tolist()
            cex = [rest[j] for j in order if rest[j] not in added][: self.add]
            v.counterexamples = cex
            added += cex
        if added:
            self.working = sorted(set(self.working) | set(added))
            self.history.append((self.checked, added))
        return verdicts

    def set_incumbent(self, expr: Expr) -> Accepted:
        """Score ``expr`` on all images and make it the incumbent (e.g. the best seed)."""
        s = self.evaluator.score([expr])
        acc = Accepted(expr, float(s.mean[0]), s.internal[0])
        self.incumbent = acc
        return acc
