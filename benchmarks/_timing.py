"""Paired timing: a method and its baseline alternate, and ratios are taken per pair.

On a shared CPU absolute times drift by 2x between minutes; a ratio of two runs taken
back to back does not. Every benchmark reports the median of per-pair ratios.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(method: Callable[[], object], baseline: Callable[[], object], repeats: int = 7,
           warmup: int = 2) -> dict:
    """Median times and the median of per-pair ratios method / baseline."""
    for _ in range(warmup):
        baseline()
        method()
    ms, bs = [], []
    for _ in range(repeats):
        bs.append(clock(baseline))
        ms.append(clock(method))
    ratios = [m / b for m, b in zip(ms, bs)]
    return {"method_ms": 1e3 * statistics.median(ms), "baseline_ms": 1e3 * statistics.median(bs),
            "ratio": statistics.median(ratios)}
