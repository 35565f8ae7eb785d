"""Target maps for rediscovery: the maps of a known method, which the search is asked to find again
with the ``target_pearson`` metric (:mod:`sycam.metrics.target`), and the held-out check.

    ref = reference_maps("gradcampp", model, batch.x, layer, batch.labels)   # (N, H, W)
    metric = get_metric("target_pearson", reference=ref, images=batch.x, labels=batch.labels)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..batching import model_rows
from ..errors import SycamError
from ..methods.cam import CAM
from ..metrics.similarity import pearson


def reference_maps(method, model: torch.nn.Module, x: Tensor, layers, targets=None, *,
                   chunk: int | None = None) -> Tensor:
    """Maps (N, H, W) of a known method (seed name, expression text or tree) through the public
    :class:`~sycam.methods.cam.CAM` path: an independent computation of the target maps."""
    chunk = model_rows(x.device, chunk)
    with CAM(method, model, layers) as cam:
        outs = []
        for i in range(0, x.shape[0], chunk):
            t = None if targets is None else targets[i:i + chunk]
            outs.append(cam(x[i:i + chunk], t).detach())
    return torch.cat(outs)


def pearson_to(maps: Tensor, reference: Tensor) -> Tensor:
    """(b,) Pearson of (b, H, W) maps with references (both at input size): the held-out check."""
    if maps.shape != reference.shape:
        raise SycamError(f"maps {tuple(maps.shape)} and references {tuple(reference.shape)} differ in shape")
    r = pearson(maps.double(), reference.double())
    return torch.where(torch.isfinite(r), r, torch.full_like(r, math.nan))
