"""Test-time augmentation, pytorch-grad-cam's ``aug_smooth``, as a switch on any explainer.

:class:`AugSmooth` explains every image under each view of (horizontal flip or not) x (input
multiplied by m), brings each view's map back to the image's frame (the flip undone) and
averages them over the views:

    L(x) = minmax( mean_views flip^-1( L_inner(m * flip(x)) ) )

The views are grad-cam 1.5.7's (``base_cam.forward_augmentation_smoothing``: ttach's
``HorizontalFlip()`` x ``Multiply(factors=[0.9, 1, 1.1])``, 6 views); as in ttach, the identity
(no flip, m = 1) is always one of them, and m multiplies the model input (the normalised
tensor). grad-cam leaves the mean of its [0, 1] maps as it is; here it is min-max normalised
like every sycam map (a positive affine change: Pearson 1). A view whose map is invalid is left
out of its image's mean.

Every view explains what the image itself is explained for: the target is fixed on the
identity view's output (each image's top-1 class when no target is given; a segmentation
target's pixels, which flip with the image: :func:`~sycam.evidence.targets.fix_target`).
grad-cam instead re-picks each view's own top-1 class when ``targets`` is None, so an image
may be explained for different classes in different views.

Cost: one run of the wrapped method per view (6x its passes by default).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import SycamError
from ..evidence.targets import fix_target, reads_raw_output
from ..grammar.semantics import minmax
from .cam import as_batch
from .explainer import Explainer, Explanation

#: grad-cam 1.5.7's ``Multiply`` factors (ttach adds 1 if missing) and flips
GRADCAM_FACTORS = (0.9, 1.0, 1.1)


def hflip(t: Tensor) -> Tensor:
    """Mirror the last (width) axis: its own inverse."""
    return t.flip(-1)


class AugSmooth(Explainer):
    """``explainer`` averaged over test-time augmentations (see the module docstring).

    ``flip``: also explain the mirrored images; ``factors``: input multipliers (1 is always added,
    as ttach does). ``AugSmooth(sycam.CAM("gradcam", model, "layer4"))`` is grad-cam's
    ``GradCAM(...)(x, targets, aug_smooth=True)``; ``make_cam(..., aug_smooth=True)`` builds it.
    """

    def __init__(self, explainer: Explainer, *, flip: bool = True, factors: Sequence[float] = GRADCAM_FACTORS):
        if isinstance(explainer, AugSmooth):
            raise SycamError("this explainer is already augmentation-smoothed")
        factors = [float(m) for m in factors]
        if not factors or not all(math.isfinite(m) and m > 0 for m in factors):
            raise SycamError(f"aug_smooth factors multiply the input: give positive numbers, not {factors}")
        self.inner = explainer
        self.model: nn.Module = explainer.model
        self.flip = bool(flip)
        self.factors = tuple(dict.fromkeys([1.0, *factors]))         # the identity first
        self.views = [(f, m) for f in ((False, True) if self.flip else (False,)) for m in self.factors]
        self.last: Explanation | None = None

    @property
    def text(self) -> str:
        factors = ", ".join(f"{m:g}" for m in self.factors)
        return f"aug_smooth({self.inner.text}; {'hflip x ' if self.flip else ''}factors {factors})"

    @property
    def layers(self):
        return getattr(self.inner, "layers", None)

    @property
    def preprocess(self):
        return getattr(self.inner, "preprocess", None)

    def with_model(self, model: nn.Module) -> AugSmooth:
        return AugSmooth(self.inner.with_model(model), flip=self.flip, factors=self.factors)

    def explain(self, x, targets=None) -> Explanation:
        """The mean over the views of the wrapped method's maps (``targets`` as it takes them)."""
        x = as_batch(x, self.preprocess, self.model)
        spec = targets if targets is not None else getattr(self.inner, "target", None)
        if reads_raw_output(spec):
            raise SycamError("aug_smooth cannot move a detection target's boxes into the flipped image; "
                             "explain detections without it")
        first = self.inner.explain(x, targets)          # the identity view: the image itself
        view_spec = spec
        if spec is None or hasattr(spec, "fixed") or hasattr(spec, "classes"):
            if first.logits is None or first.logits.dim() < 2:
                raise SycamError("aug_smooth fixes the target on the model's scores, and this explanation has none")
            view_spec = first.logits.argmax(1).tolist() if spec is None else fix_target(spec, first.logits)
        maps, valid = [first.maps], [first.valid]
        for flip, m in self.views[1:]:
            xv = x * m if m != 1.0 else x
            t = view_spec.in_frame(hflip) if flip and view_spec is not None and hasattr(view_spec, "in_frame") \
                else view_spec
            e = self.inner.explain(hflip(xv) if flip else xv, t)
            maps.append(hflip(e.maps) if flip else e.maps)
            valid.append(e.valid)
        ok = torch.stack(valid).to(first.maps.dtype)                          # (views, b)
        mean = (torch.stack(maps) * ok[:, :, None, None]).sum(0) / ok.sum(0).clamp_min(1)[:, None, None]
        self.last = Explanation(minmax(mean, (1, 2)), ok.sum(0) > 0, {}, first.evidence)
        return self.last
