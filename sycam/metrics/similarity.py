"""Batched similarities between maps, over the last two dims: ``(...,H,W), (...,H,W) -> (...)``.

Used by the robustness, equivariance and sanity metrics (pluggable by name or as a callable
``sim(a, b) -> (...)``) and by the ground-truth similarity metrics.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UnknownNameError
from ..kernels.lowres import LowResMaps
from .base import top_fraction_mask

Similarity = Callable[[Tensor, Tensor], Tensor]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the pixels of ``a`` and ``b``; 0 where either map is constant."""
    a, b = torch.broadcast_tensors(a.flatten(-2).double(), b.flatten(-2).double())
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    r = (a * b).sum(-1) / den.clamp_min(1e-300)
    return torch.where(den > 0, r, torch.zeros_like(r)).float()


def pearson_lowres(a: Tensor, b: Tensor, size: tuple[int, int]) -> Tensor:
    """:func:`pearson` of ``Up(a)`` and ``Up(b)``, the bilinear upsampling of feature-resolution maps
    ``(...,h,w)`` to ``size``, computed without upsampling (exact up to rounding).

    Up(a) = R a C^T is linear, so with U = kron(R, C), N = H W and M = U^T (I - 11^T/N) U,
    Pearson = a'Mb / sqrt(a'Ma b'Mb), where a'Mb = <R^T R a C^T C, b> - (r'ac)(r'bc)/N (r, c the
    column sums of R, C). Pearson is invariant to a per-map min-max (a positive affine change),
    so this is also the Pearson of the post-processed maps. 0 where either map is constant.
    """
    h, w = a.shape[-2:]
    R, C = (m.double() for m in LowResMaps(torch.zeros(1, h, w, device=a.device), size).matrices())
    RtR, CtC = R.T @ R, C.T @ C
    r, c = R.sum(0), C.sum(0)
    n = float(size[0] * size[1])
    a, b = a.double(), b.double()
    ka, kb = RtR @ a @ CtC, RtR @ b @ CtC
    sa, sb = (a * (r[:, None] * c[None, :])).sum((-2, -1)), (b * (r[:, None] * c[None, :])).sum((-2, -1))
    aa, bb = (ka * a).sum((-2, -1)), (kb * b).sum((-2, -1))
    ab = (ka * b).sum((-2, -1)) - sa * sb / n
    va, vb = aa - sa * sa / n, bb - sb * sb / n
    ok = (va > 1e-12 * aa.clamp_min(1e-300)) & (vb > 1e-12 * bb.clamp_min(1e-300))
    den = (va.clamp_min(0) * vb.clamp_min(0)).sqrt()
    return torch.where(ok, ab / den.clamp_min(1e-300), torch.zeros_like(ab)).clamp(-1, 1).float()


def midranks(x: Tensor) -> Tensor:
    """Ranks 1..N over the last dim with ties given their average rank (as in Spearman / Mann-Whitney)."""
    srt, order = x.sort(dim=-1)
    lo = torch.searchsorted(srt, srt, side="left")
    hi = torch.searchsorted(srt, srt, side="right")
    avg = (lo + hi + 1).double() / 2  # mean of the 1-based ranks lo+1..hi
    return torch.empty_like(avg).scatter_(-1, order, avg)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation (Pearson of mid-ranks) of the pixels of ``a`` and ``b``."""
    a, b = torch.broadcast_tensors(a.flatten(-2), b.flatten(-2))
    ra, rb = midranks(a.contiguous()), midranks(b.contiguous())
    return pearson(ra[..., None], rb[..., None])


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of the flattened maps (1 for maps equal up to a positive scale)."""
    return F.cosine_similarity(a.flatten(-2).float(), b.flatten(-2).float(), dim=-1, eps=1e-12)


def _gauss_window(size: int, sigma: float, device: torch.device) -> Tensor:
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, sigma: float = 1.5, window: int = 11) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5).

    SSIM = (2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)) with
    C1 = (0.01 R)^2, C2 = (0.03 R)^2, local moments from the window, averaged over the positions
    where the window fits (``skimage.metrics.structural_similarity`` with ``gaussian_weights=True,
    use_sample_covariance=False``).
    """
    a, b = torch.broadcast_tensors(a, b)
    shape = a.shape[:-2]
    h, w = a.shape[-2:]
    win = min(window, h, w)
    win -= 1 - win % 2  # odd
    g = _gauss_window(win, sigma, a.device)
    k = (g[:, None] * g[None, :])[None, None]
    x = torch.stack([a, b], dim=-3).reshape(-1, 2, h, w).double()
    stats = torch.cat([x, x * x, (x[:, :1] * x[:, 1:])], dim=1)  # a, b, a2, b2, ab
    m = F.conv2d(stats.reshape(-1, 1, h, w), k).view(x.shape[0], 5, h - win + 1, w - win + 1)
    mu_a, mu_b, aa, bb, ab = m.unbind(1)
    va, vb, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return s.mean((-2, -1)).float().view(shape)


def top_iou(a: Tensor, b: Tensor, fraction: float = 0.1) -> Tensor:
    """IoU of the top-``fraction`` pixels of ``a`` and of ``b``."""
    a, b = torch.broadcast_tensors(a, b)
    ta, tb = top_fraction_mask(a, fraction), top_fraction_mask(b, fraction)
    inter = (ta & tb).flatten(-2).sum(-1).float()
    union = (ta | tb).flatten(-2).sum(-1).float()
    return inter / union


SIMILARITIES: dict[str, Similarity] = {
    "pearson": pearson, "spearman": spearman, "ssim": ssim, "cosine": cosine, "top_iou": top_iou,
}


def get_similarity(sim: str | Similarity) -> Similarity:
    """A similarity by name (``pearson``, ``spearman``, ``ssim``, ``cosine``, ``top_iou``) or as given."""
    if callable(sim):
        return sim
    try:
        return SIMILARITIES[sim]
    except KeyError:
        raise UnknownNameError("similarity", sim, SIMILARITIES) from None
