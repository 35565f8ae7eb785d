"""GPNN-CAM: a base CAM averaged over GPNN variations of the image, then regressed onto lower layers.

Reference: the GPNN-CAM poster (``shared/seeds/000_...``) and its research code
(github.com/tumble-weed/GPNN-CAM: ``saliency_for_gpnn_gradcam_multi.py``, ``gpnn_gradcam_multi2.py``,
``mycam.py``, ``mycam_.py``, ``regression.py``); variations from :mod:`sycam.evidence.gpnn`.

Notation, for one image x in [0, 1] (3, H, W) and its explained class c:

* Variation v = P_v x (:func:`~sycam.evidence.gpnn.gpnn_variations`); P_v is the linear patch
  re-assembly, P_v^T its adjoint (:func:`~sycam.evidence.gpnn.unpermute`),
  M_v = P_v^T 1 (:func:`~sycam.evidence.gpnn.coverage`): how much of source pixel s went into v
  (the identity gives M = 1 everywhere; a pixel copied twice has M ~ 2, one never copied 0).
* L_v: the base CAM (any seed or expression; default Grad-CAM) of variation v for class c,
  post-processed as every CAM in sycam (upsampled to H x W, min-max to [0, 1]).
* pi_v: the weight of variation v: 1 (default) or, with ``prob_weight=True``, the softmax probability
  of c on v (the reference multiplies by it). A variation whose map is not finite gets pi_v = 0.

**Phase 1** (augmentation attribution). One super-iteration s draws B = ``n`` variations
(seed ``seed * 1000003 + s``; the same for every image, so an image's map does not depend on the
batch it comes in) and gives

    num_s = sum_v pi_v P_v^T L_v,   m_s = sum_v pi_v M_v,   H_s = num_s / m_s  (0 where m_s = 0),

i.e. per source pixel the mean of the map values at every place it was copied to, each copy
counted with its share of the re-assembly (pixels copied more count more). Super-iterations are
merged by the running mass-weighted mean of the reference,

    H <- (H m + H_s m_s) / (m + m_s),   m <- m + m_s,

which is exactly sum_v pi_v P_v^T L_v / sum_v pi_v M_v over all variations of all super-iterations
(tested). With ``include_source=True`` (default) the plain base CAM of the source counts as one more
view with the identity correspondence (mass 1 at every pixel, weight ``source_weight``); it also
fills the pixels no variation copied (otherwise they get 0). The reference leaves the source out
(its code path is disabled) and median-filters each unpermuted map (11 x 11) before averaging;
neither is done by default here (``median`` = 0; ``median=11`` applies the filter to
P_v^T L_v / M_v). The reference's super-iterations are independent draws (its saliency-guided
generation is disabled), as here.

**Phase 2** (the reference's "MyCAM", ``solve2``). For each regression layer l with activations
A^l (K channels, h x w) on the same views (the variations and, with ``include_source``, the
source; captured in the same passes as phase 1):

* rows = (view, position) pairs; per-row features A^l_k(view, p), standardised per channel over all
  rows (variations x pixels, as the reference): X = (A - mu_k) / sd_k (unbiased sd; sd = 0 -> 1);
* the target of view v is the phase-1 map carried into the view, P_v H (the source's is H),
  resized (anti-aliased bilinear) to h x w;
* ridge regression with an unpenalised intercept (sklearn's ``Ridge(alpha)``, alpha = 1e-4):
  w = (X_c^T X_c + alpha I)^-1 X_c^T y_c with X_c, y_c centred over the rows, b = mean(y) - mean(X) w
  (:func:`ridge`; float64 closed form);
* the layer's map on the source: R^l = clip(sum_k w_k X_k(source), 0), standardised with the rows'
  mu and sd; the intercept is left out, as in the reference (``+ 0 * b``).

**Combination over layers**: ``combine="mean"`` (default): every R^l upsampled to H x W, min-max
normalised, averaged, min-max again (sycam's multi-layer ``mean`` fusion); ``"max"``: element-wise
maximum instead; ``"product"``: the reference's fusion, prod_l sigmoid(R^l / max R^l - 1/2) at the
largest layer resolution, then upsampled and min-max normalised. The reference cascades layers
(layer l+1 regresses onto the fused maps of layers <= l); here every layer regresses onto the
phase-1 map. With ``regression_layers=()`` the output is the phase-1 map itself.

Regression from many channels on few rows interpolates: with R views of h x w positions there are
R h w rows; keep it well above K (e.g. the default model's ``blocks.10``: 112 channels at 14 x 14,
17 views -> 3332 rows; its ``head``: 1280 channels at 7 x 7 -> 833 rows, under-determined).

Cost per image: B * super_iters GPNN variations (~0.5-0.9 s of one CPU core each at 224 px, see
experiments/gpnn/README.md) + B * super_iters (+1) forward and backward passes (batched ``chunk``
views per evidence capture) + one K x K solve per regression layer.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SycamError
from ..evidence.capture import capture
from ..evidence.gpnn import Correspondence, GPNNParams, coverage, gpnn_variations, save_variation_grid, unpermute
from ..evidence.layers import default_layer, resolve_layers
from ..evidence.targets import _classes
from ..kernels.postprocess import fuse, minmax, upsample
from ..models import IMAGENET_MEAN, IMAGENET_STD
from .cam import CAM, resolve_targets
from .explainer import Explainer, Explanation

__all__ = ["GPNNCAM", "GPNNExplanation", "ridge", "standardise", "unpermuted_mean", "running_update",
           "phase2_map", "combine_layers", "DEFAULT_GPNN", "COMBINATIONS"]

#: GPNN settings of the reference (sigma = 4 * 0.75); the search shortcuts of sycam.evidence.gpnn
DEFAULT_GPNN = GPNNParams(sigma=3.0)
COMBINATIONS = ("mean", "max", "product")
#: regression layers by model class when none are given (the base layers otherwise)
DEFAULT_REGRESSION_LAYERS = {"EfficientNetLite": ("blocks.10",)}


# ----------------------------------------------------------------------------------------------
# phase 1: unpermute and average


def unpermuted_mean(maps: Tensor, corr: Correspondence, weights: Tensor | None = None,
                    median: int = 0) -> tuple[Tensor, Tensor]:
    """One super-iteration: maps (n, H, W) on the variations -> (H_s, m_s), both (H, W).

    H_s = sum_v w_v P_v^T L_v / sum_v w_v M_v (0 where the mass is 0), m_s = sum_v w_v M_v with
    M_v = P_v^T 1. ``median`` > 0: each per-variation mean P_v^T L_v / M_v is median-filtered
    (``median`` x ``median``, the reference's 11) before weighting.
    """
    n = maps.shape[0]
    w = maps.new_ones(n) if weights is None else weights.to(maps)
    mass = coverage(corr).to(maps)                           # (n, H, W)
    back = unpermute(maps, corr)                             # (n, H, W)
    if median:
        per = torch.where(mass > 0, back / mass.clamp_min(1e-12), 0.0)
        back = _median_filter(per, median) * mass
    m = (w[:, None, None] * mass).sum(0)
    num = (w[:, None, None] * back).sum(0)
    return torch.where(m > 0, num / m.clamp_min(1e-12), 0.0), m


def running_update(avg: Tensor, mass: Tensor, new: Tensor, new_mass: Tensor) -> tuple[Tensor, Tensor]:
    """The reference's running mass-weighted mean: (avg m + new m_new) / (m + m_new), m + m_new."""
    total = mass + new_mass
    out = torch.where(total > 0, (avg * mass + new * new_mass) / total.clamp_min(1e-12), 0.0)
    return out, total


def _median_filter(maps: Tensor, k: int) -> Tensor:
    """k x k median (reflect padding) of (n, H, W) maps."""
    r = k // 2
    x = F.pad(maps[:, None], (r, r, r, r), mode="reflect")
    patches = x.unfold(2, k, 1).unfold(3, k, 1)              # (n, 1, H, W, k, k)
    return patches.reshape(*patches.shape[:4], -1).median(-1).values[:, 0]


# ----------------------------------------------------------------------------------------------
# phase 2: standardised features, ridge regression


def standardise(x: Tensor, eps: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """x (N, K) -> ((x - mu) / sd, mu, sd), per column over the rows; unbiased sd, sd = 0 -> 1."""
    mu = x.mean(0)
    sd = x.std(0) if x.shape[0] > 1 else torch.zeros_like(mu)
    sd = torch.where(sd > eps, sd, torch.ones_like(sd))
    return (x - mu) / sd, mu, sd


def ridge(x: Tensor, y: Tensor, alpha: float = 1e-4, intercept: bool = True) -> tuple[Tensor, Tensor]:
    """Ridge regression in closed form: x (N, K), y (N,) -> (w (K,), b ()).

    min_w,b ||y - x w - b||^2 + alpha ||w||^2 (b unpenalised, as sklearn's ``Ridge``):
    w = (x_c^T x_c + alpha I)^-1 x_c^T y_c with x_c = x - mean(x), y_c = y - mean(y),
    b = mean(y) - mean(x) w. ``intercept=False``: no centring, b = 0. Solved in float64; alpha = 0
    with a singular x_c^T x_c falls back to the minimum-norm least-squares solution.
    """
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise SycamError(f"ridge needs x (N, K) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if alpha < 0:
        raise SycamError(f"ridge alpha must be >= 0, got {alpha}")
    xd, yd = x.double(), y.double()
    xm = xd.mean(0) if intercept else xd.new_zeros(xd.shape[1])
    ym = yd.mean() if intercept else yd.new_zeros(())
    xc, yc = xd - xm, yd - ym
    gram = xc.T @ xc
    if alpha > 0:
        gram = gram + alpha * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    rhs = xc.T @ yc
    try:
        if alpha == 0:
            raise RuntimeError("use lstsq")
        w = torch.linalg.solve(gram, rhs)
    except RuntimeError:
        w = torch.linalg.lstsq(xc.cpu(), yc.cpu()[:, None], driver="gelsd").solution[:, 0].to(xc.device)
    b = ym - xm @ w
    return w.to(x.dtype), b.to(x.dtype)


@dataclass
class RegressionFit:
    """One layer's phase-2 fit (for diagnostics)."""

    weights: Tensor        # (K,)
    intercept: float
    mean: Tensor           # (K,) mu_k over the rows
    std: Tensor            # (K,) sd_k over the rows
    r2: float              # fraction of the target's variance the fit explains on the rows
    rows: int


def phase2_map(feats: Tensor, targets: Tensor, source: Tensor, alpha: float = 1e-4) -> tuple[Tensor, RegressionFit]:
    """Regress per-position features onto per-position targets and apply to the source.

    feats (R, K, h, w) activations of R views, targets (R, h, w), source (K, h, w) ->
    (clip(sum_k w_k X_k(source), 0) (h, w), fit), X standardised with the rows' mu and sd.
    """
    r, k, h, w = feats.shape
    if targets.shape != (r, h, w) or source.shape != (k, h, w):
        raise SycamError(f"phase 2: features {tuple(feats.shape)}, targets {tuple(targets.shape)} and "
                         f"source {tuple(source.shape)} do not fit")
    x = feats.permute(0, 2, 3, 1).reshape(-1, k).float()
    y = targets.reshape(-1).float()
    xs, mu, sd = standardise(x)
    wk, b = ridge(xs, y, alpha)
    pred = xs @ wk + b
    var = (y - y.mean()).pow(2).sum()
    r2 = float(1 - (y - pred).pow(2).sum() / var) if var > 0 else float("nan")
    src = (source.float().permute(1, 2, 0).reshape(-1, k) - mu) / sd
    out = (src @ wk).clamp_min(0).view(h, w)
    return out, RegressionFit(wk, float(b), mu, sd, r2, x.shape[0])


def combine_layers(maps: Sequence[Tensor], size: tuple[int, int], how: str = "mean") -> Tensor:
    """Per-layer maps [(b, h_l, w_l)] -> (b, H, W) in [0, 1]; see the module docstring."""
    if how not in COMBINATIONS:
        raise SycamError(f"unknown combination {how!r}; choose from {', '.join(COMBINATIONS)}")
    if how in ("mean", "max"):
        return fuse(list(maps), size, how)[0]
    if not maps:
        raise SycamError("combine_layers needs at least one layer map")
    h, w = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    big = (int(h), int(w))

    def squashed(m: Tensor) -> Tensor:
        peak = m.flatten(-2).amax(-1).clamp_min(1e-12)[..., None, None]   # group max per image
        return upsample(torch.sigmoid(m / peak - 0.5), big)

    prod = squashed(maps[0])
    for m in maps[1:]:
        prod = prod * squashed(m)
    return minmax(upsample(prod, size))


# ----------------------------------------------------------------------------------------------
# the method


@dataclass
class GPNNExplanation(Explanation):
    """What :meth:`GPNNCAM.explain` returns: an :class:`~sycam.methods.explainer.Explanation` (``maps``, ``valid``,
    ``layer_maps`` = raw phase-2 maps by regression layer, ``evidence`` of the source images) plus
    GPNN-CAM's intermediate results."""

    classes: Tensor                    # (b,) explained class per image
    source_cam: Tensor                 # (b, H, W) the base CAM of the source
    phase1: Tensor                     # (b, H, W) the phase-1 map H (in [0, 1])
    mass: Tensor                       # (b, H, W) total mass m of every pixel
    phase1_steps: list[Tensor] = field(default_factory=list)   # running H after each super-iteration, (b, H, W)
    fits: list[dict[str, RegressionFit]] = field(default_factory=list)   # per image: layer -> fit
    probs: list[Tensor] = field(default_factory=list)          # per image: p(c) on each variation
    variations: list[Tensor] = field(default_factory=list)     # per image (N, 3, H, W) (keep_variations)
    correspondences: list[list[Correspondence]] = field(default_factory=list)
    variation_cams: list[Tensor] = field(default_factory=list)  # per image (N, H, W) L_v (keep_variations)
    seconds: dict[str, float] = field(default_factory=dict)    # gpnn / capture / phase1 / phase2 / total

    def save_variations(self, path, index: int = 0, images01: Tensor | None = None, ncols: int = 6):
        """PNG grid of image ``index``'s kept variations (source first when ``images01`` is given)."""
        if not self.variations:
            raise SycamError("no variations kept: explain with keep_variations=True")
        src = images01[index] if images01 is not None else self.variations[index][0]
        return save_variation_grid(src, self.variations[index], path, ncols=ncols)


class GPNNCAM(Explainer):
    """GPNN-CAM bound to a model (see the module docstring for the formulas).

    ``layers``: the base CAM's layer(s) (default: as for :class:`CAM`); ``base``: a seed name or
    expression; ``regression_layers``: the phase-2 layers (None: by model class, see
    ``DEFAULT_REGRESSION_LAYERS``, else the base layers; ``()`` to stop after phase 1);
    ``n`` variations per super-iteration, ``super_iters`` super-iterations; ``gpnn`` their settings;
    ``preprocess`` (an object with ``mean``/``std``, e.g. :class:`~sycam.models.Preprocess`) maps the
    [0, 1] variations to model input and inverts ``x`` when ``images01`` is not given (default:
    ImageNet mean/std); ``chunk`` views per evidence capture; ``classes``: class names, so that
    targets can name classes; ``eigen_smooth``: the base CAM's (see :class:`~sycam.methods.cam.CAM`);
    ``reshape``: how token layers become maps (as for :class:`CAM`).
    """

    def __init__(self, model: nn.Module, layers=None, *, base: str = "gradcam", regression_layers=None,
                 n: int = 10, super_iters: int = 2, gpnn: GPNNParams | None = None, seed: int = 0,
                 alpha: float = 1e-4, combine: str = "mean", include_source: bool = True,
                 source_weight: float = 1.0, prob_weight: bool = False, median: int = 0,
                 preprocess=None, chunk: int = 16, keep_variations: bool = False, fuse: str | None = None,
                 options=None, classes=None, eigen_smooth: bool = False, reshape=None):
        if n < 1 or super_iters < 1:
            raise SycamError(f"GPNN-CAM needs n >= 1 and super_iters >= 1, got n={n}, super_iters={super_iters}")
        if combine not in COMBINATIONS:
            raise SycamError(f"unknown combination {combine!r}; choose from {', '.join(COMBINATIONS)}")
        if alpha < 0 or chunk < 1 or median < 0 or source_weight < 0:
            raise SycamError("alpha, median and source_weight must be >= 0 and chunk >= 1")
        if median and median % 2 == 0:
            raise SycamError(f"median filter size must be odd, got {median}")
        self.base = CAM(base, model, layers, fuse=fuse, options=options, classes=classes, eigen_smooth=eigen_smooth,
                        reshape=reshape)
        self.model = model
        self.base_name = base
        self.regression_spec = regression_layers
        self.n, self.super_iters, self.seed = n, super_iters, seed
        self.gpnn = gpnn or DEFAULT_GPNN
        self.alpha, self.combine = alpha, combine
        self.include_source, self.source_weight = include_source, source_weight
        self.prob_weight, self.median = prob_weight, median
        self.preprocess = preprocess
        self.chunk, self.keep_variations = chunk, keep_variations
        self.options = options
        self.classes = self.base.classes
        self.last: GPNNExplanation | None = None

    @property
    def layers(self):
        return self.base.layers

    @property
    def text(self) -> str:
        reg = self.regression_spec
        reg = "auto" if reg is None else ",".join(reg) or "none"
        return (f"gpnncam(base={self.base.text}, n={self.n}, super_iters={self.super_iters}, "
                f"sigma={self.gpnn.sigma}, regression={reg}, alpha={self.alpha}, combine={self.combine})")

    def with_model(self, model: nn.Module) -> "GPNNCAM":
        """The same method on another model (same layer names), e.g. for the sanity checks."""
        return GPNNCAM(model, [r.name for r in self.layers] if self.layers else None, base=self.base_name,
                       regression_layers=self.regression_spec, n=self.n, super_iters=self.super_iters,
                       gpnn=self.gpnn, seed=self.seed, alpha=self.alpha, combine=self.combine,
                       include_source=self.include_source, source_weight=self.source_weight,
                       prob_weight=self.prob_weight, median=self.median, preprocess=self.preprocess,
                       chunk=self.chunk, keep_variations=self.keep_variations, fuse=self.base.fusion,
                       options=self.options, classes=self.classes, eigen_smooth=self.base.eigen_smooth,
                       reshape=self.base.reshape)

    def __call__(self, x: Tensor, targets=None, images01: Tensor | None = None) -> Tensor:
        return self.explain(x, targets, images01=images01).maps

    # ------------------------------------------------------------------------------------------

    def _regression_names(self) -> list[str]:
        spec = self.regression_spec
        if spec is None:
            spec = DEFAULT_REGRESSION_LAYERS.get(type(self.model).__name__) or [r.name for r in self.layers]
        elif isinstance(spec, str):
            spec = [spec]
        return list(spec)

    def _to01(self, x: Tensor) -> Tensor:
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0, 1)

    def _normalise(self, images01: Tensor) -> Tensor:
        mean, std = self._stats(images01)
        return (images01 - mean) / std

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = getattr(self.preprocess, "mean", IMAGENET_MEAN)
        std = getattr(self.preprocess, "std", IMAGENET_STD)
        shape = (1, -1, 1, 1) if like.ndim == 4 else (-1, 1, 1)
        return (torch.tensor(mean, dtype=like.dtype, device=like.device).view(shape),
                torch.tensor(std, dtype=like.dtype, device=like.device).view(shape))

    def _views(self, x: Tensor, classes: Tensor, refs) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """Base CAM maps (r, H, W), validity (r,), regression-layer activations and p(c) for views x,
        in captures of at most ``chunk`` views."""
        cam = self.base
        if cam.layers is None:
            raise SycamError("GPNN-CAM: the base CAM's layers are resolved by explain() before any view")
        base_names = [r.name for r in cam.layers]
        maps, valid, probs = [], [], []
        feats: dict[str, list[Tensor]] = {}
        for i in range(0, len(x), self.chunk):
            xi, ci = x[i:i + self.chunk], classes[i:i + self.chunk]
            ev = capture(self.model, xi, refs, cam.target_for(ci.tolist()), needs=cam.needs, output=cam.output,
                         options=cam.options)
            m, v = self._base_maps(ev, base_names)
            maps.append(m)
            valid.append(v)
            probs.append(_class_probs(ev, ci))
            for name in self._regression_names():
                feats.setdefault(name, []).append(ev.layers[name].A.detach())
        return (torch.cat(maps), torch.cat(valid), {k: torch.cat(v) for k, v in feats.items()}, torch.cat(probs))

    def _base_maps(self, ev, base_names) -> tuple[Tensor, Tensor]:
        raw = [self.base.program(ev.layers[name].layout())[0].detach() for name in base_names]
        maps, valid = fuse(raw, ev.input_size, self.base.fusion)
        return maps, valid & torch.isfinite(ev.scores.detach()).to(valid.device)

    def explain(self, x: Tensor, targets=None, images01: Tensor | None = None) -> GPNNExplanation:
        """GPNN-CAM maps of images ``x`` (b, 3, H, W), normalised model input.

        ``targets``: None (each image's top-1 class), a class index or name, or one per image
        (GPNN-CAM explains a class). ``images01``: the [0, 1] pictures (default: ``x`` un-normalised).
        """
        targets = resolve_targets(targets, self.classes)
        t_all = time.perf_counter()
        if x.ndim != 4 or x.shape[1] != 3:
            raise SycamError(f"GPNN-CAM explains (b, 3, H, W) images, got {tuple(x.shape)}")
        if targets is not None and callable(targets) and not isinstance(targets, Tensor):
            raise SycamError("GPNN-CAM explains a class: give a class index, one per image, or None")
        layers = self.base.layers
        if layers is None:
            reshape = self.base.reshape
            layers = self.base.layers = resolve_layers(self.model, default_layer(self.model, x[:1], reshape), reshape)
        reg_names = self._regression_names()
        refs = list({r.name: r for r in [*layers, *resolve_layers(self.model, reg_names or layers,
                                                                  self.base.reshape)]}.values())
        if images01 is None:
            images01 = self._to01(x)
        elif images01.shape != x.shape:
            raise SycamError(f"images01 {tuple(images01.shape)} must have the shape of x {tuple(x.shape)}")
        b, size = x.shape[0], (int(x.shape[-2]), int(x.shape[-1]))
        cam = self.base

        # the source images: logits, classes, base CAM, regression-layer activations
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.model(x)
        classes = _classes(targets, logits.detach()).to(x.device)
        src_ev = capture(self.model, x, refs, cam.target_for(classes.tolist()), needs=cam.needs, output=cam.output,
                         options=cam.options)
        src_maps, src_valid = self._base_maps(src_ev, [r.name for r in layers])
        src_probs = _class_probs(src_ev, classes)
        sec = {"capture": time.perf_counter() - t0, "gpnn": 0.0, "phase1": 0.0, "phase2": 0.0}

        phase1, mass = [], []
        steps: list[list[Tensor]] = [[] for _ in range(self.super_iters)]
        layer_maps: dict[str, list[Tensor]] = {name: [] for name in reg_names}
        fits, probs_all, keep_v, keep_c, keep_l = [], [], [], [], []
        for i in range(b):
            avg = torch.zeros(size, device=x.device)
            m = torch.zeros(size, device=x.device)
            if self.include_source:
                w0 = self.source_weight * float(src_valid[i])
                avg, m = running_update(avg, m, src_maps[i], torch.full(size, w0, device=x.device))
            feats = {name: [src_ev.layers[name].A[i:i + 1].detach()] for name in reg_names}
            corrs, imgs, cams, probs = [], [], [], [src_probs[i:i + 1]]
            for s in range(self.super_iters):
                t0 = time.perf_counter()
                res = gpnn_variations(images01[i], self.n, seed=self.seed * 1_000_003 + s, params=self.gpnn)
                sec["gpnn"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                xv = self._normalise(res.images.to(x.dtype))
                maps_v, valid_v, feats_v, probs_v = self._views(xv, classes[i].expand(self.n), refs)
                sec["capture"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                w = (probs_v if self.prob_weight else torch.ones_like(probs_v)) * valid_v.float()
                new, new_m = unpermuted_mean(maps_v, res.correspondence, w, self.median)
                avg, m = running_update(avg, m, new, new_m)
                steps[s].append(avg.clone())
                sec["phase1"] += time.perf_counter() - t0
                for name in reg_names:
                    feats[name].append(feats_v[name])
                corrs.append(res.correspondence)
                probs.append(probs_v)
                if self.keep_variations:
                    imgs.append(res.images)
                    cams.append(maps_v)
            phase1.append(avg)
            mass.append(m)
            probs_all.append(torch.cat(probs))
            if self.keep_variations:
                keep_v.append(torch.cat(imgs))
                keep_l.append(torch.cat(cams))
            keep_c.append(corrs)

            # phase 2: the phase-1 map carried into every view, regressed from each layer
            t0 = time.perf_counter()
            views = [avg[None]] if self.include_source else []
            views += [c.apply(avg[None])[:, 0] for c in corrs]          # P_v H, (n, H, W) each
            carried = torch.cat(views)
            fit_i = {}
            for name in reg_names:
                fv = torch.cat(feats[name] if self.include_source else feats[name][1:])
                y = F.interpolate(carried[:, None], size=fv.shape[-2:], mode="bilinear", align_corners=False,
                                  antialias=True)[:, 0]
                out, fit = phase2_map(fv, y, src_ev.layers[name].A[i].detach(), self.alpha)
                layer_maps[name].append(out)
                fit_i[name] = fit
            fits.append(fit_i)
            sec["phase2"] += time.perf_counter() - t0

        phase1_t = torch.stack(phase1)
        raw = {name: torch.stack(v) for name, v in layer_maps.items()}
        if raw:
            final = combine_layers(list(raw.values()), size, self.combine)
            finite = torch.stack([torch.isfinite(v).flatten(1).all(1) for v in raw.values()]).all(0)
        else:
            final = minmax(phase1_t)
            finite = torch.isfinite(phase1_t).flatten(1).all(1)
        valid = src_valid & finite & torch.isfinite(phase1_t).flatten(1).all(1)
        final = torch.where(valid[:, None, None], torch.nan_to_num(final), 0.0)
        sec["total"] = time.perf_counter() - t_all
        self.last = GPNNExplanation(
            final.to(x.device), valid.to(x.device), raw, src_ev, classes, src_maps, phase1_t, torch.stack(mass),
            [torch.stack(s) for s in steps], fits, probs_all, keep_v, keep_c, keep_l,
            {k: round(v, 3) for k, v in sec.items()})
        return self.last


def _class_probs(ev, classes: Tensor) -> Tensor:
    """p(c) of each image's class ``classes`` (b,), from the evidence's logits."""
    if ev.logits is None:
        raise SycamError("GPNN-CAM explains a class: it needs a classifier's logits, but the target read the raw "
                         "model output")
    logits = ev.logits.detach()
    return logits.float().softmax(1).gather(1, classes[:, None].to(logits.device))[:, 0]


def gpnncam(model: nn.Module, layers=None, **kwargs) -> GPNNCAM:
    """GPNN-CAM as :func:`sycam.methods.build.make_cam` builds it: ``gpnn`` may be a dict of settings."""
    gp = kwargs.pop("gpnn", None)
    if isinstance(gp, dict):
        gp = replace(DEFAULT_GPNN, **gp)
    return GPNNCAM(model, layers, gpnn=gp, **kwargs)
