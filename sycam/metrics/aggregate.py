"""Aggregating per-image scores: mean with a 95 % interval, and the per-class mean.

Scores are ``(b,)`` or ``(n,b)`` (candidates x images); ``NaN`` entries (images where the metric
is undefined) are left out. Two intervals for the mean over images:

* ``"t"`` (default): mean +- t_{(1+c)/2, m-1} * s / sqrt(m), the Student t interval with the
  sample standard deviation s over the m valid images. Exact for normal scores, a good
  approximation for means of bounded scores once m is moderate (>= 30).
* ``"bootstrap"``: percentile bootstrap -- resample the m images with replacement ``n_boot``
  times (seeded), take the (1-c)/2 and (1+c)/2 quantiles of the resampled means. Preferred for
  skewed or binary scores (pointing game hits) and small m.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from .base import MetricError


@dataclass
class Summary:
    """Mean and interval per candidate (tensors of shape ``(n,)``, or 0-d for one candidate)."""

    mean: Tensor
    low: Tensor
    high: Tensor
    count: Tensor  # valid (non-NaN) images
    method: str
    confidence: float

    def __str__(self) -> str:
        if self.mean.dim() == 0:
            return (f"{self.mean.item():.4f} [{self.low.item():.4f}, {self.high.item():.4f}] "
                    f"({int(self.count)} images, {self.confidence:.0%} {self.method})")
        return "\n".join(str(Summary(m, lo, hi, c, self.method, self.confidence))
                         for m, lo, hi, c in zip(self.mean, self.low, self.high, self.count))


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with integer ``df`` (exact CDF, Abramowitz & Stegun 26.7.3-4, by
    bisection; Cornish-Fisher expansion for df > 1000)."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0,1)")
    if df < 1:
        raise ValueError("df must be >= 1")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    z = NormalDist().inv_cdf(p)
    if df > 1000:
        return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
                + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))
    target = 2 * p - 1  # P(|T| <= t)

    def central(t: float) -> float:
        theta = math.atan(t / math.sqrt(df))
        c2, s = math.cos(theta) ** 2, math.sin(theta)
        if df % 2:
            if df == 1:
                return 2 * theta / math.pi
            term, acc = math.cos(theta), math.cos(theta)
            for k in range(3, df - 1, 2):  # terms cos^(k) theta * (2*4..(k-1))/(1*3..k)
                term *= c2 * (k - 1) / k
                acc += term
            return 2 / math.pi * (theta + s * acc)
        term, acc = 1.0, 1.0
        for k in range(2, df - 1, 2):  # terms cos^k theta * (1*3..(k-1))/(2*4..k)
            term *= c2 * (k - 1) / k
            acc += term
        return s * acc

    lo, hi = 0.0, max(1.0, 2 * z)
    while central(hi) < target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if central(mid) < target else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def summarise(scores: Tensor, method: str = "t", confidence: float = 0.95, n_boot: int = 2000,
              seed: int = 0) -> Summary:
    """Mean over images and its ``confidence`` interval (``"t"`` or ``"bootstrap"``), NaN skipped."""
    if not 0 < confidence < 1:
        raise MetricError(f"confidence must be in (0,1), got {confidence}")
    if method not in ("t", "bootstrap"):
        raise MetricError(f"method must be 't' or 'bootstrap', got {method!r}")
    single = scores.dim() == 1
    s = scores.detach().double().reshape(-1, scores.shape[-1])
    means, lows, highs, counts = [], [], [], []
    gen = torch.Generator().manual_seed(seed)
    for row in s.cpu():
        v = row[~row.isnan()]
        m = v.numel()
        counts.append(m)
        if m == 0:
            means.append(math.nan), lows.append(math.nan), highs.append(math.nan)
            continue
        mu = v.mean().item()
        means.append(mu)
        if m == 1:
            lows.append(math.nan), highs.append(math.nan)
        elif method == "t":
            half = t_quantile((1 + confidence) / 2, m - 1) * v.std().item() / math.sqrt(m)
            lows.append(mu - half), highs.append(mu + half)
        else:
            idx = torch.randint(0, m, (n_boot, m), generator=gen)
            boot = v[idx].mean(1)
            q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
            lo, hi = torch.quantile(boot, q).tolist()
            lows.append(lo), highs.append(hi)
    out = [torch.tensor(x, dtype=torch.float64) for x in (means, lows, highs)]
    cnt = torch.tensor(counts)
    if single:
        out, cnt = [t[0] for t in out], cnt[0]
    return Summary(out[0], out[1], out[2], cnt, method, confidence)


def per_class(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Classes present (with a valid score) and their mean score: ``(classes (k,), means (n,k))``.

    NaN scores are left out; a class with no valid image is dropped.
    """
    s = scores.detach().double().reshape(-1, scores.shape[-1])
    labels = labels.to(s.device)
    classes = torch.unique(labels)
    onehot = (labels[None, :] == classes[:, None]).double()          # (k,b)
    valid = ~s.isnan()
    sums = torch.nan_to_num(s) @ onehot.T                             # (n,k)
    cnts = valid.double() @ onehot.T
    means = sums / cnts.clamp_min(1)
    means = torch.where(cnts > 0, means, torch.full_like(means, math.nan))
    if scores.dim() == 1:
        means = means[0]
    return classes, means


def class_mean(scores: Tensor, labels: Tensor) -> Tensor:
    """Mean over classes of the per-class mean score (the pointing-game convention), NaN skipped."""
    _, means = per_class(scores, labels)
    return means.nanmean(-1)
