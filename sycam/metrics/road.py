"""ROAD: RemOve And Debias (Rong et al., ICML 2022, https://arxiv.org/abs/2202.00449).

Removed pixels are *imputed* rather than blanked, so the model cannot read the removal mask
from the image. Noisy linear imputation: every removed pixel equals the weighted mean of its
8 neighbours (weights 1/6 direct, 1/12 diagonal; neighbours outside the image are dropped and
the weights renormalised), plus N(0, 0.01^2) noise. For the set U of removed pixels this is
the sparse linear system, per channel,

    s_i v_i - sum_{j in N(i) & U} w_ij v_j = sum_{j in N(i) \\ U} w_ij x_j      (i in U),

s_i = sum of the in-image neighbour weights: a masked graph Laplacian, symmetric positive
definite when every 8-connected region of U borders a known pixel (a region with no known
neighbour -- e.g. everything removed -- gets 0, the dataset mean colour). The reference code solves it with scipy's
``spsolve`` per image; here it is solved on the maps' device, batched over images, channels,
percentiles and candidates, by conjugate gradients preconditioned with a geometric multigrid
V-cycle (damped Jacobi smoothing; a coarse pixel is unknown iff its four children are), inside
a float64 iterative refinement: 10-13 float32 CG iterations reach a relative float64 residual of
1e-6, matching ``spsolve`` to ~1e-6 (tests at 112x112; ``benchmarks/metrics.py`` checks
224x224 and times it against grad-cam's scipy imputer).
Imputation works on the model input ``x`` (normalised space), as the reference code does.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import Batch
from .base import Cost, Direction, Metric, MetricError, Resources, ScoreFn, dedup_rows, run_model

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ---------------------------------------------------------------------- the linear system
def _sep121(x: Tensor, scale: float = 1.0) -> Tensor:
    """``scale`` times the separable [1,2,1] x [1,2,1] filter, zero padding (in-place adds)."""
    r = x * (2 * scale)
    r[..., :, 1:].add_(x[..., :, :-1], alpha=scale)
    r[..., :, :-1].add_(x[..., :, 1:], alpha=scale)
    out = r * 2
    out[..., 1:, :] += r[..., :-1, :]
    out[..., :-1, :] += r[..., 1:, :]
    return out


def neighbour_sum(x: Tensor) -> Tensor:
    """sum_j w_ij x_j over the 8 in-image neighbours (1/6 direct, 1/12 diagonal).

    The 3x3 kernel [[1,2,1],[2,0,2],[1,2,1]]/12 is [1,2,1]^T[1,2,1]/12 minus 1/3 at the centre.
    """
    return _sep121(x, 1 / 12) - x / 3


class _Level:
    """One multigrid level: unknown mask ``u`` (N,1,h,w) float and neighbour-weight sums ``s``."""

    def __init__(self, u: Tensor):
        self.u = u
        self.s = neighbour_sum(torch.ones_like(u[:1]))  # in-image weight sum (same for all systems)
        self.diag = self.s + 1 / 3                        # A x = u * (diag * x - sep121(x) / 12)
        self.inv_s = 1 / self.s

    def apply(self, x: Tensor) -> Tensor:
        return _sep121(x, -1 / 12).addcmul_(self.diag, x).mul_(self.u)


def _levels(u: Tensor, coarsest: int = 3) -> list[_Level]:
    levels = [_Level(u)]
    while min(u.shape[-2:]) > coarsest:
        u = -F.max_pool2d(-u, 2, ceil_mode=True)  # coarse pixel unknown iff all its children are
        levels.append(_Level(u))
    return levels


def _vcycle(levels: list[_Level], r: Tensor, level: int = 0, sweeps: int = 2, omega: float = 0.9,
            coarse_sweeps: int = 20) -> Tensor:
    """Symmetric V-cycle approximating A^-1 r (an SPD preconditioner for CG)."""
    lv = levels[level]
    step = omega * lv.inv_s
    last = level == len(levels) - 1
    e = step * r
    for _ in range((coarse_sweeps if last else sweeps) - 1):
        e.addcmul_(step, r - lv.apply(e))
    if last:
        return e
    res = r - lv.apply(e)
    coarse = levels[level + 1]
    rc = F.avg_pool2d(res, 2, ceil_mode=True, divisor_override=1).mul_(coarse.u)  # R = P^T (sum)
    ec = _vcycle(levels, rc, level + 1, sweeps, omega, coarse_sweeps)
    h, w = r.shape[-2:]
    e.addcmul_(lv.u, F.interpolate(ec, scale_factor=2, mode="nearest")[..., :h, :w])
    for _ in range(sweeps):
        e.addcmul_(step, r - lv.apply(e))
    return e


def _pcg(levels: list[_Level], b: Tensor, tol: float, max_iter: int) -> tuple[Tensor, int]:
    """Preconditioned CG for ``A e = b`` (batched systems ``(N,C,H,W)``) to relative residual ``tol``."""
    sol = torch.zeros_like(b)
    r = b.clone()
    bnorm = b.flatten(-2).norm(dim=-1).clamp_min(1e-30)
    z = _vcycle(levels, r)
    p = z.clone()
    rz = (r * z).sum((-2, -1), keepdim=True)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - its last value is returned: the iterations done
        ap = levels[0].apply(p)
        pap = (p * ap).sum((-2, -1), keepdim=True)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(1e-30), torch.zeros_like(pap))
        sol += alpha * p
        r -= alpha * ap
        if (r.flatten(-2).norm(dim=-1) / bnorm).max() <= tol:
            break
        z = _vcycle(levels, r)
        rz_new = (r * z).sum((-2, -1), keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        rz = rz_new
        p = z + beta * p
    return sol, it


def linear_impute(x: Tensor, remove: Tensor, tol: float = 1e-6, max_iter: int = 100,
                  return_info: bool = False) -> Tensor | tuple[Tensor, dict]:
    """Noise-free linear imputation of the pixels ``remove`` ``(N,H,W)`` bool of ``x`` ``(N,C,H,W)``.

    Mixed-precision iterative refinement: the residual ``b - A v`` is formed in float64 and the
    correction solved in float32 by multigrid-preconditioned CG (to 1e-3), until every system's
    relative float64 residual is below ``tol``. (Plain float32 CG stalls near 1e-4 absolute
    error on large removed regions; refinement reaches spsolve's answer to ~1e-6.) A system with
    nothing known (all removed) has the solution 0. ``return_info`` adds the CG iteration count
    and the final relative residual.
    """
    if remove.shape != (x.shape[0], *x.shape[-2:]):
        raise MetricError(f"remove must be (N,H,W) = {(x.shape[0], *x.shape[-2:])}, got {tuple(remove.shape)}")
    v = x.double()
    u = remove[:, None].double()
    fine = _Level(u)
    b = u * neighbour_sum((1 - u) * v)
    bnorm = b.flatten(-2).norm(dim=-1).clamp_min(1e-30)
    levels = _levels(remove[:, None].float())
    sol = torch.zeros_like(v)
    iterations, rel = 0, 0.0
    for _ in range(max_iter):
        r = b - fine.apply(sol)
        rel = float((r.flatten(-2).norm(dim=-1) / bnorm).max())
        if rel <= tol or iterations >= max_iter:
            break
        corr, its = _pcg(levels, r.float(), 1e-3, max_iter - iterations)
        iterations += its
        sol += corr.double()
    out = torch.where(remove[:, None], sol.to(x.dtype), x)
    if return_info:
        return out, {"iterations": iterations, "residual": rel}
    return out


def noisy_linear_impute(x: Tensor, remove: Tensor, noise: float = 0.01, generator: torch.Generator | None = None,
                        tol: float = 1e-6) -> Tensor:
    """:func:`linear_impute` plus N(0, noise^2) on the removed pixels (every channel)."""
    out = linear_impute(x, remove, tol=tol)
    assert isinstance(out, Tensor)
    if noise > 0:
        eps = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        out = out + noise * eps * remove[:, None]
    return out


def spsolve_impute(x: Tensor, remove: Tensor) -> Tensor:
    """Reference imputation with scipy's sparse direct solver (CPU, float64; for tests).

    The system is assembled independently of :func:`linear_impute` (explicit neighbour lists).
    """
    # deferred: scipy.sparse costs 0.2 s at import; only this reference solver (tests) needs it
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    outs = []
    for img, rem in zip(x.detach().cpu().double().numpy(), remove.detach().cpu().numpy()):
        c, h, w = img.shape
        flat_rem = rem.reshape(-1)
        idx = np.flatnonzero(flat_rem)
        out = img.reshape(c, -1).copy()
        if idx.size == 0 or idx.size == h * w:
            if idx.size:
                out[:] = 0.0
            outs.append(out.reshape(c, h, w))
            continue
        var = -np.ones(h * w, dtype=np.int64)
        var[idx] = np.arange(idx.size)
        yy, xx = np.divmod(idx, w)
        diag = np.zeros(idx.size)
        rows, cols, vals = [np.arange(idx.size)], [np.arange(idx.size)], []
        rhs = np.zeros((idx.size, c))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == 0 and dx == 0:
                    continue
                wgt = 1 / 12 if dy and dx else 1 / 6
                ny, nx = yy + dy, xx + dx
                inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
                diag[inside] += wgt
                j = np.where(inside, ny * w + nx, 0)
                unknown = inside & flat_rem[j]
                known = inside & ~flat_rem[j]
                rows.append(np.flatnonzero(unknown))
                cols.append(var[j[unknown]])
                vals.append(np.full(int(unknown.sum()), -wgt))
                rhs[known] += wgt * out[:, j[known]].T
        a = csc_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(idx.size, idx.size))
        sol = spsolve(a, rhs)
        out[:, idx] = np.asarray(sol).reshape(idx.size, c).T
        outs.append(out.reshape(c, h, w))
    return torch.from_numpy(np.stack(outs)).to(x.device, x.dtype)


# ---------------------------------------------------------------------- removal masks
def removal_masks(maps: Tensor, fractions: Tensor, order: str, selection: str = "threshold") -> Tensor:
    """Pixels removed for each fraction: ``maps (m,H,W)``, ``fractions (m,)`` -> ``(m,H,W)`` bool,
    or ``fractions (m,F)`` -> ``(m,F,H,W)`` (every fraction of a map from one sort of it).

    ``selection="threshold"`` (the reference code): MoRF removes ``L >= q_{1-r}(L)`` with q the
    linear-interpolation quantile; LeRF applies the same rule to ``-L``. With ties (flat maps)
    this can remove more than a fraction r. ``"rank"`` removes exactly ``round(r*H*W)`` pixels
    (stable order: ties by position).
    """
    flat = maps.flatten(1)
    if order not in ("morf", "lerf"):
        raise MetricError(f"order must be 'morf' or 'lerf', got {order!r}")
    key = flat if order == "morf" else -flat
    npx = flat.shape[1]
    single = fractions.dim() == 1
    fr = fractions.to(torch.float64)
    fr = fr[:, None] if single else fr
    if selection == "threshold":
        srt = key.sort(dim=1).values
        pos = (1 - fr) * (npx - 1)
        lo = pos.floor().long().clamp(0, npx - 1)
        hi = (lo + 1).clamp(max=npx - 1)
        t = (pos - lo).to(flat.dtype)
        a, b = srt.gather(1, lo), srt.gather(1, hi)
        thr = a + (b - a) * t
        out = key[:, None, :] >= thr[:, :, None]
    elif selection == "rank":
        k = (fr * npx).round().long()
        order_idx = key.argsort(dim=1, descending=True, stable=True)
        positions = torch.arange(npx, device=maps.device).expand_as(order_idx)
        ranks = torch.empty_like(order_idx).scatter_(1, order_idx, positions)
        out = ranks[:, None, :] < k[:, :, None]
    else:
        raise MetricError(f"selection must be 'threshold' or 'rank', got {selection!r}")
    out = out.view(maps.shape[0], fr.shape[1], *maps.shape[1:])
    return out[:, 0] if single else out


# ---------------------------------------------------------------------- the metric
class ROAD(Metric):
    """ROAD score: change of the target probability after noisy linear imputation.

    For each removed fraction r (default 10 %, ..., 90 %): MoRF removes the most relevant
    pixels, LeRF the least relevant; Delta_r = p_c(x~_r) - p_c(x). ``order="morf"`` scores
    mean_r Delta (lower is better), ``"lerf"`` mean_r Delta (higher is better),
    ``"combined"`` (LeRF - MoRF) / 2 (higher is better; grad-cam's ROADCombined).
    The ``fractions`` are the *removed* shares; grad-cam's ``percentile=p`` removes 100-p %.
    Cost: one forward per fraction and order per map and image, + 1 shared (original).
    The imputation noise is drawn per (seed, order, fraction, image): every candidate sees the
    same noise, and a score does not depend on the batch size or on the other candidates (up to
    the solver's tolerance). All candidates' inputs are imputed and scored in shared batches, the
    original's score once per call, and an input two candidates share (the same pixels removed
    of an image at a fraction) once.
    """

    name = "road_combined"
    needs = frozenset({"model_fn"})
    dedup = True  # an input several candidates share is imputed and scored once (False: to measure it)

    def __init__(self, order: str = "combined", fractions: tuple[float, ...] | list[float] = DEFAULT_FRACTIONS,
                 noise: float = 0.01, selection: str = "threshold", score: str | ScoreFn = "prob",
                 seed: int = 0, tol: float = 1e-6, impute_batch: int | None = None, solver: str = "cg"):
        if order not in ("morf", "lerf", "combined"):
            raise MetricError(f"order must be 'morf', 'lerf' or 'combined', got {order!r}")
        if not fractions or not all(0 < f < 1 for f in fractions):
            raise MetricError(f"fractions must lie in (0,1), got {fractions}")
        if solver not in ("cg", "spsolve"):
            raise MetricError(f"solver must be 'cg' or 'spsolve', got {solver!r}")
        if selection not in ("threshold", "rank"):
            raise MetricError(f"selection must be 'threshold' or 'rank', got {selection!r}")
        self.order, self.fractions = order, tuple(float(f) for f in fractions)
        self.noise, self.selection, self.score, self.seed = float(noise), selection, score, seed
        self.tol, self.impute_batch, self.solver = tol, impute_batch, solver
        self.name = {"morf": "road_morf", "lerf": "road_lerf", "combined": "road_combined"}[order]
        self.direction = Direction.LOWER if order == "morf" else Direction.HIGHER
        orders = 2 if order == "combined" else 1
        self.cost = Cost(forwards=orders * len(self.fractions), shared_forwards=1)

    def deltas(self, maps: Tensor, batch: Batch, res: Resources) -> dict[str, Tensor]:
        """Delta per order: ``{"morf": (n,b,F), "lerf": (n,b,F)}`` (the orders computed)."""
        x, labels = batch.x, batch.labels
        n, b = maps.shape[:2]
        orders = ["morf", "lerf"] if self.order == "combined" else [self.order]
        nf = len(self.fractions)
        fr = torch.tensor(self.fractions, device=x.device)
        # noise identity of a job: (order, removed share in 1e-4 units, image), independent of the
        # candidate, of the chunking and of whether the other order is computed too
        order_id = torch.tensor([0 if name == "morf" else 1 for name in orders], device=x.device)
        share = (fr * 10_000).round().long()
        flat = maps.flatten(0, 1)  # (n*b,H,W)
        y = run_model(res.model_fn, b, lambda i, j: (x[i:j], labels[i:j]), res.batch_size, self.score)  # type: ignore[arg-type]
        # job ((order*n + candidate)*b + image)*F + fraction; `jobs` are those to run, one per input
        jobs, where = self._jobs(flat, fr, orders, n, b)
        total = jobs.numel()
        # systems imputed together (more per solve = fewer, larger tensor ops): ~32 of 224x224
        block = self.impute_batch or max(1, (32 * 224 * 224) // (maps.shape[-1] * maps.shape[-2]))
        cache: dict[str, Any] = {"start": 0, "stop": 0, "x": None}

        def impute(start: int, stop: int) -> Tensor:
            job = jobs[start:stop]
            o, rest = job // (n * b * nf), job % (n * b * nf)
            mb, f = rest // nf, rest % nf
            img = mb % b
            rm = torch.empty(job.numel(), *maps.shape[-2:], dtype=torch.bool, device=x.device)
            for oi, name in enumerate(orders):
                sel = o == oi
                if sel.any():
                    uniq, inv = torch.unique(mb[sel], return_inverse=True)   # one sort per map
                    rm[sel] = removal_masks(flat[uniq], fr.expand(len(uniq), nf), name, self.selection)[inv, f[sel]]
            xs = x[img]
            imp = linear_impute(xs, rm, tol=self.tol) if self.solver == "cg" else spsolve_impute(xs, rm)
            if self.noise > 0:
                key = (order_id[o] * 10_001 + share[f]) * b + img
                keys, kinv = torch.unique(key, return_inverse=True)           # one draw per key
                imp = imp + self.noise * self._draws(keys, xs.shape[1:], xs.device)[kinv] * rm[:, None]
            return imp

        def build(i: int, j: int) -> tuple[Tensor, Tensor]:
            # forward batches are served from blocks of `block` imputed inputs
            parts, k = [], i
            while k < j:
                if not cache["start"] <= k < cache["stop"]:
                    cache.update(start=k, stop=min(total, k + max(block, j - k)), x=None)
                    cache["x"] = impute(cache["start"], cache["stop"])
                take = min(j, cache["stop"]) - k
                parts.append(cache["x"][k - cache["start"]:k - cache["start"] + take])
                k += take
            return torch.cat(parts), labels[(jobs[i:j] % (n * b * nf)) // nf % b]

        scores = run_model(res.model_fn, total, build, res.batch_size, self.score)  # type: ignore[arg-type]
        d = scores[where].view(len(orders), n, b, nf) - y.view(1, 1, b, 1)
        return {name: d[k] for k, name in enumerate(orders)}

    def _jobs(self, flat: Tensor, fr: Tensor, orders: list[str], n: int, b: int) -> tuple[Tensor, Tensor]:
        """``(jobs to run, where)`` (:func:`~sycam.metrics.base.dedup_rows`): two candidates that
        remove the same pixels of an image, in the same order and fraction, impute the same input
        (the noise is the same for every candidate), so it is imputed and scored once."""
        nf = fr.numel()
        total = len(orders) * n * b * nf
        if not self.dedup or n < 2:
            every = torch.arange(total, device=flat.device)
            return every, every

        def groups():
            for oi, name in enumerate(orders):
                for img in range(b):
                    mb = torch.arange(img, n * b, b, device=flat.device)   # every candidate's map of it
                    masks = removal_masks(flat[mb], fr.expand(n, nf), name, self.selection)
                    for f in range(nf):
                        yield (oi * n * b + mb) * nf + f, masks[:, f]

        jobs, where = dedup_rows(total, groups)
        return jobs.to(flat.device), where.to(flat.device)

    def _draws(self, keys: Tensor, shape: torch.Size, device: torch.device) -> Tensor:
        """N(0,1) noise per job, seeded by (seed, order, fraction, image): the same draws for every
        candidate and whatever the chunking (common random numbers across candidates)."""
        out = torch.empty((keys.numel(), *shape), device=device)
        gen = torch.Generator(device=device)
        for i, k in enumerate(keys.tolist()):
            gen.manual_seed(self.seed * 1_000_003 + int(k))
            out[i] = torch.randn(shape, generator=gen, device=device)
        return out

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        d = self.deltas(maps, batch, res)
        if self.order == "combined":
            return (d["lerf"].mean(-1) - d["morf"].mean(-1)) / 2
        return d[self.order].mean(-1)
