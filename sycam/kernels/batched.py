"""Many channel-weight candidates against one evidence, in one matrix product.

A search scores thousands of weight expressions w (b, k). Stacked into (n, b, k) they
all meet the layer's activations in one batched product
    L[n, b] = relu(sum_k w[n, b, k] * A[b, k])  ->  (n, b, h, w)
instead of n separate passes.
"""
from __future__ import annotations

import torch
from torch import Tensor


def weighted_maps(weights: Tensor, A: Tensor, relu: bool = True) -> Tensor:
    """(n, b, k) weights x (b, k, h, w) activations -> (n, b, h, w) maps."""
    n, b, k = weights.shape
    if A.shape[:2] != (b, k):
        raise ValueError(f"weights are for {b} images x {k} channels, activations are {tuple(A.shape[:2])}")
    h, w = A.shape[-2:]
    # per image: (n, k) @ (k, h*w)
    maps = torch.bmm(weights.transpose(0, 1), A.reshape(b, k, h * w)).transpose(0, 1)
    maps = maps.reshape(n, b, h, w)
    return torch.relu(maps) if relu else maps
