"""Candidate maps at feature resolution, for metrics that are exact without upsampling.

A CAM is computed at the target layer's resolution (e.g. 7x7) and brought to input resolution
by ``L = norm(Up(a))`` with ``Up`` bilinear (``align_corners=False``) and ``norm`` a per-map
affine normalisation. Because ``Up`` is linear and separable, ``Up(a) = R a C^T`` with fixed
matrices ``R (H,h)`` and ``C (W,w)``, so

* box/mask sums are dot products at feature resolution: ``sum_G Up(a) = <R^T G C, a>``;
* the extrema of ``Up(a)`` lie on a small *subgrid*: along each axis ``Up`` is piecewise linear
  in the output index, so a bilinear patch takes its min and max at the ends of its pieces.
  The subgrid keeps those ends (about 2h+2 rows and 2w+2 columns); the first maximum in
  row-major order of the full map is always a subgrid point, so ``argmax`` is exact too (in
  exact arithmetic; float rounding can make equal maxima in a clamped border strip differ
  in the last bit, and then F.interpolate's first maximum may be a neighbour of ours).

Together these make the pointing game and the energy pointing game exact at a cost of
``O(h*w)`` per candidate instead of ``O(H*W)``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

NORMALISATIONS = ("minmax", "max", "none")


@dataclass(frozen=True)
class LowResMaps:
    """Maps ``a`` ``(b,h,w)`` or ``(n,b,h,w)`` standing for ``norm(Up(a))`` at ``size``.

    normalise: ``"minmax"`` ``(U-min)/(max-min)`` (all-zero map when max == min), ``"max"``
    ``U/max`` (all-zero when max <= 0), ``"none"`` ``U`` as is. Must match the engine's
    post-processing; :meth:`full` is the reference the exact shortcuts are tested against.
    """

    a: Tensor
    size: tuple[int, int]
    normalise: str = "minmax"

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}")
        if self.a.dim() not in (3, 4):
            raise ValueError(f"LowResMaps.a must be (b,h,w) or (n,b,h,w), got {tuple(self.a.shape)}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    def unsqueeze(self) -> "LowResMaps":
        return replace(self, a=self.a[None]) if self.a.dim() == 3 else self

    def full(self) -> Tensor:
        """The maps at input resolution (materialised)."""
        a = self.a.float()
        up = F.interpolate(a.flatten(0, -3)[:, None], size=self.size, mode="bilinear",
                           align_corners=False)[:, 0].view(*a.shape[:-2], *self.size)
        return _normalise(up, up.flatten(-2).amin(-1), up.flatten(-2).amax(-1), self.normalise)

    # ------------------------------------------------------------------ exact shortcuts
    def matrices(self) -> tuple[Tensor, Tensor]:
        """``R (H,h)`` and ``C (W,w)`` with ``Up(a) = R a C^T``."""
        h, w = self.a.shape[-2:]
        dev = str(self.a.device)
        return _interp_matrix(h, self.size[0], dev), _interp_matrix(w, self.size[1], dev)

    def subgrid(self) -> tuple[Tensor, Tensor, Tensor]:
        """``Up(a)`` on the extremal subgrid ``(..., r*c)`` and its row and column indices."""
        h, w = self.a.shape[-2:]
        dev = str(self.a.device)
        rows = _extremal_rows(h, self.size[0], dev)
        cols = _extremal_rows(w, self.size[1], dev)
        a = self.a.float()
        lead = a.shape[:-2]
        if h * w <= 64:  # one GEMM with kron(R_sub, C_sub): (N, h*w) @ (h*w, r*c)
            sub = a.reshape(-1, h * w) @ _kron_subgrid(h, w, self.size[0], self.size[1], dev)
        else:  # two GEMMs: (N*h, w) @ (w, c), then (r, h) @ (h, N*c)
            R, C = self.matrices()
            right = (a.reshape(-1, w) @ C[cols].T).view(-1, h, len(cols))
            sub = (R[rows] @ right.transpose(0, 1).reshape(h, -1)).view(len(rows), -1, len(cols))
            sub = sub.transpose(0, 1).reshape(-1, len(rows) * len(cols))
        return sub.view(*lead, len(rows) * len(cols)), rows, cols

    def extrema(self, chunk: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
        """``min``, ``max`` and flat ``argmax`` (first in row-major order) of ``Up(a)`` per map.

        Processed ``chunk`` maps at a time so the temporaries stay in cache (2x faster on CPU)."""
        lead = self.a.shape[:-2]
        flat_a = self.a.reshape(-1, *self.a.shape[-2:])
        outs = [self._extrema(LowResMaps(flat_a[i:i + chunk], self.size, self.normalise))
                for i in range(0, flat_a.shape[0], chunk)]
        lo, hi, idx = (torch.cat(t).view(lead) for t in zip(*outs))
        return lo, hi, idx

    @staticmethod
    def _extrema(part: "LowResMaps") -> tuple[Tensor, Tensor, Tensor]:
        flat, rows, cols = part.subgrid()
        hi = flat.amax(-1)
        k = flat.shape[-1]
        # first maximal position without argmax (slow on CPU): max of eq * (k, k-1, ..., 1)
        rev = torch.arange(k, 0, -1, device=flat.device, dtype=flat.dtype)
        top = (k - (flat.eq(hi[..., None]) * rev).amax(-1)).long()
        full_idx = rows[top // len(cols)] * part.size[1] + cols[top % len(cols)]
        return flat.amin(-1), hi, full_idx

    def region_sums(self, regions: Tensor) -> tuple[Tensor, Tensor]:
        """``(sum over region of L, sum of L)`` per map for bool/float regions ``(b,H,W)``.

        Exact: the sums of ``Up(a)`` are ``<R^T G C, a>``; the normalisation is affine per map.
        """
        R, C = self.matrices()
        a = self.a.float()
        g = regions.float()
        w_region = R.T @ g @ C                    # (b,h,w)
        w_all = R.sum(0)[:, None] * C.sum(0)[None, :]  # (h,w)
        s_region = (a * w_region).sum((-2, -1))
        s_all = (a * w_all).sum((-2, -1))
        area = g.sum((-2, -1))
        total = float(self.size[0] * self.size[1])
        lo, hi, _ = self.extrema()
        if self.normalise == "minmax":
            s_region, s_all = s_region - lo * area, s_all - lo * total
            degenerate = hi - lo <= 0
        elif self.normalise == "max":
            degenerate = hi <= 0
        else:
            degenerate = torch.zeros_like(hi, dtype=torch.bool)
        zero = torch.zeros_like(s_all)
        return torch.where(degenerate, zero, s_region), torch.where(degenerate, zero, s_all)


def _normalise(up: Tensor, lo: Tensor, hi: Tensor, mode: str) -> Tensor:
    if mode == "none":
        return up
    if mode == "max":
        ok = hi > 0
        return torch.where(ok[..., None, None], up / torch.where(ok, hi, 1.0)[..., None, None], 0.0)
    rng = hi - lo
    ok = rng > 0
    return torch.where(ok[..., None, None],
                       (up - lo[..., None, None]) / torch.where(ok, rng, 1.0)[..., None, None], 0.0)


@lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int, device: str) -> Tensor:
    """``(n_out, n_in)`` weights of 1-D linear interpolation exactly as ``F.interpolate`` does it."""
    eye = torch.eye(n_in, device=device)
    return F.interpolate(eye[:, None, :], size=n_out, mode="linear", align_corners=False)[:, 0].T.contiguous()


@lru_cache(maxsize=32)
def _kron_subgrid(h: int, w: int, out_h: int, out_w: int, device: str) -> Tensor:
    """``(h*w, r*c)``: a flattened ``(h,w)`` map to its upsampled values on the extremal subgrid."""
    r = _interp_matrix(h, out_h, device)[_extremal_rows(h, out_h, device)]
    c = _interp_matrix(w, out_w, device)[_extremal_rows(w, out_w, device)]
    return torch.kron(r, c).T.contiguous()


@lru_cache(maxsize=32)
def _extremal_rows(n_in: int, n_out: int, device: str) -> Tensor:
    """Output indices where the interpolation stops being linear in the index (plus both ends).

    Between two such indices every output row is an affine function of its index, so a
    piecewise-bilinear map has its extrema (and its first maximum) at these indices.
    """
    R = _interp_matrix(n_in, n_out, "cpu").double()
    keep = torch.zeros(n_out, dtype=torch.bool)
    keep[0] = keep[-1] = True
    if n_out > 2:
        second = (R[:-2] - 2 * R[1:-1] + R[2:]).abs().amax(1)
        # pieces [p..q] and [q+1..r] give a non-zero second difference at both q and q+1
        keep[1:-1] = second > 1e-5  # float32 weights: rounding noise ~1e-7
    return torch.nonzero(keep)[:, 0].to(device)
