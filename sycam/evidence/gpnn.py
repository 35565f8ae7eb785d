"""Generative Patch Nearest Neighbours (GPNN; Granot et al., "Drop the GAN", CVPR 2022) in torch.

GPNN makes variations of a single image by coarse-to-fine patch nearest-neighbour copying. GPNN-CAM
(phase 1) runs a CAM on each variation and maps it back to the source with the adjoint of the patch
re-assembly; both halves live here.

Algorithm (random-sample task), levels n = N (coarsest) ... 0 (the image):

1. Gaussian pyramid x_0 ... x_N: blur (sigma = 2R/6) then bilinear downscale by R = 4/3 per level,
   N = ceil(log(min(H, W) / coarse_dim) / log R); the short side of x_N is exactly ``coarse_dim``.
2. y_N = x_N + sigma_noise * z, z ~ N(0, 1) per pixel, shared by the three channels.
3. At level n (from coarse to fine), y_n starts as up(y_{n+1}) (x_N + noise at n = N) and T PNN
   iterations run. One iteration takes the 7x7 patches (stride 1) of y_n as queries q_i, the patches
   of up(x_{n+1}) (first iteration; x_N at n = N) or of x_n (later ones) as keys k_j, and the patches
   of x_n as values v_j, then

       D(q_i, k_j) = ||q_i - k_j||_2,   S(q_i, k_j) = D(q_i, k_j) / (alpha + min_l D(q_l, k_j)),
       NN(i) = argmin_j S(q_i, k_j),
       y_n = P_NN x_n  (fold: every pixel is the uniform mean of the value patches covering it).

   The min over *queries* per key is the completeness prior (small alpha: every source patch is
   used by someone).

The re-assembly is linear in the source: y = P_I x with P_I = diag(1/c) . fold . gather_I . unfold,
c = number of patches covering each output pixel. Its adjoint P_I^T y = unfold^T-scatter_I(y / c)
is :func:`unpermute`, GPNN-CAM's "unpermute" of a variation's CAM into source coordinates.

Speed. An exact search costs O(N_q N_k d) per iteration and the normalised score needs two passes
over the distance matrix (column minima, then row argmins): at 224 px (N ~ 47.5k) one iteration of
one variation takes ~13 s on one CPU core even with 30-d patches. So, by default:

- coarse levels (<= ``fine_patches`` = 1300 patches; at 224 px up to 41 px, where the layout of a
  variation is decided) run the exact search, chunked to ``memory_mb`` blocks, ``iters`` = 10 times;
- fine levels run ``fine_iters`` = 2 iterations of a windowed search: query p only considers the
  (2r+1)^2 keys (r = 1) around its match c(p) (carried up from the coarser level on the first
  iteration, the previous match after) plus c(p + e) - e for its 4 neighbours e (PatchMatch's
  propagation). The normalised score is kept on that candidate graph: min_l runs over the queries
  whose candidates contain k_j.
- patches are compared after projection onto the top ``pca_dim`` = 30 principal components of the
  source patches of the level (as GPNN-CAM does); ``pca_dim=None`` compares all 3*7*7 values.

``fine_search="global", fine_iters=10, pca_dim=None`` is the official algorithm (many minutes per
image on a CPU). Against the exact search with the same schedule (``fine_search="global"``), the
windowed search gives the same layouts and the same patch error (mean distance of output patches
to their nearest source patch) at 1/50 to 1/80 of the time; see experiments/gpnn/README.md.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from ..errors import SycamError

__all__ = [
    "GPNNParams", "Correspondence", "GPNNResult", "gpnn_variations", "gaussian_pyramid",
    "normalised_nn", "local_normalised_nn", "permute", "unpermute", "coverage",
    "save_variation_grid",
]


# ----------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class GPNNParams:
    """Settings of :func:`gpnn_variations`.

    The first six are GPNN's (official defaults; GPNN-CAM uses sigma = 3.0). The rest choose how
    the nearest-neighbour search is done, see the module docstring.
    """

    patch_size: int = 7
    ratio: float = 4 / 3
    coarse_dim: int = 14
    sigma: float = 0.75
    alpha: float = 0.005
    iters: int = 10
    """PNN iterations per coarse level (official: 10 at every level)."""
    fine_patches: int = 1300
    """Levels with more patches per image than this are "fine" (at 224 px: 54 px and up)."""
    fine_iters: int = 2
    """PNN iterations per fine level."""
    fine_search: str = "window"
    """``"window"``: fine levels search a window around the propagated correspondence;
    ``"global"``: exact search everywhere (with ``fine_iters=iters`` the official algorithm)."""
    window_radius: int = 1
    """Half-width r of the (2r+1)^2 window of candidate keys (plus 4 neighbour proposals)."""
    pca_dim: int | None = 30
    """Compare patches in the span of the top ``pca_dim`` principal components; None: raw."""
    memory_mb: float = 8.0
    """Largest distance block (and candidate block) held at once, MiB. A few MiB stay in a CPU's
    cache and are fastest; on a GPU use hundreds."""

    def __post_init__(self):
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise SycamError(f"patch_size must be odd and positive, got {self.patch_size}")
        if self.ratio <= 1:
            raise SycamError(f"pyramid ratio must be > 1, got {self.ratio}")
        if self.coarse_dim < self.patch_size:
            raise SycamError(f"coarse_dim {self.coarse_dim} is smaller than the patch size")
        if self.iters < 1 or self.fine_iters < 1:
            raise SycamError("iters and fine_iters must be >= 1")
        if self.fine_search not in ("window", "global"):
            raise SycamError(f"fine_search must be 'window' or 'global', got {self.fine_search!r}")
        if self.alpha < 0 or self.sigma < 0 or self.window_radius < 0 or self.memory_mb <= 0:
            raise SycamError("alpha, sigma, window_radius must be >= 0 and memory_mb > 0")


# ----------------------------------------------------------------------------------------------
# the re-assembly operator P_I and its adjoint


def _coverage_count(size: tuple[int, int], p: int, device=None) -> Tensor:
    """c(y, x) = number of p x p stride-1 patches of an image of ``size`` that cover (y, x)."""
    h, w = size
    ry = torch.arange(h, device=device)
    rx = torch.arange(w, device=device)
    cy = (torch.minimum(ry, torch.full_like(ry, h - p)) - torch.clamp(ry - p + 1, min=0) + 1)
    cx = (torch.minimum(rx, torch.full_like(rx, w - p)) - torch.clamp(rx - p + 1, min=0) + 1)
    return (cy[:, None] * cx[None, :]).float()


@dataclass
class Correspondence:
    """Which source patch each output patch copied, at one pyramid level (the finest by default).

    ``index[v, i] = j``: output patch i of variation v (top-left (i // gw, i % gw), grid
    (gh, gw) = (H - p + 1, W - p + 1)) is a copy of source patch j (same grid convention).
    Output and source have the same size ``size = (H, W)``.
    """

    index: Tensor
    size: tuple[int, int]
    patch_size: int

    def __post_init__(self):
        gh, gw = self.grid
        if self.index.ndim != 2 or self.index.shape[1] != gh * gw:
            raise SycamError(f"correspondence index must be (n, {gh * gw}) for size {self.size} "
                             f"and patch {self.patch_size}, got {tuple(self.index.shape)}")

    @property
    def grid(self) -> tuple[int, int]:
        return self.size[0] - self.patch_size + 1, self.size[1] - self.patch_size + 1

    @property
    def n(self) -> int:
        return self.index.shape[0]

    @classmethod
    def identity(cls, n: int, size: tuple[int, int], patch_size: int, device=None) -> Correspondence:
        gh, gw = size[0] - patch_size + 1, size[1] - patch_size + 1
        return cls(torch.arange(gh * gw, device=device).expand(n, -1).clone(), tuple(size), patch_size)

    def coords(self) -> Tensor:
        """Source top-left (row, col) of each output patch, (n, 2, gh, gw)."""
        gh, gw = self.grid
        return torch.stack([self.index // gw, self.index % gw], 1).view(self.n, 2, gh, gw)

    def _flat_base(self) -> Tensor:
        """Flat pixel index (row * W + col) of the top-left of each copied source patch, (n, L)."""
        gw = self.grid[1]
        return (self.index // gw) * self.size[1] + self.index % gw

    def apply(self, x: Tensor) -> Tensor:
        """P_I x: ``x`` (C, H, W) or (n, C, H, W) source(s) -> (n, C, H, W) re-assembled images.

        (P_I x)(u) = (1/c(u)) * sum over output patches i covering u, at offset o inside the patch,
        of x(s_{I(i)} + o), with s_j the top-left of source patch j.
        """
        h, w = self.size
        p, (gh, gw) = self.patch_size, self.grid
        x = _batched(x, self.n, self.size)
        n, ch = x.shape[:2]
        flat = x.reshape(n, ch, h * w)
        base = self._flat_base()
        out = x.new_zeros(n, ch, h, w)
        for dy in range(p):
            for dx in range(p):
                idx = (base + (dy * w + dx))[:, None, :].expand(n, ch, -1)
                out[:, :, dy:dy + gh, dx:dx + gw] += flat.gather(2, idx).view(n, ch, gh, gw)
        return out / _coverage_count(self.size, p, x.device).to(x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        """P_I^T y: ``y`` (n, C, H, W) maps on the variations -> (n, C, H, W) in source coordinates.

        (P_I^T y)(s) = sum over output patches i and offsets o with s_{I(i)} + o = s of
        y(t_i + o) / c(t_i + o), t_i the top-left of output patch i. Satisfies
        <P_I x, y> = <x, P_I^T y>.
        """
        h, w = self.size
        p, (gh, gw) = self.patch_size, self.grid
        if y.ndim != 4 or y.shape[0] != self.n or tuple(y.shape[2:]) != self.size:
            raise SycamError(f"expected maps of shape ({self.n}, C, {h}, {w}), got {tuple(y.shape)}")
        n, ch = y.shape[:2]
        z = y / _coverage_count(self.size, p, y.device).to(y.dtype)
        base = self._flat_base()
        acc = y.new_zeros(n, ch, h * w)
        for dy in range(p):
            for dx in range(p):
                idx = (base + (dy * w + dx))[:, None, :].expand(n, ch, -1)
                acc.scatter_add_(2, idx, z[:, :, dy:dy + gh, dx:dx + gw].reshape(n, ch, gh * gw))
        return acc.view(n, ch, h, w)


def _batched(x: Tensor, n: int, size: tuple[int, int]) -> Tensor:
    if x.ndim == 3:
        x = x[None].expand(n, -1, -1, -1)
    if x.ndim != 4 or x.shape[0] != n or tuple(x.shape[2:]) != tuple(size):
        raise SycamError(f"expected a (C, {size[0]}, {size[1]}) or ({n}, C, ...) tensor, "
                         f"got {tuple(x.shape)}")
    return x


def permute(source: Tensor, correspondence: Correspondence) -> Tensor:
    """The re-assembly P_I: source image(s) -> variations, see :meth:`Correspondence.apply`."""
    return correspondence.apply(source)


def unpermute(maps: Tensor, correspondence: Correspondence) -> Tensor:
    """Adjoint P_I^T: maps on the variations, (n, H, W) or (n, C, H, W) -> maps on the source.

    This is GPNN-CAM's unpermute: a source pixel receives the (1/c-weighted) map values of every
    output pixel that copied it; pixels no patch copied get 0. Divide by :func:`coverage` for a
    per-pixel mean.
    """
    squeeze = maps.ndim == 3
    out = correspondence.adjoint(maps[:, None] if squeeze else maps)
    return out[:, 0] if squeeze else out


def coverage(correspondence: Correspondence) -> Tensor:
    """P_I^T 1, (n, H, W): how much of each source pixel went into each variation (sums to H*W)."""
    ones = torch.ones(correspondence.n, 1, *correspondence.size, device=correspondence.index.device)
    return correspondence.adjoint(ones)[:, 0]


# ----------------------------------------------------------------------------------------------
# pyramid and resizing


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur, truncated at 4 sigma, reflect padding; x (n, C, H, W)."""
    r = max(1, int(math.ceil(4 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    ch = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate" if min(x.shape[-2:]) <= r else "reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(ch, 1, 1, -1), groups=ch)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(ch, 1, -1, 1), groups=ch)


def _resize(x: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear resize (half-pixel centres) of (n, C, H, W); anti-aliased when shrinking unless
    told otherwise (after an explicit blur)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=antialias and shrink)


def _level_sizes(h: int, w: int, ratio: float, coarse_dim: int) -> list[tuple[int, int]]:
    depth = max(0, math.ceil(math.log(min(h, w) / coarse_dim) / math.log(ratio) - 1e-9))
    sizes = [(h, w)]
    for _ in range(depth - 1):
        ph, pw = sizes[-1]
        sizes.append((math.ceil(ph / ratio), math.ceil(pw / ratio)))
    if depth:
        ph, pw = sizes[-1]
        s = coarse_dim / min(ph, pw)
        sizes.append((max(coarse_dim, round(ph * s)), max(coarse_dim, round(pw * s))))
    return sizes


def gaussian_pyramid(image: Tensor, ratio: float = 4 / 3, coarse_dim: int = 14) -> list[Tensor]:
    """[x_0 = image, x_1, ..., x_N] finest first; x_{n+1} = bilinear(blur_{2R/6}(x_n), ceil(size/R))
    (skimage's pyramid_reduce).

    N = ceil(log(min(H, W)/coarse_dim) / log R); x_N is an anti-aliased resize of x_{N-1} with
    short side exactly ``coarse_dim`` (aspect kept), as the official code does.
    """
    x = image[None] if image.ndim == 3 else image
    sizes = _level_sizes(x.shape[-2], x.shape[-1], ratio, coarse_dim)
    out = [x]
    for i, size in enumerate(sizes[1:], 1):
        if i == len(sizes) - 1:
            out.append(_resize(out[-1], size))
        else:
            out.append(_resize(_gaussian_blur(out[-1], 2 * ratio / 6), size, antialias=False))
    return [t[0] for t in out] if image.ndim == 3 else out


# ----------------------------------------------------------------------------------------------
# nearest-neighbour search with the normalised (completeness) score


def _block_elements(memory_mb: float) -> int:
    return max(1, int(memory_mb * 2 ** 20 / 4))  # float32


def _augment(queries: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """q~ = [q, |q|^2, 1], k~ = [-2k, 1, |k|^2], so that q~ . k~ = ||q - k||^2 in one product."""
    one_q = queries.new_ones(queries.shape[:-1] + (1,))
    one_k = keys.new_ones(keys.shape[:-1] + (1,))
    qa = torch.cat([queries, queries.pow(2).sum(-1, keepdim=True), one_q], -1)
    ka = torch.cat([-2 * keys, one_k, keys.pow(2).sum(-1, keepdim=True)], -1)
    return qa, ka


def normalised_nn(queries: Tensor, keys: Tensor, alpha: float, *, memory_mb: float = 8.0) -> Tensor:
    """Exact GPNN search. queries (n, Nq, d) (n independent images), keys (Nk, d) -> (n, Nq) long.

    D_ij = ||q_i - k_j||_2,  m_j = min_i D_ij (per image),  NN(i) = argmin_j D_ij / (alpha + m_j)
    (ties: lowest j). The n x Nq x Nk matrix is never held whole: it is computed in blocks of at
    most ``memory_mb`` MiB, twice: once for m, once for the row argmins of D^2 / (alpha + m)^2
    (the same argmin). Every entry is computed the same way whatever the blocks, so the result
    does not depend on ``memory_mb``. Blocks of a few MiB stay in cache: fastest on a CPU.
    """
    n, nq, _ = queries.shape
    nk = keys.shape[0]
    qa, ka = _augment(queries, keys)
    budget = _block_elements(memory_mb)
    ck = max(1, min(nk, 4096, budget // n))
    cq = max(1, min(nq, budget // (n * ck)))
    kat = ka.t().contiguous()
    m2 = queries.new_full((n, nk), math.inf)
    for k0 in range(0, nk, ck):
        k1 = min(nk, k0 + ck)
        for q0 in range(0, nq, cq):
            q1 = min(nq, q0 + cq)
            blk = torch.matmul(qa[:, q0:q1], kat[:, k0:k1])
            torch.minimum(m2[:, k0:k1], blk.amin(1), out=m2[:, k0:k1])
    w = (alpha + m2.clamp_min_(0).sqrt_()).pow_(-2)
    nn = torch.zeros(n, nq, dtype=torch.long, device=queries.device)
    for q0 in range(0, nq, cq):
        q1 = min(nq, q0 + cq)
        best = queries.new_full((n, q1 - q0), math.inf)
        arg = nn[:, q0:q1]
        for k0 in range(0, nk, ck):
            k1 = min(nk, k0 + ck)
            # scale after the product: one rounding per entry, whatever the block shape
            blk = torch.matmul(qa[:, q0:q1], kat[:, k0:k1]).mul_(w[:, None, k0:k1])
            v, a = blk.min(2)
            better = v < best
            best = torch.where(better, v, best)
            arg.copy_(torch.where(better, a + k0, arg))
    return nn


def local_normalised_nn(queries: Tensor, keys: Tensor, candidates: Tensor, alpha: float, *,
                        memory_mb: float = 8.0) -> Tensor:
    """GPNN's score restricted to candidate sets C(i). queries (n, Nq, d), keys (Nk, d),
    candidates (n, Nq, K) long -> (n, Nq) long.

    m_j = min over {i : j in C(i)} of D_ij,  NN(i) = argmin_{j in C(i)} D_ij / (alpha + m_j)
    (ties: first candidate). With C(i) = all keys in index order this is :func:`normalised_nn`.
    """
    n, nq, _ = queries.shape
    nk = keys.shape[0]
    kk = candidates.shape[2]
    qa, ka = _augment(queries, keys)
    d2 = queries.new_empty(n, nq, kk)
    # a block of gathered keys and its product with the queries
    cq = max(1, min(nq, _block_elements(memory_mb) // max(1, 2 * n * kk * ka.shape[1])))
    for q0 in range(0, nq, cq):
        q1 = min(nq, q0 + cq)
        keys_c = F.embedding(candidates[:, q0:q1], ka)  # a row gather; much faster than ka[idx]
        d2[:, q0:q1] = (keys_c * qa[:, q0:q1, None, :]).sum(-1)
    flat_c = candidates.reshape(n, -1)
    m2 = queries.new_full((n, nk), math.inf).scatter_reduce_(1, flat_c, d2.reshape(n, -1), "amin")
    w = (alpha + m2.clamp_min_(0).sqrt_()).pow_(-2)
    score = d2 * w.gather(1, flat_c).view(n, nq, kk)
    return candidates.gather(2, score.argmin(2, keepdim=True))[..., 0]


def _window_candidates(cy: Tensor, cx: Tensor, grid: tuple[int, int], r: int) -> Tensor:
    """Candidate keys of every query, (n, L, (2r+1)^2 + 4) flat indices, clamped to the grid:
    the (2r+1)^2 window around its own centre c(p) = (cy, cx), then c(p + e) - e for the four
    neighbours e (PatchMatch's propagation: a neighbour's match, shifted back, continues a
    coherently copied region across the query)."""
    gh, gw = grid
    n = cy.shape[0]
    off = torch.arange(-r, r + 1, device=cy.device)
    yy = (cy[..., None, None] + off[:, None]).clamp(0, gh - 1)
    xx = (cx[..., None, None] + off[None, :]).clamp(0, gw - 1)
    out = [(yy * gw + xx).flatten(-2)]
    ys, xs = cy.view(n, gh, gw), cx.view(n, gh, gw)
    rows = torch.arange(gh, device=cy.device)
    cols = torch.arange(gw, device=cy.device)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ri, ci = (rows + dy).clamp(0, gh - 1), (cols + dx).clamp(0, gw - 1)
        ny = (ys[:, ri][:, :, ci] - dy).clamp(0, gh - 1)
        nx = (xs[:, ri][:, :, ci] - dx).clamp(0, gw - 1)
        out.append((ny * gw + nx).view(n, -1, 1))
    return torch.cat(out, -1)


def _propagate(nn: Tensor, coarse_size, fine_size, p: int) -> tuple[Tensor, Tensor]:
    """Carry a coarse correspondence to the fine grid: (cy, cx) (n, L_fine) source top-lefts.

    A fine patch centre u maps to coarse coordinates u' = (u + 1/2) s - 1/2 (s = coarse/fine), the
    nearest coarse patch p' copied source patch NN(p'); the fine source centre is the image of
    NN(p') + (u' - p') back at the fine scale.
    """
    h = (p - 1) / 2
    (ch_, cw_), (fh, fw) = coarse_size, fine_size
    cgh, cgw = ch_ - p + 1, cw_ - p + 1
    fgh, fgw = fh - p + 1, fw - p + 1
    dev = nn.device

    def axis(fn, cn, fg, cg):
        s = cn / fn
        u = (torch.arange(fg, device=dev, dtype=torch.float32) + h + 0.5) * s - 0.5  # coarse centre
        pc = torch.clamp(torch.round(u - h), 0, cg - 1)  # nearest coarse patch (top-left)
        return u, pc.long()

    uy, py = axis(fh, ch_, fgh, cgh)
    ux, px = axis(fw, cw_, fgw, cgw)
    src = nn.view(-1, cgh, cgw)[:, py][:, :, px]  # (n, fgh, fgw) coarse source patch
    sy, sx = (src // cgw).float(), (src % cgw).float()
    my = sy + h + (uy - h - py.float())[:, None]  # matched coarse centre
    mx = sx + h + (ux - h - px.float())[None, :]
    fy = torch.round((my + 0.5) * (fh / ch_) - 0.5 - h).clamp(0, fgh - 1).long()
    fx = torch.round((mx + 0.5) * (fw / cw_) - 0.5 - h).clamp(0, fgw - 1).long()
    return fy.flatten(1), fx.flatten(1)


# ----------------------------------------------------------------------------------------------
# GPNN


def _pca_basis(x: Tensor, p: int, dim: int | None) -> tuple[Tensor, Tensor]:
    """(B, mu): B (d, C*p*p) rows = top-d principal directions of the p x p patches of x (C, H, W),
    mu their mean. B = identity when ``dim`` is None (raw patches)."""
    pt = F.unfold(x[None], p)[0]  # (C p p, L)
    mu = pt.mean(1)
    full = pt.shape[0]
    if dim is None or dim >= full:
        return torch.eye(full, device=x.device, dtype=x.dtype), mu
    pt = pt - mu[:, None]
    _, vecs = torch.linalg.eigh(pt @ pt.t())  # ascending eigenvalues
    return vecs[:, -dim:].flip(1).t().contiguous(), mu


def _features(img: Tensor, basis: Tensor, mu: Tensor, p: int) -> Tensor:
    """Projected patches: img (n, C, H, W) -> (n, L, d), row i = B (patch_i - mu) (unfold order).

    Centring changes no distance; it keeps |q|^2 small, so ||q-k||^2 = |q|^2 + |k|^2 - 2 q.k loses
    little to cancellation."""
    w = basis.view(basis.shape[0], img.shape[1], p, p)
    return F.conv2d(img, w, bias=-(basis @ mu)).flatten(2).transpose(1, 2).contiguous()


@dataclass
class GPNNResult:
    """Output of :func:`gpnn_variations`."""

    images: Tensor
    """(n, 3, H, W) variations, in [0, 1] (means of source pixels)."""
    correspondence: Correspondence
    """Finest-level patch correspondence: ``images == permute(source, correspondence)``."""
    params: GPNNParams
    seed: int
    levels: list[dict] = field(default_factory=list)
    """Per level (coarse to fine): size, search ('global' / 'window'), iterations, seconds."""

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of the whole generation."""
        return sum(lv["seconds"] for lv in self.levels)


def gpnn_variations(image: Tensor, n: int, *, seed: int, params: GPNNParams | None = None,
                    **overrides) -> GPNNResult:
    """``n`` GPNN variations of ``image`` (3, H, W) in [0, 1], deterministic from ``seed``.

    ``params`` (default :class:`GPNNParams`) and keyword ``overrides`` (e.g. ``sigma=3.0``) set
    the algorithm. Variation v's noise is the v-th draw of a generator seeded with ``seed``, so
    variation v does not depend on ``n``. Runs on ``image.device``.
    """
    prm = replace(params or GPNNParams(), **overrides)
    if image.ndim != 3 or image.shape[0] != 3:
        raise SycamError(f"expected an image (3, H, W), got {tuple(image.shape)}")
    if n < 1:
        raise SycamError(f"n must be >= 1, got {n}")
    if min(image.shape[1:]) < prm.coarse_dim:
        raise SycamError(f"image {tuple(image.shape[1:])} is smaller than coarse_dim {prm.coarse_dim}")
    x = image.float()
    p = prm.patch_size
    pyr = [lv[None] for lv in gaussian_pyramid(x, prm.ratio, prm.coarse_dim)]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    hn, wn = pyr[-1].shape[-2:]
    noise = torch.stack([torch.randn(1, hn, wn, generator=gen) for _ in range(n)]).to(x.device)
    y = pyr[-1] + prm.sigma * noise  # (n, 3, hN, wN), channels share the noise
    nn, prev_size, levels = None, None, []
    for lvl in reversed(range(len(pyr))):
        t0 = time.perf_counter()
        xs = pyr[lvl]
        size = tuple(xs.shape[-2:])
        grid = (size[0] - p + 1, size[1] - p + 1)
        if lvl == len(pyr) - 1:
            first_keys = xs
        else:
            y = _resize(y, size)
            first_keys = _resize(pyr[lvl + 1], size)
        fine = grid[0] * grid[1] > prm.fine_patches
        exact = not fine or prm.fine_search == "global" or nn is None
        basis, mu = _pca_basis(xs[0], p, prm.pca_dim)
        sharp = _features(xs, basis, mu, p)[0]
        iters = prm.fine_iters if fine else prm.iters
        for it in range(iters):
            keys = _features(first_keys, basis, mu, p)[0] if it == 0 else sharp
            q = _features(y, basis, mu, p)
            if exact:
                nn = normalised_nn(q, keys, prm.alpha, memory_mb=prm.memory_mb)
            else:
                if it == 0:
                    cy, cx = _propagate(nn, prev_size, size, p)
                else:
                    cy, cx = nn // grid[1], nn % grid[1]
                cand = _window_candidates(cy, cx, grid, prm.window_radius)
                nn = local_normalised_nn(q, keys, cand, prm.alpha, memory_mb=prm.memory_mb)
            y = Correspondence(nn, size, p).apply(xs[0])
        prev_size = size
        levels.append({"size": list(size), "search": "global" if exact else "window",
                       "iters": iters, "seconds": round(time.perf_counter() - t0, 4)})
    return GPNNResult(y, Correspondence(nn, tuple(x.shape[-2:]), p), prm, seed, levels)


# ----------------------------------------------------------------------------------------------
# pictures


def save_variation_grid(source: Tensor, variations: Tensor, path: str | Path, *, ncols: int = 4,
                        gap: int = 4, title: str | None = None) -> Path:
    """PNG grid: the source (framed in red) first, then the variations; pixels are not resampled."""
    imgs = torch.cat([source[None], variations]).clamp(0, 1)
    imgs = (imgs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
    k, h, w = imgs.shape[:3]
    ncols = min(ncols, k)
    nrows = math.ceil(k / ncols)
    top = 16 if title else 0
    canvas = Image.new("RGB", (ncols * (w + gap) + gap, top + nrows * (h + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, 2), title, fill="black")
    for i in range(k):
        x0 = gap + (i % ncols) * (w + gap)
        y0 = top + gap + (i // ncols) * (h + gap)
        canvas.paste(Image.fromarray(imgs[i].numpy()), (x0, y0))
        if i == 0:
            draw.rectangle([x0 - 2, y0 - 2, x0 + w + 1, y0 + h + 1], outline="red", width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
