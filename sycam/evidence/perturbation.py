"""Perturbation channel scores: one weight per (image, channel), shape (b,K).

Notation: x (b,C,H,W) the model input, A (b,K,h,w) the layer's activations, S a target
(logits -> one score per row), Up bilinear upsampling to (H,W), mm per-map min-max.

* :func:`score_cam`  w_k = S(x ⊙ M_k), M_k = mm(Up(A_k))                       K forwards
* :func:`ss_cam`     w_k = mean_i S(x ⊙ (M_k + δ_i)) or mean_i S((x + δ_i) ⊙ M_k)   N·K
* :func:`is_cam`     w_k = softmax_k mean_i S(c_i · x ⊙ M_k)                      N·K
* :func:`ablation_scores`  w_k = (y − y^{(A_k=v)}) / y, suffix passes only       K suffix
* :func:`mi_scores`  w_k = MI(Up(A_k), gray(image)) by joint histogram          no forward

The masked / ablated rows are built chunk by chunk, at most ``max_batch`` rows per model
(or suffix) call, so the K·N perturbed inputs never exist at once. Everything runs under
``torch.no_grad()`` on the device of ``x`` (``A`` for the ablation).

Variants of the masked-input family (pick with ``variant=``):

=========== ============================================== =========================================
variant     mask M_k                                       weights
=========== ============================================== =========================================
"official"  mm(Up(A_k)), bilinear, align_corners=False     S(x ⊙ M_k) [− S(x_b) with ``baseline``];
            (Score-CAM reference code, Wang et al.)        the reference code uses the probability:
                                                           pass ``ClassProbability``
"torchcam"  Up(mm_eps(A_k)): min-max at the layer's        softmax_k(S(x ⊙ M_k) − S(x)) — torchcam's
            resolution (÷ (max−min+1e-8)), then bilinear,  "baseline" is the unmasked input; it
            align_corners=False (torchcam 0.5 ScoreCAM,    cancels in the softmax, so this is
            SSCAM, ISCAM)                                  softmax_k S(x ⊙ M_k); S = logit there
"gradcam"   mm_eps(Up(A_k)), bilinear align_corners=True   softmax_k S(x ⊙ M_k) (grad-cam 1.5.7
            (torch UpsamplingBilinear2d), ÷ (max−min+1e-8) ScoreCAM; S = ClassifierOutputTarget,
                                                           i.e. the logit)
=========== ============================================== =========================================

The softmax of "torchcam" and "gradcam" is part of their weights, and so of the ``score``
terminal under ``score_variant`` "torchcam" / "gradcam": the peers' Score-CAM is
relu(sum(score * A, k)) with the logit target (recipes in ``sycam seeds``);
relu(sum(softmax(score, k) * A, k)) would take the softmax twice.

Constant channels (``skip_constant=True``): if A_k is constant its M_k is 0/0. Such a
channel is not forwarded and gets weight 0 (and is left out of the softmax). Its term
w_k·A_k in the CAM is then 0. When the constant is 0 (a dead ReLU channel, the usual
case) this is exact: w_k·A_k = 0 whatever w_k, and leaving it out of the softmax scales
all other weights of that image by one positive factor, which the CAM's min-max
normalisation removes. A non-zero constant shifts the map uniformly before the ReLU,
which normalisation does not always remove; ``skip_constant=False`` (an evidence option
too) reproduces the libraries (mask 0, i.e. S(x ⊙ 0), in the softmax).

``top_k`` keeps only the k channels with the largest spatial mean activation per image
(others get weight 0, outside the softmax): an approximation that trades accuracy for a
K/k speed-up.

Targets: anything :func:`~sycam.evidence.targets.as_target` accepts. A target with a
``classes`` field (``ClassLogit``, ``ClassProbability``, ``FinerContrast``) or per-image data
(``PerSample``, a segmentation mask, reference embeddings) is bound per image once, on the
unperturbed output (``classes=None`` = each image's top-1 class on x, not on the masked copy;
a segmentation target's predicted pixels likewise), and applied to that image's perturbed rows
(:func:`~sycam.evidence.targets.fix_target`, :func:`~sycam.evidence.targets.target_rows`). Any
other callable must score rows independently.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batching import SUFFIX_ROWS, model_rows
from ..errors import SycamError
from ..grammar.semantics import minmax
from .targets import as_target, fix_target, select_output, target_rows

__all__ = ["ablation_scores", "ablation_values", "bind_target", "channel_masks", "is_cam", "mi_scores",
           "score_cam", "ss_cam"]

Variant = Literal["official", "torchcam", "gradcam"]
SCORE_VARIANTS: tuple[Variant, ...] = ("official", "torchcam", "gradcam")
BoundTarget = Callable[[Tensor, Tensor], Tensor]  # (output rows (m,C), image index (m,)) -> (m,)
_EPS = 1e-8  # torchcam and grad-cam divide by (max - min + 1e-8)


# ----------------------------------------------------------------------------- targets

def bind_target(target: Any, logits: Tensor) -> BoundTarget:
    """Fix each image's target on its unperturbed ``logits`` (b,C) (:func:`~sycam.evidence.targets.fix_target`).

    Returns ``score(rows, index)``: the target of image ``index[j]`` applied to row j.
    """
    fixed = fix_target(as_target(target), logits)
    return lambda rows, index: _checked(target_rows(fixed, index)(rows), rows)


def _checked(scores: Any, rows: Tensor) -> Tensor:
    scores = torch.as_tensor(scores, device=rows.device)
    if scores.shape != (rows.shape[0],):
        raise SycamError(f"target returned shape {tuple(scores.shape)} for {rows.shape[0]} rows; "
                         "a target must give one score per row")
    return scores


# ----------------------------------------------------------------------------- masks

def channel_masks(A: Tensor, size: tuple[int, int], variant: Variant = "official") -> Tensor:
    """M (m,1,H,W) for activation maps A (m,h,w), built as ``variant`` does (module table)."""
    a = A[:, None].float()
    if variant == "torchcam":
        lo = a.amin(dim=(2, 3), keepdim=True)
        a = (a - lo) / (a.amax(dim=(2, 3), keepdim=True) - lo + _EPS)
        return F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    if variant not in ("official", "gradcam"):
        raise SycamError(f"unknown Score-CAM variant {variant!r}: {', '.join(SCORE_VARIANTS)}")
    up = F.interpolate(a, size=size, mode="bilinear", align_corners=variant == "gradcam")
    if variant == "official":
        return minmax(up, (2, 3))                       # constant -> 0
    lo = up.amin(dim=(2, 3), keepdim=True)              # grad-cam's recipe: its epsilon in the span
    span = up.amax(dim=(2, 3), keepdim=True) - lo
    return (up - lo) / torch.where(span > 0, span + _EPS, torch.ones_like(span))


def _kept_channels(A: Tensor, skip_constant: bool, top_k: int | None) -> Tensor:
    """(b,K) bool: channels that get a forward pass."""
    flat = A.flatten(2)
    keep = flat.amax(2) > flat.amin(2) if skip_constant else torch.ones(A.shape[:2], dtype=torch.bool,
                                                                         device=A.device)
    if top_k is not None:
        if top_k < 1:
            raise SycamError(f"top_k must be at least 1, got {top_k}")
        k = min(top_k, A.shape[1])
        top = flat.float().mean(2).masked_fill(~keep, -math.inf).topk(k, dim=1).indices
        keep = keep & torch.zeros_like(keep).scatter_(1, top, True)
    return keep


# ----------------------------------------------------------------------------- the row loop

def _run_model(model: nn.Module, x: Tensor, max_batch: int, output: Any) -> Tensor:
    """Logits of ``x`` in chunks of at most ``max_batch`` rows."""
    return torch.cat([select_output(model(x[s:s + max_batch]), output) for s in range(0, x.shape[0], max_batch)])


def _masked_scores(model: nn.Module, x: Tensor, A: Tensor, score: BoundTarget, img: Tensor, ch: Tensor, *,
                   n: int, build: Callable[[int, Tensor, Tensor], Tensor], variant: Variant,
                   max_batch: int, output: Any) -> Tensor:
    """sum_i S(build(i, x_img, M_{img,ch})) for every pair (img, ch): (P,).

    Rows are ordered sample-major (row r = sample r // P, pair r % P) and cut into
    chunks of ``max_batch`` rows; only one chunk's masks and inputs exist at a time.
    """
    P = img.numel()
    acc = torch.zeros(P, dtype=torch.float32, device=x.device)
    size = (x.shape[-2], x.shape[-1])
    for start in range(0, n * P, max_batch):
        stop = min(start + max_batch, n * P)
        parts, pos = [], []
        for i in range(start // P, (stop - 1) // P + 1):  # usually one sample per chunk
            lo, hi = max(start, i * P) - i * P, min(stop, (i + 1) * P) - i * P
            rows = img[lo:hi]
            masks = channel_masks(A[rows, ch[lo:hi]], size, variant).to(x.dtype)
            parts.append(build(i, x.index_select(0, rows), masks))
            pos.append(torch.arange(lo, hi, device=x.device))
        where = torch.cat(pos)
        logits = select_output(model(torch.cat(parts) if len(parts) > 1 else parts[0]), output)
        acc.index_add_(0, where, score(logits, img[where]).float())
    return acc


def _assemble(values: Tensor, img: Tensor, ch: Tensor, shape: torch.Size, softmax: bool) -> Tensor:
    """Scatter per-pair values into (b,K); softmax over the forwarded channels only."""
    if not softmax:
        w = values.new_zeros(shape)
        w[img, ch] = values
        return w
    w = values.new_full(shape, -math.inf)
    w[img, ch] = values
    return w.softmax(dim=1).nan_to_num(0.0)  # an image with no forwarded channel: all 0


def _check(x: Tensor, A: Tensor, max_batch: int) -> None:
    if x.ndim != 4 or A.ndim != 4:
        raise SycamError(f"expected x (b,C,H,W) and A (b,K,h,w), got {tuple(x.shape)} and {tuple(A.shape)}")
    if x.shape[0] != A.shape[0]:
        raise SycamError(f"{x.shape[0]} images but activations for {A.shape[0]}")
    if max_batch < 1:
        raise SycamError(f"max_batch must be at least 1, got {max_batch}")


def _family(model: nn.Module, x: Tensor, A: Tensor, target: Any, *, n: int,
            build: Callable[[int, Tensor, Tensor], Tensor], variant: Variant, allowed: Sequence[str],
            softmax: bool, baseline: Tensor | float | None, max_batch: int | None, skip_constant: bool,
            top_k: int | None, output: Any) -> Tensor:
    max_batch = model_rows(x.device, max_batch)
    _check(x, A, max_batch)
    if variant not in allowed:
        raise SycamError(f"unknown variant {variant!r}; this method has {', '.join(allowed)}")
    if baseline is not None and softmax:
        raise SycamError(f"variant {variant!r} takes a softmax over channels, in which a baseline "
                         "score S(x_b) cancels: leave baseline=None")
    if n < 1:
        raise SycamError(f"the number of samples must be at least 1, got {n}")
    A = A.detach().to(x.device)
    keep = _kept_channels(A, skip_constant, top_k)
    img, ch = keep.nonzero(as_tuple=True)
    score = bind_target(target, _run_model(model, x, max_batch, output))
    values = _masked_scores(model, x, A, score, img, ch, n=n, build=build, variant=variant,
                            max_batch=max_batch, output=output) / n
    if baseline is not None:
        xb = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
        every = torch.arange(x.shape[0], device=x.device)
        values = values - score(_run_model(model, xb, max_batch, output), every).float()[img]
    return _assemble(values, img, ch, A.shape[:2], softmax)


# ----------------------------------------------------------------------------- Score-CAM family

@torch.no_grad()
def score_cam(model: nn.Module, x: Tensor, A: Tensor, target: Any = None, *, variant: Variant = "official",
              baseline: Tensor | float | None = None, max_batch: int | None = None, skip_constant: bool = True,
              top_k: int | None = None, output: Any = None) -> Tensor:
    """Score-CAM weights (b,K): w_k = S(x ⊙ M_k), as ``variant`` (module table) defines them.

    ``baseline`` (official only): x_b (a tensor broadcastable to x, or a value; 0 gives the
    paper's black image); then w_k = S(x ⊙ M_k) − S(x_b), the paper's CIC. Cost: b·K
    masked forwards (fewer with constant channels or ``top_k``) plus one of x.
    """
    return _family(model, x, A, target, n=1, build=lambda _i, xi, m: xi * m, variant=variant,
                   allowed=("official", "torchcam", "gradcam"), softmax=variant != "official",
                   baseline=baseline, max_batch=max_batch, skip_constant=skip_constant, top_k=top_k,
                   output=output)


@torch.no_grad()
def ss_cam(model: nn.Module, x: Tensor, A: Tensor, target: Any = None, *, n: int = 10, sigma: float = 2.0,
           noise: Literal["mask", "input"] = "mask", variant: Literal["official", "torchcam"] = "official",
           baseline: Tensor | float | None = None, max_batch: int | None = None, skip_constant: bool = True,
           top_k: int | None = None, generator: torch.Generator | None = None, output: Any = None) -> Tensor:
    """SS-CAM weights (b,K), averaged over ``n`` Gaussian samples δ ~ N(0, sigma²).

    noise="mask":  w_k = (1/N) Σ_i S(x ⊙ (M_k + δ_i))   (SS-CAM(1); torchcam SSCAM)
    noise="input": w_k = (1/N) Σ_i S((x + δ_i) ⊙ M_k)   (SS-CAM(2))

    Every perturbed row draws its own δ, in row order (sample-major, then image, then
    channel) from ``generator``: for a fixed seed and ``max_batch`` the result is
    reproducible. "official" returns the average (minus S(x_b) with ``baseline``);
    "torchcam" is softmax_k of it with torchcam's masks (torchcam: N=35, sigma=2, mask
    noise). Defaults follow the paper: N=10, sigma=2.
    """
    if noise not in ("mask", "input"):
        raise SycamError(f"noise must be 'mask' or 'input', got {noise!r}")
    if sigma < 0:
        raise SycamError(f"sigma must be non-negative, got {sigma}")

    def randn(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype) * sigma

    if noise == "mask":
        build = lambda _i, xi, m: xi * (m + randn(m))  # noqa: E731
    else:
        build = lambda _i, xi, m: (xi + randn(xi)) * m  # noqa: E731
    return _family(model, x, A, target, n=n, build=build, variant=variant, allowed=("official", "torchcam"),
                   softmax=variant == "torchcam", baseline=baseline, max_batch=max_batch,
                   skip_constant=skip_constant, top_k=top_k, output=output)


def is_coefficients(n: int, schedule: Literal["torchcam", "linear"] = "torchcam") -> list[float]:
    """IS-CAM mask scales c_1..c_N.

    "torchcam": c_i = Σ_{j=1..i} j/N = i(i+1)/(2N) (torchcam 0.5 adds (i+1)/N to a running
    coefficient; the scales grow to (N+1)/2). "linear": c_i = i/N, the straight path from 0 to
    x ⊙ M_k of integrated gradients (our reading of "integrated"; not a library's choice).
    """
    if schedule == "torchcam":
        return [i * (i + 1) / (2 * n) for i in range(1, n + 1)]
    if schedule == "linear":
        return [i / n for i in range(1, n + 1)]
    raise SycamError(f"unknown IS-CAM schedule {schedule!r}: torchcam or linear")


@torch.no_grad()
def is_cam(model: nn.Module, x: Tensor, A: Tensor, target: Any = None, *, n: int = 10,
           schedule: Literal["torchcam", "linear"] | Sequence[float] = "torchcam",
           variant: Literal["official", "torchcam"] = "official", max_batch: int | None = None,
           skip_constant: bool = True, top_k: int | None = None, output: Any = None,
           softmax: bool = True) -> Tensor:
    """IS-CAM weights (b,K): w_k = softmax_k (1/N) Σ_i S(c_i · x ⊙ M_k).

    c_i from :func:`is_coefficients` (or a sequence of scales, N = its length). The
    baseline term of the paper, −S(x_b), is the same for every channel and cancels in the
    softmax. "official" uses mm(Up(A_k)) masks, "torchcam" torchcam's (module table).
    ``softmax=False`` returns the channel averages before the softmax (the language's
    ``score_is`` terminal; the IS-CAM seed applies ``softmax(score_is, k)`` itself).
    """
    coeffs = list(schedule) if not isinstance(schedule, str) else is_coefficients(n, schedule)
    return _family(model, x, A, target, n=len(coeffs), build=lambda i, xi, m: coeffs[i] * (xi * m),
                   variant=variant, allowed=("official", "torchcam"), softmax=softmax, baseline=None,
                   max_batch=max_batch, skip_constant=skip_constant, top_k=top_k, output=output)


# ----------------------------------------------------------------------------- Ablation-CAM

#: grad-cam 1.5.7's AblationLayer: ABLATION_VALUE, and AblationCAM's default batch_size
GRADCAM_ABLATION, GRADCAM_ABLATION_ROWS = 1e7, 32


def ablation_values(A: Tensor, value: float | str = 0.0) -> Tensor:
    """(b,K): the value channel k of image i is set to when it is ablated.

    A number: that value everywhere (the paper: 0). ``"gradcam"``: grad-cam 1.5.7's rule, with
    m = min(A_i) over all channels and positions: 0 if m = 0, else v_r, r = k mod 32, where
    v_0 = m − 1e7, v_r = v_{r−1} − 1e7 in A's dtype. Its AblationLayer sets row r of a 32-row batch
    to min(batch) − 1e7 and re-reads that minimum after each row, so the value falls by 1e7 per row
    and restarts with each batch (the weights then carry that row factor, as grad-cam's do).
    """
    b, K = A.shape[:2]
    if isinstance(value, str) and value != "gradcam":
        raise SycamError(f"ablation value {value!r}: a number or 'gradcam'")
    if value != "gradcam":
        return A.new_full((b, K), float(value))
    m = A.reshape(b, -1).amin(1)
    steps, v = [], m
    for _ in range(min(K, GRADCAM_ABLATION_ROWS)):
        v = v - GRADCAM_ABLATION
        steps.append(v)
    ladder = torch.stack(steps, 1)[:, torch.arange(K, device=A.device) % GRADCAM_ABLATION_ROWS]
    return torch.where(m[:, None] == 0, torch.zeros_like(ladder), ladder)


@torch.no_grad()
def ablation_scores(suffix: Callable[..., Any], A: Tensor | None = None, target: Any = None, *,
                    value: float | str = 0.0, relative: bool = True, max_batch: int = SUFFIX_ROWS,
                    output: Any = None) -> Tensor:
    """Ablation-CAM weights (b,K): w_k = (y − y^{(A_k=v_k)}) / y, y = S(suffix(A)).

    ``suffix(a, index)`` runs the model after the layer (:func:`~sycam.evidence.split.split_model`),
    ``index`` saying which image each row comes from; ``A`` defaults to ``suffix.activations``.
    Rows (one ablated channel each) go through the suffix ``max_batch`` at a time.
    ``relative=False`` gives y − y^{(A_k=v_k)} (no division; y ≈ 0 makes the ratio blow up).
    v_k from :func:`ablation_values`: the paper's 0, any number, or ``"gradcam"`` (grad-cam
    1.5.7's min(A) − 1e7 ladder; with S = the logit this reproduces its AblationCAM). A channel
    already equal to v_k everywhere is not run: its ablated input is A itself, so w_k = 0 exactly.
    """
    if A is None:
        A = getattr(suffix, "activations", None)
        if not isinstance(A, Tensor):
            raise SycamError("give the activations A, or a Suffix from split_model that carries them")
    if A.ndim < 2:
        raise SycamError(f"expected activations (b,K,...), got shape {tuple(A.shape)}")
    if max_batch < 1:
        raise SycamError(f"max_batch must be at least 1, got {max_batch}")
    b, K = A.shape[:2]
    every = torch.arange(b, device=A.device)
    base_logits = torch.cat([select_output(suffix(A[s:s + max_batch], every[s:s + max_batch]), output)
                             for s in range(0, b, max_batch)])
    score = bind_target(target, base_logits)
    y = score(base_logits, every).float()

    values = ablation_values(A, value)
    changed = (A.reshape(b, K, -1) != values[:, :, None]).any(dim=2)
    img, ch = changed.nonzero(as_tuple=True)
    ablated = y.new_zeros(img.numel())
    for s in range(0, img.numel(), max_batch):
        rows, chans = img[s:s + max_batch], ch[s:s + max_batch]
        a = A.index_select(0, rows)  # a copy
        a[torch.arange(rows.numel(), device=A.device), chans] = values[rows, chans].view(-1, *[1] * (A.ndim - 2))
        ablated[s:s + max_batch] = score(select_output(suffix(a, rows), output), rows).float()
    w = y.new_zeros(b, K)
    w[img, ch] = y[img] - ablated
    return w / y[:, None] if relative else w


# ----------------------------------------------------------------------------- MI-CAM

def grayscale(image: Tensor) -> Tensor:
    """(b,H,W): ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B for 3 channels, else the channel mean."""
    if image.ndim != 4:
        raise SycamError(f"expected images (b,C,H,W), got shape {tuple(image.shape)}")
    if image.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
        return torch.einsum("bchw,c->bhw", image, luma)
    return image.mean(dim=1)


def _quantise(v: Tensor, bins: int) -> Tensor:
    """Min-max each row of v (m,n) to [0,1] and cut into ``bins`` equal bins (constant row -> bin 0)."""
    return (minmax(v, (1,)) * bins).long().clamp_(0, bins - 1)


def _entropy(p: Tensor) -> Tensor:
    return -torch.special.xlogy(p, p).sum(dim=-1)


@torch.no_grad()
def mi_scores(image: Tensor, A: Tensor, *, bins: int = 256, normalized: bool = True,
              max_batch: int = SUFFIX_ROWS) -> Tensor:
    """MI-CAM weights (b,K): mutual information between Up(A_k) and the grayscale image.

    Estimator: plug-in (histogram) MI. The grayscale image g (:func:`grayscale`) and each
    bilinearly upsampled map (align_corners=False) are min-max scaled per image/map and
    cut into ``bins`` equal bins; with p the joint histogram over the H·W pixels,
    MI = H(a) + H(g) − H(a,g) in nats (H = −Σ p log p). ``normalized=True`` returns
    NMI = 2·MI / (H(a) + H(g)) in [0,1] (scikit-learn's arithmetic normalisation); 0 for a
    constant map. Equals ``sklearn.metrics.(normalized_)mutual_info_score`` on the bin
    labels. The plug-in estimate is biased upwards when bins² approaches H·W. ``max_batch``
    maps are histogrammed at once (memory ~ max_batch·(H·W + bins²)). Pass the image in
    display space ([0,1] RGB) rather than the normalised model input.
    """
    if A.ndim != 4 or image.shape[0] != A.shape[0]:
        raise SycamError(f"expected A (b,K,h,w) for the {image.shape[0]} images, got {tuple(A.shape)}")
    if bins < 2:
        raise SycamError(f"bins must be at least 2, got {bins}")
    b, K = A.shape[:2]
    size = image.shape[-2:]
    g = _quantise(grayscale(image.float()).flatten(1), bins)  # (b, HW)
    pg = torch.zeros(b, bins, device=image.device).scatter_add_(1, g, torch.ones_like(g, dtype=torch.float32))
    pg /= g.shape[1]  # (b, bins)
    hg = _entropy(pg)
    A = A.detach().to(image.device).float()
    out = torch.zeros(b * K, device=image.device)
    for s in range(0, b * K, max_batch):
        rows = torch.arange(s, min(s + max_batch, b * K), device=image.device)
        img, ch = rows // K, rows % K
        up = F.interpolate(A[img, ch][:, None], size=size, mode="bilinear", align_corners=False)
        a = _quantise(up.flatten(1), bins)  # (m, HW)
        joint = torch.zeros(rows.numel(), bins * bins, device=image.device)
        joint.scatter_add_(1, a * bins + g[img], torch.ones_like(a, dtype=joint.dtype))
        joint /= a.shape[1]
        ha = _entropy(joint.view(-1, bins, bins).sum(dim=2))
        mi = (ha + hg[img] - _entropy(joint)).clamp_min(0.0)
        if normalized:
            denom = ha + hg[img]
            mi = torch.where(denom > 0, 2 * mi / denom.clamp_min(1e-12), torch.zeros_like(mi))
        out[rows] = mi
    return out.view(b, K)
