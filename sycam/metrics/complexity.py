"""Forward-free properties of the map alone: how much of the image it covers."""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.batch import Batch
from .base import Direction, Metric, Resources


class Complexity(Metric):
    """Complexity ||L||_1 / (H W) for L in [0,1] (ADCC's complexity term). Lower is better."""

    name = "complexity"
    direction = Direction.LOWER

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        return maps.flatten(2).abs().mean(-1)


class Gini(Metric):
    """Sparseness as the Gini index of |L| (Chalasani et al. ICML 2020; Quantus ``Sparseness``).

    G = sum_i (2i - N - 1) v_(i) / (N sum_i v_i), v sorted ascending, i = 1..N: 0 for a uniform
    map, (N-1)/N for a single hot pixel; 0 for an all-zero map. Higher (sparser) is better.
    """

    name = "gini"
    direction = Direction.HIGHER

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        v = maps.flatten(2).abs().double().sort(-1).values
        n = v.shape[-1]
        i = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
        total = v.sum(-1)
        g = ((2 * i - n - 1) * v).sum(-1) / (n * total.clamp_min(1e-300))
        return torch.where(total > 0, g, torch.zeros_like(g)).float()
