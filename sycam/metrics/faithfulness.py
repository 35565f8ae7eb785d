"""Faithfulness metrics: does the model's confidence follow the pixels the map calls important?

All run ``model_fn`` on perturbed inputs, batched over images, candidate maps and steps, built
chunk by chunk (never all in memory). What does not depend on a candidate (the original's
score, the substrate, the curves' endpoints) is computed once per call, and an input that
several candidates share (the same pixels of an image perturbed) is run once: scoring many
candidates in one call is what a search does, and gives each the score it gets alone.

The score of an input is the target class's softmax probability (``score="prob"``; ``"logit"``
or a callable ``(logits, labels) -> (m,)`` also work). The target class is ``batch.labels``
(the explained class), not the top-1 prediction.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ..batching import model_rows
from ..data.batch import Batch
from .base import (
    Cost,
    Direction,
    Metric,
    MetricError,
    Resources,
    ScoreFn,
    call_explainer_per_candidate,
    dedup_rows,
    input_affine,
    logits_of,
    run_model,
    target_score,
    top_fraction_mask,
)
from .similarity import pearson

Substrate = str | float | Tensor | Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------- substrates
@lru_cache(maxsize=8)
def rise_kernel(klen: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's blur kernel ``(klen,klen)``: a unit impulse filtered by a Gaussian (``sigma``,
    truncated at 4 sigma) with half-sample *reflection* at the window's edges -- i.e.
    ``scipy.ndimage.gaussian_filter(delta, sigma)`` on a ``klen x klen`` window, which folds the
    Gaussian's tails back into the window. Sums to 1."""
    radius = int(4.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * t * t / (sigma * sigma))
    w /= w.sum()
    centre, period = klen // 2, 2 * klen
    k1 = torch.zeros(klen, dtype=torch.float64)
    for i in range(klen):
        j = (i + t.long()) % period                  # correlate the impulse at `centre`
        j = torch.where(j >= klen, period - 1 - j, j)  # half-sample reflection
        k1[i] = w[j == centre].sum()
    return k1[:, None] * k1[None, :]


def rise_blur(x: Tensor, klen: int = 11, sigma: float = 5.0) -> Tensor:
    """Per-channel blur with :func:`rise_kernel`, zero padding (as RISE blurs the model input)."""
    k = rise_kernel(klen, sigma).to(x.device, x.dtype)
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, klen, klen), padding=klen // 2, groups=c)


def make_substrate(x: Tensor, substrate: Substrate) -> Tensor:
    """The image removed pixels are replaced with: ``"zero"`` (0 in normalised space, i.e. the
    dataset mean colour), ``"blur"`` (RISE blur), a constant, a tensor or ``f(x)``."""
    if isinstance(substrate, str):
        if substrate == "zero":
            return torch.zeros_like(x)
        if substrate == "blur":
            return rise_blur(x)
        raise MetricError(f"substrate must be 'zero', 'blur', a number, a tensor or a callable, got {substrate!r}")
    if isinstance(substrate, (int, float)):
        return torch.full_like(x, float(substrate))
    out = substrate(x) if callable(substrate) else substrate
    if not isinstance(out, Tensor):
        raise MetricError("a substrate callable must return a tensor")
    return torch.broadcast_to(out.to(x), x.shape)


# ---------------------------------------------------------------------- insertion / deletion
def curve_counts(n_pixels: int, steps: int) -> list[int]:
    """Pixels perturbed at each curve point: 0, s, 2s, ... (< N), N with s = ceil(N/steps)."""
    if steps < 1:
        raise MetricError(f"steps must be >= 1, got {steps}")
    s = -(-n_pixels // steps)
    return [*range(0, n_pixels, s), n_pixels]


def _ranks(maps: Tensor) -> Tensor:
    """Rank of every pixel (0 = most relevant), descending, ties by position (stable)."""
    order = maps.argsort(dim=-1, descending=True, stable=True)
    ar = torch.arange(maps.shape[-1], device=maps.device, dtype=torch.int32).expand_as(order)
    return torch.empty_like(order, dtype=torch.int32).scatter_(-1, order, ar)


class _PerturbationCurve(Metric):
    """Shared machinery of insertion and deletion.

    All candidates' perturbed inputs stream through the model in full batches; the two endpoints
    (original image, full substrate) are run once per call for all candidates, and inputs that two
    candidates share (same image, same curve point, same pixels perturbed: maps that order those
    pixels first alike, constant maps, duplicate maps) run once (``dedup``; False only to measure
    what it saves -- the scores are the same).
    """

    needs = frozenset({"model_fn"})
    mode = ""
    default_substrate: Substrate = "zero"
    dedup = True

    def __init__(self, steps: int = 20, substrate: Substrate | None = None, score: str | ScoreFn = "prob"):
        self.steps, self.score = int(steps), score
        self.substrate = self.default_substrate if substrate is None else substrate
        self.cost = Cost(forwards=self.steps - 1, shared_forwards=2)

    def curves(self, maps: Tensor, batch: Batch, model_fn: Callable[[Tensor], Tensor],
               batch_size: int | None = None) -> tuple[Tensor, Tensor]:
        """``(fractions (P,), scores (n,b,P))``: target score after perturbing each fraction."""
        x, labels = batch.x, batch.labels
        batch_size = model_rows(x.device, batch_size)
        n, b = maps.shape[:2]
        npx = maps.shape[-1] * maps.shape[-2]
        counts = curve_counts(npx, self.steps)
        p = len(counts)
        inner = max(p - 2, 0)
        base = make_substrate(x, self.substrate)
        flat_maps = maps.reshape(n * b, npx)
        cnt = torch.tensor(counts[1:-1], device=x.device, dtype=torch.int32)
        xf, bf = x.flatten(2), base.flatten(2)
        src, dst = (bf, xf) if self.mode == "deletion" else (xf, bf)  # value of ranked pixels / others
        ends = torch.cat([x, base])  # map-independent endpoints: the original image, the full substrate
        jobs, where = self._jobs(flat_maps, cnt, n, b)
        last: dict[int, Tensor] = {}   # ranks of the maps of the previous chunk (jobs run map by map)

        def ranks_of(mb: Tensor) -> Tensor:
            uniq, inv = torch.unique(mb, return_inverse=True)
            keys = uniq.tolist()
            new = [m for m in keys if m not in last]
            fresh = dict(zip(new, _ranks(flat_maps[new]))) if new else {}
            got = {m: last[m] if m in last else fresh[m] for m in keys}
            last.clear()
            last.update(got)
            return torch.stack([got[m] for m in keys])[inv]

        def build(i: int, j: int) -> tuple[Tensor, Tensor]:
            # inputs 0..2b-1 are the endpoints, then the (map, point) jobs: one stream, full batches
            job = jobs[max(i, 2 * b) - 2 * b:max(j, 2 * b) - 2 * b]
            parts, labs = [], []
            if i < 2 * b:
                e = torch.arange(i, min(j, 2 * b), device=x.device)
                parts.append(ends[e])
                labs.append(labels[e % b])
            if job.numel():
                mb, k = job // inner, job % inner
                ranked = ranks_of(mb) < cnt[k][:, None]  # (m, HW)
                img = mb % b
                parts.append(torch.where(ranked[:, None, :], src[img], dst[img]).view(-1, *x.shape[1:]))
                labs.append(labels[img])
            return torch.cat(parts), torch.cat(labs)

        scores = run_model(model_fn, 2 * b + jobs.numel(), build, batch_size, self.score)
        orig, full = scores[:b], scores[b:2 * b]
        first, last = (orig, full) if self.mode == "deletion" else (full, orig)
        out = torch.empty(n, b, p, device=x.device)
        out[..., 0], out[..., -1] = first, last
        out[..., 1:-1] = scores[2 * b:][where].view(n, b, inner)
        frac = torch.tensor(counts, device=x.device, dtype=torch.float32) / npx
        return frac, out

    def _jobs(self, flat_maps: Tensor, cnt: Tensor, n: int, b: int) -> tuple[Tensor, Tensor]:
        """``(jobs to run (u,), where (n*b*P',))``: job ``m*P' + k`` perturbs the ``cnt[k]`` first
        pixels of map ``m = candidate*b + image``; two jobs of one image and point with the same
        pixel set are one input (:func:`~sycam.metrics.base.dedup_rows`)."""
        inner = cnt.numel()
        total = n * b * inner
        device = flat_maps.device
        if not self.dedup or n < 2 or inner == 0:
            every = torch.arange(total, device=device)
            return every, every

        def groups():
            for img in range(b):
                mb = torch.arange(img, n * b, b, device=device)   # every candidate's map of this image
                ranks = _ranks(flat_maps[mb])
                for k in range(inner):
                    yield mb * inner + k, ranks < cnt[k]

        jobs, where = dedup_rows(total, groups)
        return jobs.to(device), where.to(device)

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        frac, curve = self.curves(maps, batch, res.model_fn, res.batch_size)  # type: ignore[arg-type]
        return torch.trapezoid(curve, frac, dim=-1)


class Deletion(_PerturbationCurve):
    """Deletion AUC (RISE, Petsiuk et al. BMVC 2018, https://arxiv.org/abs/1806.07421).

    Pixels ranked by L (descending, ties by position) are replaced by the substrate (default
    0 in normalised space) ``ceil(HW/steps)`` at a time; the target probability is recorded at
    every point (0 .. HW pixels removed) and AUC = trapezoid over the removed fraction. When
    ``steps`` divides HW this is RISE's (sum - a_0/2 - a_n/2)/n_steps. Lower is better.
    Cost: steps-1 forwards per map and image + 2 shared (original, all-substrate).
    """

    name = "deletion"
    direction = Direction.LOWER
    mode = "deletion"
    default_substrate = "zero"


class Insertion(_PerturbationCurve):
    """Insertion AUC (RISE): start from the blurred image (Gaussian klen 11, sigma 5, see
    :func:`rise_kernel`) and insert the original pixels in decreasing order of L; AUC of the
    target probability over the inserted fraction. Higher is better. Cost as :class:`Deletion`."""

    name = "insertion"
    direction = Direction.HIGHER
    mode = "insertion"
    default_substrate = "blur"


# ---------------------------------------------------------------------- explanation map E = x * L
def per_image_dedup(rows: Tensor, n: int, b: int) -> tuple[Tensor, Tensor]:
    """``(jobs, where)`` of :func:`~sycam.metrics.base.dedup_rows` for one input per candidate
    and image, job ``candidate*b + image``: candidates whose ``rows[:, image]`` (a map or a mask
    ``(n,b,...)``) are equal share that image's input."""
    def groups():
        for img in range(b):
            yield torch.arange(img, n * b, b), rows[:, img]

    if n < 2:
        every = torch.arange(n * b, device=rows.device)
        return every, every
    jobs, where = dedup_rows(n * b, groups)
    return jobs.to(rows.device), where.to(rows.device)


def _explanation_builder(maps: Tensor, batch: Batch, space: str) -> Callable[[Tensor], Tensor]:
    """``rows -> E`` for flat candidate-image rows: the input with every pixel scaled by L.

    ``space="pixel"``: E = normalise(images * L) -- the explanation map as a picture (black where
    L = 0), as Grad-CAM++ defines it (E = L o I). ``space="normalised"``: E = x * L in the model's
    input space (what torchcam's ClassificationMetric and grad-cam's CamMultImageConfidenceChange
    do; L = 0 gives the mean colour).
    """
    b = maps.shape[1]
    flat = maps.flatten(0, 1)
    if space == "pixel":
        aff = input_affine(batch)
        return lambda rows: aff.to_input(batch.images[rows % b] * flat[rows][:, None])
    if space == "normalised":
        return lambda rows: batch.x[rows % b] * flat[rows][:, None]
    raise MetricError(f"space must be 'pixel' or 'normalised', got {space!r}")


def _confidences(maps: Tensor, batch: Batch, res: Resources, space: str, score: str | ScoreFn
                 ) -> tuple[Tensor, Tensor]:
    """``Y (b,)`` the score on x and ``O (n,b)`` the score on the explanation map."""
    n, b = maps.shape[:2]
    mf = res.model_fn
    y = run_model(mf, b, lambda i, j: (batch.x[i:j], batch.labels[i:j]), res.batch_size, score)  # type: ignore[arg-type]
    make = _explanation_builder(maps, batch, space)

    def build_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
        return make(rows), batch.labels[rows % b]

    jobs, where = per_image_dedup(maps, n, b)      # equal maps of an image: one explanation map E
    o = run_model(mf, jobs.numel(), lambda i, j: build_rows(jobs[i:j]), res.batch_size, score)  # type: ignore[arg-type]
    return y, o[where].view(n, b)


class AverageDrop(Metric):
    """Average Drop % (Grad-CAM++, Chattopadhyay et al. WACV 2018, https://arxiv.org/abs/1710.11063).

    Per image: 100 * max(0, Y - O) / Y, Y = p_c(x), O = p_c(E), E the explanation map x * L
    (``space``: ``"pixel"`` multiplies the [0,1] image then re-normalises -- the default, E as a
    picture; ``"normalised"`` multiplies the model input, as torchcam / grad-cam do). The mean
    over images is the reported AD %. Lower is better. Cost: 1 forward + 1 shared.
    """

    name = "average_drop"
    direction = Direction.LOWER
    needs = frozenset({"model_fn"})
    cost = Cost(forwards=1, shared_forwards=1)

    def __init__(self, space: str = "pixel", score: str | ScoreFn = "prob"):
        self.space, self.score = space, score

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        y, o = _confidences(maps, batch, res, self.space, self.score)
        return 100 * (y - o).clamp_min(0) / y.clamp_min(1e-12)


class AverageIncrease(AverageDrop):
    """Average Increase in Confidence % (Grad-CAM++): per image 100 * 1[Y < O]; the mean over
    images is the share of images whose explanation map is *more* confident. Higher is better."""

    name = "average_increase"
    direction = Direction.HIGHER

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        y, o = _confidences(maps, batch, res, self.space, self.score)
        return 100 * (y < o).float()


class ADCC(Metric):
    """ADCC (Poppi et al. CVPRW 2021, https://arxiv.org/abs/2104.10252): harmonic mean of

    * coherency  Coh = (Pearson(L(x), L(x * L)) + 1) / 2 -- the same method re-run (``explainer``)
      on the explanation map E (``space`` as in :class:`AverageDrop`);
    * 1 - complexity, Com = ||L||_1 / (H W);
    * 1 - average drop, AD = max(0, Y - O) / Y (a fraction).

    ADCC = 3 / (1/Coh + 1/(1 - Com) + 1/(1 - AD)), 0 if any term is 0. Higher is better.
    Cost: 1 forward + 1 shared, 1 explainer call per map and image.
    """

    name = "adcc"
    direction = Direction.HIGHER
    needs = frozenset({"model_fn", "explainer"})
    cost = Cost(forwards=1, shared_forwards=1, explainer_calls=1)

    def __init__(self, space: str = "pixel", score: str | ScoreFn = "prob"):
        self.space, self.score = space, score

    def parts(self, maps: Tensor, batch: Batch, res: Resources) -> dict[str, Tensor]:
        """The three terms and ADCC, each ``(n,b)``."""
        n, b = maps.shape[:2]
        y, o = _confidences(maps, batch, res, self.space, self.score)
        drop = (y - o).clamp_min(0) / y.clamp_min(1e-12)
        make = _explanation_builder(maps, batch, self.space)
        e = make(torch.arange(n * b, device=maps.device)).view(n, b, *batch.x.shape[1:])
        again = call_explainer_per_candidate(res.explainer, e, batch.labels, res.batch_size)  # type: ignore[arg-type]
        coherency = (pearson(maps, again) + 1) / 2
        complexity = maps.flatten(2).abs().mean(-1)
        terms = torch.stack([coherency, 1 - complexity, 1 - drop])
        adcc = torch.where((terms > 0).all(0), 3 / (1 / terms.clamp_min(1e-12)).sum(0), torch.zeros_like(drop))
        return {"coherency": coherency, "complexity": complexity, "average_drop": drop, "adcc": adcc}

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        return self.parts(maps, batch, res)["adcc"]


class FinerConfidenceDrop(Metric):
    """Finer-CAM's relative confidence drop (Zhang et al. CVPR 2025, https://arxiv.org/abs/2501.11309).

    The paper's exact formula was not available; we use: D = the ``k`` reference classes whose
    logits on x are closest to the target's (ranks 1..k of |y_j - y_c|, as Finer-CAM picks its
    comparison classes); relative confidence r(x) = p_c / (p_c + sum_{d in D} p_d) (softmax over
    all classes); x~ = x with the top ``fraction`` (5 %) pixels of L replaced by the substrate
    (0 in normalised space). Score = r(x) - r(x~), in [-1, 1]. Higher is better: the map found
    the pixels that separate c from its look-alikes. Cost: 1 forward + 1 shared.
    """

    name = "finer_confidence_drop"
    direction = Direction.HIGHER
    needs = frozenset({"model_fn"})
    cost = Cost(forwards=1, shared_forwards=1)

    def __init__(self, fraction: float = 0.05, k: int = 3, substrate: Substrate = "zero"):
        if not 0 < fraction < 1:
            raise MetricError(f"fraction must be in (0,1), got {fraction}")
        self.fraction, self.k, self.substrate = float(fraction), int(k), substrate

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        n, b = maps.shape[:2]
        x, labels = batch.x, batch.labels
        logits = logits_of(res.model_fn, x, res.batch_size).float()  # type: ignore[arg-type]
        if logits.shape[1] < 2:
            raise MetricError("finer_confidence_drop needs at least 2 classes")
        k = min(self.k, logits.shape[1] - 1)
        dist = (logits - logits.gather(1, labels[:, None])).abs()
        dist.scatter_(1, labels[:, None], -math.inf)  # the target itself comes first
        refs = dist.argsort(dim=1)[:, 1:k + 1]           # (b,k)

        def rel(lg: Tensor, lab: Tensor, ref: Tensor) -> Tensor:
            p = lg.float().softmax(1)
            pc = p.gather(1, lab[:, None])[:, 0]
            return pc / (pc + p.gather(1, ref).sum(1)).clamp_min(1e-30)

        r0 = rel(logits, labels, refs)
        base = make_substrate(x, self.substrate)
        top = top_fraction_mask(maps, self.fraction)  # (n,b,H,W)
        jobs, where = per_image_dedup(top, n, b)       # the same pixels masked: one input
        top = top.flatten(0, 1)

        def build(i: int, j: int) -> tuple[Tensor, Tensor]:
            rows = jobs[i:j]
            img = rows % b
            return torch.where(top[rows][:, None], base[img], x[img]), img

        def score(lg: Tensor, img: Tensor) -> Tensor:
            return rel(lg, labels[img], refs[img])

        r1 = run_model(res.model_fn, jobs.numel(), build, res.batch_size, score)  # type: ignore[arg-type]
        return r0[None] - r1[where].view(n, b)


__all__ = ["ADCC", "AverageDrop", "AverageIncrease", "Deletion", "FinerConfidenceDrop", "Insertion",
           "curve_counts", "make_substrate", "rise_blur", "rise_kernel", "target_score"]
