"""The Python API: explain images with a seed method or any expression.

    with sycam.CAM("gradcam", model, layers="layer4") as cam:
        maps = cam(x)                      # (b, H, W) in [0, 1], on x's device
        maps = cam(x, targets=[281, 7])    # one class per image, or a callable

``method`` is a seed name (``sycam seeds``) or expression text such as
``"relu(sum(mean(G, hw) * A, k))"``; an expression with channel-weight axes {b, k} is
turned into the heatmap relu(sum(w * A, k)).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import SycamError
from .evidence.capture import Evidence, capture, needed_terms
from .evidence.layers import last_spatial_layer, resolve_layers
from .evidence.options import EvidenceOptions
from .evidence.targets import ClassLogit, ClassProbability, FinerContrast, as_target
from .grammar.ast import Expr, terminals
from .grammar.checker import DEFAULT_TERMINALS, as_heatmap, result_kind
from .grammar.printer import to_text
from .kernels.compiler import Program
from .kernels.postprocess import FUSIONS, fuse
from .methods.seeds import Seed, get_meta, resolve_method


@dataclass
class Explanation:
    maps: Tensor                      # (b, H, W) in [0, 1] at the input size
    valid: Tensor                     # (b,) False where the expression gave NaN/inf
    layer_maps: dict[str, Tensor]     # raw maps at each layer's resolution, before post-processing
    evidence: Evidence

    @property
    def logits(self) -> Tensor:
        return self.evidence.logits

    @property
    def scores(self) -> Tensor:
        return self.evidence.scores


def _postprocess(ev: Evidence, raw: dict[str, Tensor], fusion: str) -> tuple[Tensor, Tensor]:
    """Fused maps at the input size. A model that resizes its input internally (a detector) gives
    ``ev.frame`` to bring layer maps into the input's frame first; a row whose target score is
    not finite (e.g. no detection matched) has nothing to explain and is reported invalid."""
    layer_maps = list(raw.values()) if ev.frame is None else [ev.frame(m) for m in raw.values()]
    maps, valid = fuse(layer_maps, ev.input_size, fusion)
    return maps, valid & torch.isfinite(ev.scores).to(valid.device)


class CAM:
    """A CAM method (seed name or expression) bound to a model and one or more layers."""

    def __init__(self, method: str | Expr, model: nn.Module, layers=None, *, target=None, output=None,
                 fuse: str | None = None, compile: bool = False, options=None, **target_params):
        if isinstance(method, str):
            tree, self.seed = resolve_method(method)
        else:
            tree, self.seed = method, None
        self.kind = result_kind(tree, DEFAULT_TERMINALS)   # type errors surface here, before any work
        self.expression: Expr = as_heatmap(tree, DEFAULT_TERMINALS)
        self.text = to_text(tree)
        self.model = model
        self.layers = None if layers is None else resolve_layers(model, layers)
        self.target = target
        self.output = output
        self.fusion = fuse or (self.seed.fuse if self.seed else "mean")
        if self.fusion not in FUSIONS:
            raise SycamError(f"unknown fusion {self.fusion!r}; choose from {', '.join(FUSIONS)}")
        self.target_params = {**(self.seed.params if self.seed else {}), **target_params}
        self.options = EvidenceOptions.make(options)   # perturbation / noise / scale settings
        self.needs = needed_terms(terminals(self.expression))
        self.program = Program([self.expression], DEFAULT_TERMINALS)
        if compile:
            self.program.compile()
        self.last: Explanation | None = None

    def __repr__(self) -> str:
        name = self.seed.title if self.seed else self.text
        return f"CAM({name!r}, layers={[r.name for r in self.layers] if self.layers else None})"

    def with_model(self, model: nn.Module) -> "CAM":
        """This method on another ``model`` (e.g. a randomised copy), at the layers of the same names.

        Everything else is kept: the seed and its target (Finer-CAM's contrast, Score-CAM's
        probability) with its parameters, ``target``, ``output``, the fusion and the options.
        """
        new = copy.copy(self)
        new.model, new.last = model, None
        new.layers = None if self.layers is None else resolve_layers(model, [r.name for r in self.layers])
        return new

    # context manager: hooks only live inside each call, so this just drops what was kept
    def __enter__(self) -> "CAM":
        return self

    def __exit__(self, *exc) -> None:
        self.last = None

    def _target(self, targets):
        spec = self.target if targets is None else targets
        kind = self.seed.target if self.seed is not None else None
        if kind == "finer" and not callable(spec):
            return FinerContrast(classes=spec, **self.target_params)
        if kind == "probability" and not callable(spec):
            return ClassProbability(classes=spec)
        return as_target(spec) if spec is not None else ClassLogit(None)

    def explain(self, x: Tensor, targets=None) -> Explanation:
        if self.layers is None:
            self.layers = resolve_layers(self.model, last_spatial_layer(self.model, x[:1]))
        ev = capture(self.model, x, self.layers, self._target(targets), needs=self.needs, output=self.output,
                     options=self.options)
        raw = {}
        for name, layer in ev.layers.items():
            raw[name] = self.program(layer.layout())[0]
        maps, valid = _postprocess(ev, raw, self.fusion)
        if not bool(valid.all()):
            warnings.warn(f"{int((~valid).sum())} of {len(valid)} maps of {self.text} are not finite "
                          "(reported invalid, returned as zeros)", stacklevel=2)
        self.last = Explanation(maps.to(x.device), valid.to(x.device), raw, ev)
        return self.last

    def __call__(self, x: Tensor, targets=None) -> Tensor:
        return self.explain(x, targets).maps


def make_cam(method: str | Expr, model: nn.Module, layers=None, *, preprocess=None, **kwargs):
    """A :class:`CAM` for a seed or expression, or a meta-method (``sycam seeds`` lists them, e.g.
    ``gpnncam``) bound to ``model``. ``preprocess`` (mean/std) is what meta-methods that re-render the
    image need; keyword arguments left None are not passed on."""
    meta = get_meta(method) if isinstance(method, str) else None
    if meta is None:
        return CAM(method, model, layers, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return meta.build(model, layers, preprocess=preprocess, **kwargs)


def explain(method: str, model: nn.Module, x: Tensor, layers=None, targets=None, **kwargs) -> Tensor:
    """One-shot: the (b, H, W) maps of ``method`` for images ``x``."""
    with CAM(method, model, layers, **kwargs) as cam, torch.no_grad():
        return cam(x, targets)


def explain_many(cams: dict[str, CAM], x: Tensor, targets=None) -> dict[str, Explanation]:
    """Several methods on the same images, paying for the model once per distinct target.

    Methods that explain the same target (every gradient seed but Finer-CAM, say) share one
    evidence capture: one forward and one backward for all of them.
    """
    out: dict[str, Explanation] = {}
    groups: dict[tuple, list[str]] = {}
    for name, cam in cams.items():
        if getattr(cam, "meta", False):      # a meta-method (make_cam) runs its own passes
            out[name] = cam.explain(x, targets)
            continue
        key = (id(cam.model), tuple(r.name for r in cam.layers or ()), cam.seed.target if cam.seed else None,
               id(cam.target), id(cam.output), cam.options)
        groups.setdefault(key, []).append(name)
    for names in groups.values():
        first = cams[names[0]]
        if first.layers is None:
            first.layers = resolve_layers(first.model, last_spatial_layer(first.model, x[:1]))
        needs = set().union(*(cams[n].needs for n in names))
        ev = capture(first.model, x, first.layers, first._target(targets), needs=needs, output=first.output,
                     options=first.options)
        for n in names:
            cam = cams[n]
            raw = {layer: cam.program(lev.layout())[0] for layer, lev in ev.layers.items()}
            maps, valid = _postprocess(ev, raw, cam.fusion)
            out[n] = Explanation(maps.to(x.device), valid.to(x.device), raw, ev)
    return out
