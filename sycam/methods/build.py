"""Any method by name, bound to a model: a :class:`~sycam.methods.cam.CAM` for a seed or expression,
else the meta-method of that name (:data:`sycam.methods.seeds.META_METHODS`) built by its builder."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..grammar.ast import Expr
from .cam import CAM, unbundle
from .explainer import Explainer
from .gpnn_cam import gpnncam
from .metacam import metacam
from .seeds import get_meta
from .smoothing import AugSmooth

#: meta-method name -> ``builder(model, layers, **params)``; every name of META_METHODS has one
BUILDERS: dict[str, Callable[..., Explainer]] = {
    "gpnncam": gpnncam,
    "metacam": metacam,
    "adaptivegradcam": metacam,
}


def make_cam(method: str | Expr, model: nn.Module, layers=None, *, preprocess=None, eigen_smooth: bool = False,
             aug_smooth: bool = False, **kwargs) -> Explainer:
    """A :class:`CAM` for a seed or expression, or a meta-method (``sycam seeds`` lists them, e.g.
    ``gpnncam``) bound to ``model``. ``preprocess`` (mean/std) is what meta-methods that re-render the
    image need; keyword arguments left None are not passed on.

    The switches (pytorch-grad-cam's): ``eigen_smooth`` projects each map's channel sum on its first
    principal component (a CAM's expression, a meta-method's component CAMs; same passes);
    ``aug_smooth`` averages the maps of 6 flipped / scaled views (:class:`~sycam.methods.smoothing.AugSmooth`;
    6x the passes)."""
    meta = get_meta(method) if isinstance(method, str) else None
    if meta is None:
        explainer: Explainer = CAM(method, model, layers, preprocess=preprocess, eigen_smooth=eigen_smooth,
                                   **kwargs)
    else:
        module, bundle = unbundle(model)
        if bundle is not None:
            layers = bundle.default_layer if layers is None else layers
            preprocess = bundle.preprocess if preprocess is None else preprocess
        classes = kwargs.pop("classes", None) or (bundle.classes if bundle is not None else None)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if eigen_smooth:      # every meta-method is made of CAMs and passes it on to them
            kwargs["eigen_smooth"] = True
        explainer = BUILDERS[meta.name](module, layers, **{**meta.params, "preprocess": preprocess,
                                                            "classes": classes, **kwargs})
    return AugSmooth(explainer) if aug_smooth else explainer


def explain(method: str | Expr, model, x, layers=None, targets=None, **kwargs) -> Tensor:
    """One-shot: the (b, H, W) maps of ``method`` (a seed, expression or meta-method; ``eigen_smooth``,
    ``aug_smooth`` and the rest as :func:`make_cam` takes them) for images ``x`` (``model`` and ``x``
    as for :class:`CAM`)."""
    with make_cam(method, model, layers, **kwargs) as cam, torch.no_grad():
        return cam(x, targets)
