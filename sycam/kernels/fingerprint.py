"""Cheap content fingerprints of tensors and modules: what the search's caches of captured
evidence and model outputs are keyed by (inputs that are re-created, e.g. the same seeded noisy
copies, must find the evidence captured for them the first time).

``fingerprint(t)`` hashes the shape, the dtype, about 4,096 evenly spaced values and the exact
float64 sum of all values: O(numel) additions, no copy of the tensor. Two different tensors
share a fingerprint only if they agree on every sampled value and on their sum.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

SAMPLES = 4096


def _update(h, t: Tensor) -> None:
    t = t.detach()
    h.update(repr((tuple(t.shape), str(t.dtype))).encode())
    flat = t.reshape(-1)
    n = flat.numel()
    if n == 0:
        return
    step = max(1, n // SAMPLES)
    sample = flat[::step]
    if not sample.is_floating_point():
        sample, total = sample.long(), flat.long().sum()
    else:
        total = flat.sum(dtype=torch.float64)
    h.update(sample.cpu().contiguous().numpy().tobytes())
    h.update(repr(float(total)).encode())


def fingerprint(*tensors: Tensor | None) -> str:
    """A 32-hex-digit fingerprint of the tensors' contents (None counts as a value)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        if t is None:
            h.update(b"none")
        else:
            _update(h, t)
    return h.hexdigest()


def module_fingerprint(model: nn.Module) -> str:
    """A fingerprint of a module's parameters and buffers, by name (its weights, not its identity)."""
    h = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            h.update(name.encode())
            _update(h, t)
    return h.hexdigest()
