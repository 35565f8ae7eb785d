"""The metric "similarity to target maps", for rediscovery: how close are the maps to given ones?

:class:`TargetPearson` scores each map by its Pearson correlation with the reference map of
the same image (higher is better, 1 = the same map up to a positive affine change), registered
as ``"target_pearson"``::

    ref = reference_maps("gradcampp", model, batch.x, layer, batch.labels)   # sycam.search.target
    metric = get_metric("target_pearson", reference=ref, images=batch.x, labels=batch.labels)

Rows are matched to references by the image they belong to (a fingerprint of the model
input) and, when ``labels`` are given, the explained class (one image can be explained for
several classes), so any subset or reordering of the rows can be scored. On
:class:`~sycam.kernels.lowres.LowResMaps` it is exact at feature resolution: with
U = R a C^T the bilinear upsampling of a (h, w) map a,

    sum U = r^T a c,   sum U^2 = <R^T R a C^T C, a>,   sum U T = <a, R^T T C>,

(r, c the column sums of R, C), and Pearson is invariant to the per-map min-max
normalisation (a positive affine change), so no map is ever upsampled.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor

from ..data.batch import Batch
from ..kernels.lowres import LowResMaps
from .base import Direction, Metric, MetricError, Resources
from .similarity import pearson

_PROJ: dict[tuple[int, str], Tensor] = {}


def _fingerprint(x: Tensor) -> Tensor:
    """(b, 2) float64 projections of each flattened input on two fixed random vectors."""
    flat = x.detach().flatten(1).double()
    key = (flat.shape[1], str(flat.device))
    v = _PROJ.get(key)
    if v is None:
        g = torch.Generator().manual_seed(97)
        v = _PROJ[key] = torch.randn(flat.shape[1], 2, generator=g, dtype=torch.float64).to(flat.device)
    return flat @ v


class TargetPearson(Metric):
    """Pearson correlation of each map with the reference map of its row (per image, (n, b)).

    ``reference``: (N, H, W) target maps; ``images``: the (N, 3, S, S) model inputs they belong
    to; ``labels``: (N,) the class each reference explains (needed when an image repeats with
    another class). A constant map scores 0; a constant reference is undefined (NaN).
    """

    name = "target_pearson"
    direction = Direction.HIGHER
    needs = frozenset()
    accepts_lowres = True

    def __init__(self, reference: Tensor | None = None, images: Tensor | None = None,
                 labels: Tensor | None = None):
        if (reference is None) != (images is None):
            raise MetricError("target_pearson needs both reference= maps and the images= they belong to")
        if reference is not None:
            if reference.dim() != 3 or images.dim() != 4 or reference.shape[0] != images.shape[0]:
                raise MetricError(f"target_pearson: reference (N, H, W) and images (N, 3, S, S) must match, got "
                                  f"{tuple(reference.shape)} and {tuple(images.shape)}")
            self.reference = reference.detach().double()
            self._prints = _fingerprint(images)
            self.labels = None if labels is None else torch.as_tensor(labels).long().cpu()
            if self.labels is not None and self.labels.shape != (reference.shape[0],):
                raise MetricError(f"target_pearson: {tuple(self.labels.shape)} labels for {reference.shape[0]} maps")
            if self.labels is None:
                same = (self._prints[:, None, :] - self._prints[None]).abs().amax(-1) <= 1e-9 * (
                    self._prints.abs().amax() + 1e-30)
                differ = (self.reference[:, None] - self.reference[None]).abs().flatten(2).amax(-1) > 1e-6
                if bool((same & differ).any()):
                    raise MetricError("target_pearson: an image repeats with different reference maps (several "
                                      "explained classes); pass labels= to tell the rows apart")
        else:
            self.reference = None

    def rows(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Indices of the references of the rows (images ``x``, classes ``labels``); MetricError if
        one is unknown."""
        if self.reference is None:
            raise MetricError("target_pearson has no reference maps: get_metric('target_pearson', "
                              "reference=maps, images=x, labels=classes)")
        memo = getattr(self, "_last", None)
        key = (id(x), x._version, tuple(x.shape), None if labels is None else tuple(labels.tolist()))
        if memo is not None and memo[0] == key and memo[1]() is x:
            return memo[2]
        fp = _fingerprint(x).to(self._prints.device)
        dist = (fp[:, None, :] - self._prints[None]).abs().amax(-1)
        scale = self._prints.abs().amax() + 1e-30
        match = dist <= 1e-9 * scale
        if self.labels is not None and labels is not None:
            match &= labels.long().cpu()[:, None] == self.labels[None]
        best = match.float().argmax(1)
        ok = match.any(1)
        if not bool(ok.all()):
            raise MetricError(f"target_pearson: {int((~ok).sum())} image(s) have no reference map")
        self._last = (key, weakref.ref(x), best)
        return best

    def compute(self, maps: Tensor | LowResMaps, batch: Batch, res: Resources) -> Tensor:
        idx = self.rows(batch.x, batch.labels).to(self.reference.device)
        T = self.reference.index_select(0, idx)                       # (b, H, W)
        if not isinstance(maps, LowResMaps):
            r = pearson(maps, T[None].to(maps.device))
        else:
            r = lowres_pearson(maps, T.to(maps.a.device))
        flat = T.flatten(1)
        constant = (flat.amax(1) == flat.amin(1)).to(r.device)
        return torch.where(constant[None], torch.full_like(r, math.nan), r)


def lowres_pearson(maps: LowResMaps, T: Tensor) -> Tensor:
    """Exact Pearson of Up(a) with (b, H, W) targets, computed at feature resolution (n, b)."""
    if tuple(T.shape[-2:]) != tuple(maps.size):
        raise MetricError(f"reference maps are {tuple(T.shape[-2:])}, the maps {maps.size}")
    R, C = (m.double() for m in maps.matrices())                # (H, h), (W, w)
    a = maps.a.double()                                           # (n, b, h, w)
    N = float(maps.size[0] * maps.size[1])
    T = T.double()
    r, c = R.sum(0), C.sum(0)
    s_u = torch.einsum("nbhw,h,w->nb", a, r, c)
    s_uu = (torch.einsum("ij,nbjw,wv->nbiv", R.T @ R, a, C.T @ C) * a).sum((-2, -1))
    proj = torch.einsum("Hh,bHW,Ww->bhw", R, T, C)                # R^T T C per image
    s_ut = (a * proj[None]).sum((-2, -1))
    mt = T.mean((-2, -1))
    vt = T.var((-2, -1), correction=0)
    mu = s_u / N
    vu = (s_uu / N - mu * mu).clamp_min(0)
    cov = s_ut / N - mu * mt[None]
    den = (vu * vt[None]).sqrt()
    ok = (vu > 1e-12 * (s_uu / N).clamp_min(1e-300)) & (vt[None] > 0)
    return torch.where(ok, cov / den.clamp_min(1e-300), torch.zeros_like(cov)).clamp(-1, 1).float()
