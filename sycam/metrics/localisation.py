"""Forward-free localisation metrics: does the map agree with the ground-truth object?

All take maps ``(n,b,H,W)`` in [0,1] and the batch's object region ``G`` (``(b,H,W)`` bool, the
exact mask or the filled box) and return ``(n,b)``. An image whose region is empty scores
``NaN`` (undefined, excluded from means) -- never a hit.
"""
from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import Batch
from ..kernels.lowres import LowResMaps
from .base import Direction, Metric, Resources, region_masks
from .similarity import midranks, pearson


def _resolve(batch: Batch, region: str, prefer: str) -> str:
    if region == "auto":
        first = batch.masks is not None if prefer == "mask" else bool(batch.boxes)
        return prefer if first else ("box" if prefer == "mask" else "mask")
    return region


def _region(batch: Batch, region: str, prefer: str) -> Tensor:
    return region_masks(batch, _resolve(batch, region, prefer))


def dilate_disk(mask: Tensor, radius: int) -> Tensor:
    """``mask`` ``(b,H,W)`` bool dilated by a disk of ``radius`` px: pixels with a True pixel at
    Euclidean distance <= radius. Row dilations come from one cumulative count per row (one
    gather per distinct half-width of the disk), then the disk's rows are OR-ed."""
    mask = mask.bool()
    if radius <= 0:
        return mask.clone()
    b, h, w = mask.shape
    count = F.pad(mask.to(torch.int32).cumsum(-1), (1, 0))  # count[..., x] = #True in [0, x)
    xs = torch.arange(w, device=mask.device)
    rows: dict[int, Tensor] = {}
    out = torch.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in rows:
            hi = (xs + half + 1).clamp(max=w)
            lo = (xs - half).clamp(min=0)
            rows[half] = (count.index_select(-1, hi) - count.index_select(-1, lo)) > 0
        row = rows[half]
        # out[y] |= row[y + dy]
        out[:, max(-dy, 0):h + min(-dy, 0)] |= row[:, max(dy, 0):h + min(dy, 0)]
    return out


_ZONES: dict[tuple, tuple[list[weakref.ref], Tensor]] = {}


def _region_sources(batch: Batch, region: str) -> list[Tensor]:
    """The tensors a region is built from (mask tensor or box tensors)."""
    if region == "mask":
        return [batch.masks] if batch.masks is not None else []
    if region == "other":
        return [batch.other_masks] if batch.other_masks is not None else []
    return list(batch.boxes)


def hit_zone(batch: Batch, region: str, tolerance: int) -> Tensor:
    """``dilate_disk(G, tolerance)`` ``(b,H,W)``, cached (a search scores many candidate chunks
    against one batch). An entry is reused only while the very same mask/box tensor objects are
    alive and unmodified (weak references + in-place version counters), so it is never stale."""
    region = _resolve(batch, region, prefer="mask")
    sources = _region_sources(batch, region)
    key = (region, tolerance, tuple((id(t), t._version) for t in sources))
    hit = _ZONES.get(key)
    if hit is not None and len(hit[0]) == len(sources) and all(r() is t for r, t in zip(hit[0], sources)):
        return hit[1]
    zone = dilate_disk(region_masks(batch, region), tolerance)
    if len(_ZONES) >= 16:
        _ZONES.pop(next(iter(_ZONES)))
    _ZONES[key] = ([weakref.ref(t) for t in sources], zone)
    return zone


def _per_image_dot(flat: Tensor, g: Tensor) -> Tensor:
    """``sum_p flat[n,b,p] g[b,p]`` as one matrix-vector product per image (no copies)."""
    return torch.stack([flat[:, j] @ g[j] for j in range(flat.shape[1])], 1)


class PointingGame(Metric):
    """Pointing game (Zhang et al., ECCV 2016, https://arxiv.org/abs/1608.00507; TorchRay).

    p = argmax L (first maximum, input resolution); hit = 1 if some ground-truth pixel lies
    within ``tolerance`` px (Euclidean) of p, i.e. ``dilate(G, disk(tolerance))[p]``, else 0.
    Per image: 1.0 / 0.0; ``NaN`` if G is empty (excluded; Quantus 0.6 counts it as a hit);
    a constant map points nowhere and scores 0. The literature reports the mean over classes
    of per-class accuracies: :func:`sycam.metrics.aggregate.class_mean` (``labels=batch.labels``).
    Exact on :class:`LowResMaps` (argmax on the extremal subgrid).
    """

    name = "pointing_game"
    direction = Direction.HIGHER
    needs = frozenset({"region"})
    accepts_lowres = True

    def __init__(self, tolerance: int = 15, region: str = "auto"):
        self.tolerance, self.region = int(tolerance), region

    def compute(self, maps: Tensor | LowResMaps, batch: Batch, res: Resources) -> Tensor:
        zone = hit_zone(batch, self.region, self.tolerance).flatten(1)  # (b, HW)
        if isinstance(maps, LowResMaps):
            lo, hi, idx = maps.extrema()
            flat_ok = hi > lo if maps.normalise != "max" else hi > 0
        else:
            flat = maps.flatten(2)
            idx = flat.argmax(-1)
            # a constant map has its (first) maximum at pixel 0: only those need the min
            flat_ok = torch.ones_like(idx, dtype=torch.bool)
            first = (idx == 0).nonzero(as_tuple=True)
            if first[0].numel():
                sub = flat[first]
                flat_ok[first] = sub.amax(-1) > sub.amin(-1)
        b = zone.shape[0]
        hit = zone[torch.arange(b, device=idx.device)[None, :], idx].float()
        hit = torch.where(flat_ok, hit, torch.zeros_like(hit))
        empty = ~zone.any(1)
        return torch.where(empty[None, :], torch.full_like(hit, math.nan), hit)


class EnergyPointingGame(Metric):
    """Energy-based pointing game (Score-CAM, Wang et al. CVPRW 2020).

    EPG = sum_{p in box} L(p) / sum_p L(p), L in [0,1] at input resolution, box binarised.
    ``region="auto"`` uses the boxes when the batch has them, else the masks. A map with no
    energy scores 0; an empty region scores NaN. Exact on :class:`LowResMaps` (linear sums).
    """

    name = "energy_pointing_game"
    direction = Direction.HIGHER
    needs = frozenset({"region"})
    accepts_lowres = True

    def __init__(self, region: str = "auto"):
        self.region = region

    def compute(self, maps: Tensor | LowResMaps, batch: Batch, res: Resources) -> Tensor:
        g = _region(batch, self.region, prefer="box")
        if isinstance(maps, LowResMaps):
            inside, total = maps.region_sums(g)
        else:
            flat = maps.flatten(2)
            inside = _per_image_dot(flat, g.flatten(1).to(flat.dtype))
            total = flat.sum(-1)
        epg = torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))
        empty = ~g.flatten(1).any(1)
        return torch.where(empty[None, :], torch.full_like(epg, math.nan), epg)


class IoU(Metric):
    """IoU of the binarised map with the object region: |B & G| / |B | G|, B = (L >= threshold).

    ``region`` ``"mask"`` or ``"box"`` (``"auto"``: mask if present). NaN if G is empty.
    """

    name = "iou"
    direction = Direction.HIGHER
    needs = frozenset({"region"})

    def __init__(self, threshold: float = 0.5, region: str = "auto"):
        self.threshold, self.region = float(threshold), region

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        g = _region(batch, self.region, prefer="mask").flatten(1)
        gf = g.to(maps.dtype)
        area = gf.sum(-1)
        flat = maps.flatten(2)
        # candidates in chunks of ~4M pixels: the thresholded copy stays small (no page faults)
        step = max(1, (1 << 22) // max(1, flat.shape[1] * flat.shape[2]))
        ious = []
        for i in range(0, flat.shape[0], step):
            part = flat[i:i + step]
            on = torch.ge(part, self.threshold, out=torch.empty_like(part))  # 1.0 / 0.0 in one pass
            inter = _per_image_dot(on, gf)
            ious.append(inter / (on.sum(-1) + area - inter).clamp_min(1))
        iou = torch.cat(ious)
        return torch.where(g.any(1)[None, :], iou, torch.full_like(iou, math.nan))


class BestIoU(Metric):
    """Best IoU over thresholds: max_t |{L >= t} & G| / |{L >= t} | G|.

    One pass: pixels are bucketed by threshold and counted (inside G and overall), cumulative
    sums give the counts for every threshold. ``thresholds`` default 0.05, 0.10, ..., 0.95.
    """

    name = "best_iou"
    direction = Direction.HIGHER
    needs = frozenset({"region"})

    def __init__(self, thresholds: Tensor | list[float] | None = None, region: str = "auto"):
        t = torch.arange(1, 20, dtype=torch.float64) / 20 if thresholds is None else torch.as_tensor(thresholds)
        self.thresholds = t.double().sort().values
        self.region = region

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        return self.curve(maps, batch).amax(-1)

    def curve(self, maps: Tensor, batch: Batch) -> Tensor:
        """IoU at every threshold ``(n,b,T)``."""
        g = _region(batch, self.region, prefer="mask").flatten(1)
        n, b = maps.shape[:2]
        t = self.thresholds.to(maps.device, maps.dtype)
        k = t.numel()
        # bucket j holds pixels with t[j-1] <= L < t[j]; pixels >= t[j] are in buckets j+1..k
        bucket = torch.bucketize(maps.flatten(2), t, right=True)  # (n,b,HW) in 0..k
        offs = (torch.arange(n * b, device=maps.device) * (k + 1)).view(n, b, 1)
        ids = (bucket + offs).flatten()
        allc = torch.bincount(ids, minlength=n * b * (k + 1)).view(n, b, k + 1)
        inc = torch.bincount(ids, weights=g.expand(n, b, -1).flatten().to(maps.dtype),
                             minlength=n * b * (k + 1)).view(n, b, k + 1)
        above = allc.flip(-1).cumsum(-1).flip(-1)[..., 1:].float()     # |{L >= t_j}|
        inter = inc.flip(-1).cumsum(-1).flip(-1)[..., 1:].float()
        area = g.sum(-1).float().view(1, b, 1)
        iou = inter / (above + area - inter).clamp_min(1)
        return torch.where(g.any(1).view(1, b, 1), iou, torch.full_like(iou, math.nan))


class GroundTruthPearson(Metric):
    """Pearson correlation between the map and the binary object mask (pixels as samples).

    NaN if the region is empty or covers the whole image (correlation undefined).
    """

    name = "gt_pearson"
    direction = Direction.HIGHER
    needs = frozenset({"region"})

    def __init__(self, region: str = "auto"):
        self.region = region

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        g = _region(batch, self.region, prefer="mask")
        r = pearson(maps, g.to(maps.dtype)[None])
        frac = g.flatten(1).float().mean(1)
        ok = (frac > 0) & (frac < 1)
        return torch.where(ok[None, :], r, torch.full_like(r, math.nan))


class GroundTruthAUC(Metric):
    """ROC AUC of the map as a classifier of object pixels (ties count 1/2).

    AUC = (R_pos - P(P+1)/2) / (P N), R_pos the sum of mid-ranks of the P object pixels among
    all pixels, N the background pixels (Mann-Whitney U). NaN if P = 0 or N = 0.
    """

    name = "gt_auc"
    direction = Direction.HIGHER
    needs = frozenset({"region"})

    def __init__(self, region: str = "auto"):
        self.region = region

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        g = _region(batch, self.region, prefer="mask").flatten(1)
        ranks = midranks(maps.flatten(2).contiguous())  # (n,b,HW) float64
        pos = g.double().sum(-1)
        neg = g.shape[1] - pos
        rsum = (ranks * g.double()[None]).sum(-1)
        auc = (rsum - pos * (pos + 1) / 2) / (pos * neg).clamp_min(1)
        ok = (pos > 0) & (neg > 0)
        return torch.where(ok[None, :], auc, torch.full_like(auc, math.nan)).float()

