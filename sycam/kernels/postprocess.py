"""The one fixed post-processing of every CAM: upsample to the input, min-max per image.

ReLU is not applied here: an expression that wants it says so (``relu(...)``), so the
post-processing is the same for every method. Maps that contain NaN or infinities are
reported invalid (and returned as zeros) instead of failing the batch, and so are maps that
reach half the float32 range (their min-max would overflow).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..grammar import semantics


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (half-pixel centres) resize of (..., h, w) maps to ``size`` (the ``resize``
    operator's resampling, :func:`sycam.grammar.semantics.upsample`); a map already at ``size``
    (one computed at the input's resolution) is returned as it is."""
    return semantics.upsample(maps, size)


def minmax(maps: Tensor) -> Tensor:
    """Per map (last two axes) to [0, 1]; a constant map becomes all zeros (the ``norm``
    operator's min-max over h, w)."""
    return semantics.minmax(maps, (-2, -1))


#: A map with a value this large is invalid: its min-max span (max - min) would overflow float32.
MAP_LIMIT = 2.0 ** 127


def validity(maps: Tensor) -> Tensor:
    """(...,) bool: True where the map (last two axes) is finite with |values| < MAP_LIMIT
    (about 1.7e38, half the float32 maximum, so that its normalisation cannot overflow)."""
    return (maps.abs() < MAP_LIMIT).flatten(-2).all(dim=-1)     # NaN compares False


def finalize(raw: Tensor, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Raw (..., h, w) maps -> (maps in [0,1] at ``size``, valid flags)."""
    valid = validity(raw)
    raw = torch.where(valid[..., None, None], raw, torch.zeros((), dtype=raw.dtype, device=raw.device))
    if size is not None:
        raw = upsample(raw, size)
    return minmax(raw), valid


FUSIONS = ("mean", "max", "layercam", "attention")
#: temperature of the attention fusion's per-pixel softmax over layers
ATTENTION_TEMPERATURE = 0.1


def fuse(layer_maps: list[Tensor], size: tuple[int, int], how: str = "mean") -> tuple[Tensor, Tensor]:
    """Combine raw per-layer maps (b, h_l, w_l) into one map at ``size``.

    mean / max: each layer finalised (upsampled, min-max), then averaged / maximised.
    layercam (Jiang et al. 2021): each raw map rescaled by tanh(2 L / max L), upsampled,
    then the element-wise maximum.
    attention (after AME-CAM, Chen et al. 2023, whose attention over exits is learned):
    per-pixel weights over layers from the finalised maps themselves,
    L = sum_l beta_l L_l with beta_l(h, w) = softmax_l(L_l(h, w) / tau), tau = 0.1; a layer
    counts most where it is most confident. Training-free, so it is an approximation of
    AME-CAM's learned fusion.
    """
    if how not in FUSIONS:
        raise ValueError(f"unknown fusion {how!r}; choose from {', '.join(FUSIONS)}")
    if len(layer_maps) == 1:
        return finalize(layer_maps[0], size)
    valid = torch.stack([validity(m) for m in layer_maps]).all(dim=0)
    if how == "layercam":
        scaled = []
        for m in layer_maps:
            m = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
            peak = m.flatten(-2).amax(dim=-1).clamp_min(torch.finfo(m.dtype).tiny)[..., None, None]
            scaled.append(upsample(torch.tanh(2.0 * m / peak), size))
        stacked = torch.stack(scaled)
        return finalize(stacked.amax(dim=0), None)[0], valid
    stacked = torch.stack([finalize(m, size)[0] for m in layer_maps])
    if how == "attention":
        combined = (torch.softmax(stacked / ATTENTION_TEMPERATURE, dim=0) * stacked).sum(dim=0)
    else:
        combined = stacked.mean(dim=0) if how == "mean" else stacked.amax(dim=0)
    return minmax(combined), valid
