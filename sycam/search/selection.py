"""The simplest winner: among the candidates that score within a tolerance of the best, the smallest.

On the first metric objective (working images), with sign s = +1 to maximise and -1 to minimise,

    best = argmax_t s * v_t,            tau = se(best) (default) or a given number >= 0,
    winner = argmin_{t : s * v_t >= s * v_best - tau} (complexity_t, -s * v_t),

where se(best) = std(best's per-image scores) / sqrt(n) is stored with each trial (``info["se"]``;
a trial without it has tau = 0). A larger candidate that ties a smaller one within one standard
error is noise, not progress: the smaller one is selected. One rule for the driver's incumbent
(:func:`sycam.search.driver.best_of`) and the report's selection (:func:`sycam.search.heldout.select`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TypeVar

from optuna.trial import FrozenTrial, TrialState

from ..errors import SycamError
from ..grammar.ast import complexity
from ..grammar.parser import parse
from .ledger import info

#: the default tolerance: one standard error of the best candidate's per-image working scores
SE = "se"
T = TypeVar("T")


class SelectionError(SycamError, ValueError):
    """A tolerance that is neither ``se`` nor a number >= 0."""


def parse_tolerance(text: str | float | None) -> str | float:
    """``se`` (default, also for None) or a number >= 0 in the metric's units."""
    if text is None or (isinstance(text, str) and text.strip().lower() == SE):
        return SE
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SelectionError(f"--tolerance is 'se' (one standard error of the best's per-image scores) or a "
                             f"number >= 0, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SelectionError(f"--tolerance must be a finite number >= 0 (or 'se'), not {text!r}")
    return value


def standard_error(values) -> float:
    """std(values, ddof=1) / sqrt(n) of the finite values (NaN with fewer than two)."""
    xs = [float(v) for v in values if v == v and math.isfinite(float(v))]
    n = len(xs)
    if n < 2:
        return math.nan
    mean = sum(xs) / n
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n)


def simplest(items: Sequence[T], *, value: Callable[[T], float], size: Callable[[T], float],
             se: Callable[[T], float], direction: str, tolerance: str | float = SE) -> T | None:
    """The rule above on any items (None if no item has a finite value)."""
    sign = 1.0 if direction == "maximize" else -1.0
    scored = [(it, sign * value(it)) for it in items]
    scored = [(it, v) for it, v in scored if v == v and math.isfinite(v)]
    if not scored:
        return None
    best, best_v = max(scored, key=lambda p: p[1])
    tau = se(best) if tolerance == SE else float(tolerance)
    tau = tau if tau == tau and tau > 0 else 0.0
    near = [(it, v) for it, v in scored if v >= best_v - tau]
    return min(near, key=lambda p: (size(p[0]), -p[1]))[0]


@lru_cache(maxsize=65536)
def _complexity(text: str) -> float:
    return complexity(parse(text))


def trial_complexity(trial: FrozenTrial) -> float:
    """The candidate's complexity (operator costs; its node count for built-in operators)."""
    i = info(trial)
    if "complexity" in i:
        return float(i["complexity"])
    return _complexity(i["expr"]) if i.get("expr") else float(i.get("size", math.inf))


def winner(trials: Sequence[FrozenTrial], directions: Sequence[str], *, objective: int = 0,
           tolerance: str | float = SE) -> FrozenTrial | None:
    """The selected trial of a study: the simplest complete, non-duplicate trial within the tolerance
    of the best on objective ``objective``."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values and "duplicate_of" not in info(t)]
    return simplest(done, value=lambda t: t.values[objective], size=trial_complexity,
                    se=lambda t: float(info(t).get("se", math.nan)), direction=directions[objective],
                    tolerance=tolerance)
