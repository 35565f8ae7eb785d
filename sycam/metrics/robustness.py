"""Robustness of the explanation itself: re-run the method on perturbed or transformed inputs.

Both metrics need the ``explainer`` (the candidate method(s) as a callable ``(x, labels) ->
maps``); the similarity between maps is pluggable (a name from
:data:`sycam.metrics.similarity.SIMILARITIES` or a callable ``(a, b) -> (...)``).

With Pearson similarity (and, for equivariance, the horizontal flip) both are exact at feature
resolution: given :class:`~sycam.kernels.lowres.LowResMaps` and an explainer with a
``lowres(x, labels) -> (n,m,h,w)`` method (the search's, :mod:`sycam.search.reexplain`), the
maps are compared by :func:`~sycam.metrics.similarity.pearson_lowres` (a flip commutes with the
symmetric bilinear upsampling); otherwise they are compared at input resolution.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import Batch
from ..errors import UnknownNameError
from ..kernels.fingerprint import fingerprint
from ..kernels.lowres import LowResMaps
from .base import Cost, Direction, Metric, MetricError, Resources, call_explainer, input_affine, logits_of
from .similarity import Similarity, get_similarity, pearson, pearson_lowres

NoiseFn = Callable[[Tensor, float, torch.Generator], Tensor]


# ---------------------------------------------------------------------- noises (pixel space, [0,1])
def gaussian_noise(images: Tensor, level: float, gen: torch.Generator) -> Tensor:
    """images + N(0, level^2), clamped to [0,1]."""
    return (images + level * torch.randn(images.shape, generator=gen, device=images.device)).clamp(0, 1)


def salt_and_pepper(images: Tensor, level: float, gen: torch.Generator) -> Tensor:
    """A share ``level`` of pixels (all channels) set to black or white with equal odds."""
    shape = (images.shape[0], 1, *images.shape[-2:])
    hit = torch.rand(shape, generator=gen, device=images.device) < level
    white = torch.rand(shape, generator=gen, device=images.device) < 0.5
    return torch.where(hit, white.to(images.dtype).expand_as(images), images)


def speckle_noise(images: Tensor, level: float, gen: torch.Generator) -> Tensor:
    """images * (1 + N(0, level^2)), clamped to [0,1]."""
    return (images * (1 + level * torch.randn(images.shape, generator=gen, device=images.device))).clamp(0, 1)


def uniform_noise(images: Tensor, level: float, gen: torch.Generator) -> Tensor:
    """images + U(-level, level), clamped to [0,1]."""
    u = torch.rand(images.shape, generator=gen, device=images.device) * 2 - 1
    return (images + level * u).clamp(0, 1)


NOISES: dict[str, NoiseFn] = {"gaussian": gaussian_noise, "salt_and_pepper": salt_and_pepper,
                              "speckle": speckle_noise, "uniform": uniform_noise}


class NoiseRobustness(Metric):
    """Consistency / responsiveness of a CAM under input noise (after Sarkar et al. 2025,
    https://arxiv.org/abs/2508.18154; the paper's exact similarity and combination were not
    available, so both are choices here).

    ``samples`` noisy copies x~_t of each image (``noise`` in pixel space at ``level``, mapped back
    to the model input); sim_t = similarity(L(x), L(x~_t)) with the explainer re-run on x~_t;
    kept_t = the model's top-1 class on x~_t equals its top-1 class on x.

    * ``kind="consistency"``: mean of sim_t over kept samples (NaN if none); higher is better.
    * ``kind="responsiveness"``: mean of 1 - sim_t over samples whose prediction changed (NaN if
      none); higher is better.
    * ``kind="combined"``: mean over all samples of sim_t if kept else 1 - sim_t.

    Cost: ``samples`` explainer calls per map and image, ``samples + 1`` shared forwards.
    """

    direction = Direction.HIGHER
    needs = frozenset({"model_fn", "explainer"})

    def __init__(self, kind: str = "combined", noise: str | NoiseFn = "gaussian", level: float = 0.05,
                 samples: int = 4, similarity: str | Similarity = "pearson", seed: int = 0):
        if kind not in ("consistency", "responsiveness", "combined"):
            raise MetricError(f"kind must be 'consistency', 'responsiveness' or 'combined', got {kind!r}")
        if isinstance(noise, str) and noise not in NOISES:
            raise UnknownNameError("noise", noise, NOISES)
        if int(samples) < 1 or int(samples) != samples:
            raise MetricError(f"samples must be a whole number >= 1 (noisy copies per image), not {samples!r}")
        if not float(level) >= 0:
            raise MetricError(f"the noise level must be >= 0, not {level!r}")
        self.kind, self.noise, self.level, self.samples = kind, noise, float(level), int(samples)
        self.similarity, self.seed = get_similarity(similarity), seed
        self.name = {"consistency": "noise_consistency", "responsiveness": "noise_responsiveness",
                     "combined": "noise_robustness"}[kind]
        self.cost = Cost(shared_forwards=self.samples + 1, explainer_calls=self.samples)
        self.accepts_lowres = self.similarity is pearson    # type: ignore[misc]
        self._noisy: tuple[str, Tensor] | None = None

    def noisy_inputs(self, batch: Batch) -> Tensor:
        """The ``T`` seeded noisy copies of the batch's images as model inputs ``(b*T,3,S,S)``,
        image-major (a function of the images and the parameters; the last one is kept)."""
        key = fingerprint(batch.images, batch.x)
        if self._noisy is not None and self._noisy[0] == key:
            return self._noisy[1]
        noise = NOISES[self.noise] if isinstance(self.noise, str) else self.noise
        aff = input_affine(batch)
        gen = torch.Generator(device=batch.x.device).manual_seed(self.seed)
        noisy = torch.stack([aff.to_input(noise(batch.images, self.level, gen)) for _ in range(self.samples)], 1)
        noisy = noisy.flatten(0, 1)
        self._noisy = (key, noisy)
        return noisy

    def parts(self, maps: Tensor | LowResMaps, batch: Batch, res: Resources) -> dict[str, Tensor]:
        """``similarity (n,b,T)`` and ``kept (b,T)`` for the ``T`` noisy samples."""
        b = len(batch)
        t = self.samples
        noisy = self.noisy_inputs(batch)  # (b*T,3,S,S), image-major
        pred0 = logits_of(res.model_fn, batch.x, res.batch_size).argmax(1)  # type: ignore[arg-type]
        pred = logits_of(res.model_fn, noisy, res.batch_size).argmax(1).view(b, t)  # type: ignore[arg-type]
        labels = batch.labels.repeat_interleave(t)
        if isinstance(maps, LowResMaps):
            n = maps.a.shape[0]
            again = _lowres_again(res, noisy, labels, n)
            if again is not None:
                sim = pearson_lowres(maps.a[:, :, None], again.view(n, b, t, *again.shape[-2:]), maps.size)
                return {"similarity": sim, "kept": pred == pred0[:, None]}
            maps = maps.full()
        n = maps.shape[0]
        again = call_explainer(res.explainer, noisy, labels, n,  # type: ignore[arg-type]
                               res.batch_size).view(n, b, t, *maps.shape[-2:])
        sim = self.similarity(maps[:, :, None], again)
        return {"similarity": sim, "kept": pred == pred0[:, None]}

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        p = self.parts(maps, batch, res)
        sim, kept = p["similarity"], p["kept"][None].expand_as(p["similarity"])
        if self.kind == "consistency":
            return _masked_mean(sim, kept)
        if self.kind == "responsiveness":
            return _masked_mean(1 - sim, ~kept)
        return torch.where(kept, sim, 1 - sim).mean(-1)


def _lowres_again(res: Resources, x: Tensor, labels: Tensor, n: int) -> Tensor | None:
    """Raw feature-resolution maps ``(n,m,h,w)`` of the candidates on inputs ``x`` from the
    explainer's ``lowres`` method, in chunks of ``batch_size``; None if it has none (or declines)."""
    lowres = getattr(res.explainer, "lowres", None)
    if lowres is None:
        return None
    outs = []
    for i in range(0, x.shape[0], res.batch_size):
        out = lowres(x[i:i + res.batch_size], labels[i:i + res.batch_size])
        if out is None:
            return None
        if out.dim() != 4 or out.shape[0] != n:
            raise MetricError(f"explainer.lowres returned shape {tuple(out.shape)} for {n} candidate(s)")
        outs.append(out)
    return torch.cat(outs, dim=1)


def _masked_mean(v: Tensor, m: Tensor) -> Tensor:
    cnt = m.sum(-1)
    s = torch.where(m, v, torch.zeros_like(v)).sum(-1)
    return torch.where(cnt > 0, s / cnt.clamp_min(1), torch.full_like(s, float("nan")))


# ---------------------------------------------------------------------- equivariance
def _resize(t: Tensor, size: int) -> Tensor:
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class Equivariance(Metric):
    """Equivariance of the map under a spatial transform T: similarity(L(T x), T L(x)).

    ``transform``: ``"hflip"`` (horizontal flip); ``"shift"`` (content moved by ``amount`` px down
    and right, the vacated strip filled with 0 = mean colour; compared on the overlap);
    ``"scale"`` (zoom by ``amount``: > 1 enlarges and centre-crops, < 1 shrinks and pads with the
    mean colour; compared on the region showing the image). Higher is better.
    Cost: 1 explainer call per map and image.
    """

    direction = Direction.HIGHER
    needs = frozenset({"explainer"})
    cost = Cost(explainer_calls=1)

    def __init__(self, transform: str = "hflip", amount: float | None = None,
                 similarity: str | Similarity = "pearson"):
        defaults = {"hflip": 0.0, "shift": 16.0, "scale": 1.25}
        if transform not in defaults:
            raise UnknownNameError("transform", transform, defaults)
        self.transform = transform
        self.amount = defaults[transform] if amount is None else float(amount)
        if transform == "scale" and self.amount <= 0:
            raise MetricError("scale amount must be > 0")
        self.similarity = get_similarity(similarity)
        self.name = {"hflip": "equivariance_flip", "shift": "equivariance_shift",
                     "scale": "equivariance_scale"}[transform]
        self.accepts_lowres = transform == "hflip" and self.similarity is pearson    # type: ignore[misc]

    def apply(self, t: Tensor) -> Tensor:
        """T applied to images/inputs ``(m,C,S,S)`` (empty area = 0)."""
        s = t.shape[-1]
        if self.transform == "hflip":
            return t.flip(-1)
        if self.transform == "shift":
            k = int(round(self.amount))
            out = torch.zeros_like(t)
            out[..., k:, k:] = t[..., :s - k, :s - k]
            return out
        size = max(1, int(round(self.amount * s)))
        big = _resize(t, size)
        if size >= s:
            o = (size - s) // 2
            return big[..., o:o + s, o:o + s]
        out = torch.zeros_like(t)
        o = (s - size) // 2
        out[..., o:o + size, o:o + size] = big
        return out

    def valid(self, s: int) -> tuple[slice, slice]:
        """Region of the transformed frame that shows transformed content."""
        if self.transform == "shift":
            k = int(round(self.amount))
            return slice(k, s), slice(k, s)
        if self.transform == "scale" and self.amount < 1:
            size = max(1, int(round(self.amount * s)))
            o = (s - size) // 2
            return slice(o, o + size), slice(o, o + size)
        return slice(0, s), slice(0, s)

    def compute(self, maps: Tensor | LowResMaps, batch: Batch, res: Resources) -> Tensor:
        if isinstance(maps, LowResMaps):
            if maps.size[0] != maps.size[1]:
                raise MetricError(f"{self.name} needs square inputs, got {maps.size}")
            # hflip only (accepts_lowres): flip(Up(a)) = Up(flip(a)) for the symmetric upsampling
            again = _lowres_again(res, self.apply(batch.x), batch.labels, maps.a.shape[0])
            if again is not None:
                return pearson_lowres(again, maps.a.flip(-1), maps.size)
            maps = maps.full()
        n, b = maps.shape[:2]
        s = maps.shape[-1]
        if maps.shape[-2] != s:
            raise MetricError(f"{self.name} needs square inputs, got {tuple(maps.shape[-2:])}")
        again = call_explainer(res.explainer, self.apply(batch.x), batch.labels, n, res.batch_size)  # type: ignore[arg-type]
        moved = self.apply(maps.flatten(0, 1)[:, None])[:, 0].view(n, b, s, s)
        rows, cols = self.valid(s)
        return self.similarity(again[..., rows, cols], moved[..., rows, cols])
