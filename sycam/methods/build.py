"""Any method by name, bound to a model: a :class:`~sycam.methods.cam.CAM` for a seed or expression,
else the meta-method of that name (:data:`sycam.methods.seeds.META_METHODS`) built by its builder."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..grammar.ast import Expr
from .cam import CAM, unbundle
from .explainer import Explainer
from .gpnn_cam import gpnncam
from .metacam import metacam
from .seeds import get_meta

#: meta-method name -> ``builder(model, layers, **params)``; every name of META_METHODS has one
BUILDERS: dict[str, Callable[..., Explainer]] = {
    "gpnncam": gpnncam,
    "metacam": metacam,
    "adaptivegradcam": metacam,
}


def make_cam(method: str | Expr, model: nn.Module, layers=None, *, preprocess=None, **kwargs) -> Explainer:
    """A :class:`CAM` for a seed or expression, or a meta-method (``sycam seeds`` lists them, e.g.
    ``gpnncam``) bound to ``model``. ``preprocess`` (mean/std) is what meta-methods that re-render the
    image need; keyword arguments left None are not passed on."""
    meta = get_meta(method) if isinstance(method, str) else None
    if meta is None:
        return CAM(method, model, layers, preprocess=preprocess, **kwargs)
    module, bundle = unbundle(model)
    if bundle is not None:
        layers = bundle.default_layer if layers is None else layers
        preprocess = bundle.preprocess if preprocess is None else preprocess
    classes = kwargs.pop("classes", None) or (bundle.classes if bundle is not None else None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return BUILDERS[meta.name](module, layers, **{**meta.params, "preprocess": preprocess, "classes": classes,
                                                   **kwargs})
