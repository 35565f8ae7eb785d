"""A seed or expression bound to a model: :class:`CAM`, and :func:`explain_many`, which runs
several explainers on the same images paying for the model once per distinct target.

Inputs: a tensor is the model's input as given, a batch (b, c, h, w) or one image (c, h, w).
A numpy array ((H, W, C) or (C, H, W), or a batch of those) or a PIL image is a picture: uint8
is divided by 255, float is taken as is; a CAM that knows the model's preprocessing (made from a
:class:`~sycam.models.ModelBundle`, or given ``preprocess=``) normalises it with the model's mean
and std (no resize or crop: the maps are at the picture's size). Without that, a float array is
used as the model input and a uint8 one is refused.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.images import pil_to_tensor
from ..data.labels import resolve_label
from ..errors import SycamError
from ..evidence.capture import Evidence, capture
from ..evidence.layers import default_layer, resolve_layers
from ..evidence.options import EvidenceOptions
from ..evidence.targets import ClassLogit, ClassProbability, ClassReST, FinerContrast, Target, as_target
from ..evidence.terminals import TERMINALS, needed_terms
from ..evidence.tokens import parse_reshape
from ..grammar.ast import Expr, terminals
from ..grammar.checker import as_heatmap, result_kind
from ..grammar.checker import eigen_smooth as smoothed
from ..grammar.printer import to_text
from ..kernels.compiler import Program
from ..kernels.postprocess import FUSIONS, fuse
from .explainer import Explainer, Explanation
from .seeds import resolve_method


def _postprocess(ev: Evidence, raw: dict[str, Tensor], fusion: str) -> tuple[Tensor, Tensor]:
    """Fused maps at the input size. A model that resizes its input internally (a detector) gives
    ``ev.frame`` to bring layer maps into the input's frame first; a row whose target score is
    not finite (e.g. no detection matched) has nothing to explain and is reported invalid."""
    layer_maps = list(raw.values()) if ev.frame is None else [ev.frame(m) for m in raw.values()]
    maps, valid = fuse(layer_maps, ev.input_size, fusion)
    return maps, valid & torch.isfinite(ev.scores).to(valid.device)


def unbundle(model) -> tuple[nn.Module, Any]:
    """(module, bundle or None): a :class:`~sycam.models.ModelBundle` (``load_model``) or a module."""
    if isinstance(model, nn.Module):
        return model, None
    if all(hasattr(model, a) for a in ("model", "preprocess", "default_layer", "classes")):
        return model.model, model
    raise SycamError(f"model must be a torch nn.Module or what sycam.load_model returns, not {type(model).__name__}")


def class_index(name: str, classes: Sequence[str] | None) -> int:
    """The index of a class name (case-insensitive) or an index string, as the command line's
    ``--target`` resolves it (:func:`sycam.data.labels.resolve_label`): SycamError with the closest
    names if unknown, listing the candidates if several classes share the name, or if the class
    names are not known."""
    if classes is None:
        raise SycamError(f"class name {name!r} given as a target, but this CAM does not know the model's class "
                         "names: make it from sycam.load_model(...) (sycam.CAM(method, bundle)), pass "
                         "classes=[...], or give class indices")
    return resolve_label(name, list(classes))


def resolve_targets(targets, classes: Sequence[str] | None):
    """``targets`` with class names (a name, or names in a list) replaced by their indices."""
    if isinstance(targets, str):
        return class_index(targets, classes)
    if isinstance(targets, np.ndarray) and targets.dtype.kind in "iu":
        return torch.as_tensor(targets, dtype=torch.long)
    if isinstance(targets, np.integer):
        return int(targets)
    if isinstance(targets, (list, tuple)) and any(isinstance(t, (str, np.integer)) for t in targets):
        return [class_index(t, classes) if isinstance(t, str) else int(t) if isinstance(t, np.integer) else t
                for t in targets]
    return targets


def as_batch(x, preprocess=None, model: nn.Module | None = None) -> Tensor:
    """Images as a model-input batch (b, c, h, w) (see the module docstring for what is accepted)."""
    if isinstance(x, Tensor):
        if x.dim() == 3:
            return x[None]
        if x.dim() != 4:
            raise SycamError(f"images are a batch (b, c, h, w) or one image (c, h, w), not of shape {tuple(x.shape)}")
        return x
    if hasattr(x, "mode") and hasattr(x, "size") and not isinstance(x, np.ndarray):   # a PIL image
        t, integer = pil_to_tensor(x)[None], False
        if preprocess is None:
            raise SycamError("a PIL image needs the model's normalisation: make the CAM from sycam.load_model(...) "
                             "or pass preprocess=, or give a normalised tensor")
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise SycamError(f"an image array must hold numbers, not {x.dtype}")
        if x.ndim not in (3, 4):
            raise SycamError(f"an image array is (H, W, C) or (C, H, W), or a batch (b, H, W, C) / (b, C, H, W); "
                             f"got shape {x.shape}")
        integer = x.dtype.kind in "biu"
        if integer and preprocess is None:
            raise SycamError(f"a {x.dtype} image array holds pixel values, not model inputs: make the CAM from "
                             "sycam.load_model(...) (which normalises pictures) or pass preprocess=, or give a "
                             "normalised float array or tensor")
        t = torch.from_numpy(np.array(x, dtype=np.float32))       # a copy: read-only arrays are fine
        if x.dtype == np.uint8:
            t = t / 255
        elif x.dtype == np.uint16:
            t = t / 65535
        if t.dim() == 3:
            t = t[None]
        if t.shape[-1] in (1, 3, 4) and t.shape[1] not in (1, 3, 4):
            t = t.permute(0, 3, 1, 2)         # (b, H, W, C) -> (b, C, H, W)
    else:
        raise SycamError(f"images are a tensor (b, c, h, w), a numpy array or a PIL image, not {type(x).__name__}")
    if preprocess is not None:
        if t.shape[1] not in (1, 3, 4):
            raise SycamError(f"a picture has 1, 3 or 4 channels (grey, RGB, RGBA), not {t.shape[1]} "
                             f"(shape {tuple(t.shape)})")
        t = t[:, :3] if t.shape[1] >= 3 else t.expand(-1, 3, -1, -1)
        if hasattr(preprocess, "normalise"):
            t = preprocess.normalise(t.contiguous())
        else:                                  # an object with mean / std only
            mean = torch.tensor(preprocess.mean, dtype=t.dtype).view(1, -1, 1, 1)
            t = (t - mean) / torch.tensor(preprocess.std, dtype=t.dtype).view(1, -1, 1, 1)
    if model is not None:
        p = next(model.parameters(), None)
        if p is not None:
            t = t.to(p.device)
    return t.contiguous()


class CAM(Explainer):
    """A CAM method (seed name or expression) bound to a model and one or more layers.

    ``method``: a seed name (``sycam seeds``) or an expression. ``model``: an ``nn.Module``, or
    a :class:`~sycam.models.ModelBundle` from :func:`sycam.load_model`, which also gives the
    default layer, the class names and the preprocessing. ``layers``: module(s) or name(s)
    (default: the bundle's default layer, else :func:`~sycam.evidence.layers.default_layer`: a
    transformer's last block's first norm, else the last spatial layer). ``target``: what is
    explained when a call gives no ``targets`` (default: each image's top-1 class).
    ``classes``: class names, so that targets can name classes (``cam(x, targets=["tabby"])``).
    ``preprocess``: the model's normalisation (an object with ``normalise``, e.g.
    ``bundle.preprocess``), used on numpy / PIL pictures. ``eigen_smooth``: the map's sum over
    channels becomes its first principal component (pytorch-grad-cam's switch,
    :func:`~sycam.grammar.checker.eigen_smooth`: relu(sum(w * A, k)) -> relu(pc1(w * A)); the same
    passes, plus one eigendecomposition per image and layer). ``reshape``: how a token layer's output
    becomes a (b, k, h, w) map (:mod:`sycam.evidence.tokens`): None (automatic for torchvision's and
    timm's ViT / DeiT / Swin), "vit", "vit:HxW", "swin", "none" or a callable. ``output``, ``fuse``,
    ``options``, ``compile``: see the README. ``cam.last`` is the last :class:`Explanation`; it stays after a
    ``with`` block (hooks only exist inside each call).
    """

    def __init__(self, method: str | Expr, model, layers=None, *, target=None, output=None,
                 fuse: str | None = None, compile: bool = False, options=None,
                 classes: Sequence[str] | None = None, preprocess=None, eigen_smooth: bool = False,
                 reshape=None, **target_params):
        if "aug_smooth" in target_params:
            raise SycamError("aug_smooth wraps any explainer: sycam.AugSmooth(sycam.CAM(...)), or "
                             "sycam.make_cam(method, model, layers, aug_smooth=True)")
        model, bundle = unbundle(model)
        if bundle is not None:
            layers = bundle.default_layer if layers is None else layers
            classes = bundle.classes if classes is None else classes
            preprocess = bundle.preprocess if preprocess is None else preprocess
        self.classes = None if classes is None else list(classes)
        self.preprocess = preprocess
        if isinstance(method, str):
            tree, self.seed = resolve_method(method)
        else:
            tree, self.seed = method, None
        self.kind = result_kind(tree, TERMINALS)   # type errors surface here, before any work
        self.expression: Expr = as_heatmap(tree, TERMINALS)
        if eigen_smooth:
            self.expression = tree = smoothed(self.expression)
        self.tree = tree                                     # the method as given (eigen-smoothed)
        self.eigen_smooth = bool(eigen_smooth)
        self.model = model
        parse_reshape(reshape)                               # a bad reshape fails here, before any work
        self.reshape = reshape
        self.layers = None if layers is None else resolve_layers(model, layers, reshape)
        self.target = target
        self.output = output
        self.fusion = fuse or (self.seed.fuse if self.seed else "mean")
        if self.fusion not in FUSIONS:
            raise SycamError(f"unknown fusion {self.fusion!r}; choose from {', '.join(FUSIONS)}")
        self.target_params = {**(self.seed.params if self.seed else {}), **target_params}
        self.options = EvidenceOptions.make(options)   # perturbation / noise / scale settings
        self.needs = needed_terms(terminals(self.expression))
        self.program = Program([self.expression], TERMINALS)
        if compile:
            self.program.compile()
        self.last: Explanation | None = None

    @property
    def text(self) -> str:
        return to_text(self.tree)

    def __repr__(self) -> str:
        name = self.seed.title if self.seed else self.text
        smooth = ", eigen_smooth=True" if self.eigen_smooth else ""
        return f"CAM({name!r}, layers={[r.name for r in self.layers] if self.layers else None}{smooth})"

    def with_model(self, model: nn.Module) -> "CAM":
        """This method on another ``model`` (e.g. a randomised copy), at the layers of the same names.

        Everything else is kept: the seed and its target (Finer-CAM's contrast, Score-CAM's
        probability) with its parameters, ``target``, ``output``, the fusion and the options.
        """
        new = copy.copy(self)
        new.model, new.last = model, None
        new.layers = None if self.layers is None else resolve_layers(model, [r.name for r in self.layers],
                                                                     self.reshape)
        return new

    def target_for(self, targets) -> Target:
        """What this CAM explains for ``targets`` (as :meth:`explain` takes them; None: ``self.target``):
        the seed's own target (Finer-CAM's contrast, Score-CAM's probability, ShapleyCAM's ReST) of
        those classes, else their logit."""
        spec = resolve_targets(self.target if targets is None else targets, self.classes)
        kind = self.seed.target if self.seed is not None else None
        if kind == "finer" and not callable(spec):
            return FinerContrast(classes=spec, **self.target_params)
        if kind == "probability" and not callable(spec):
            return ClassProbability(classes=spec)
        if kind == "rest" and not callable(spec):
            return ClassReST(classes=spec)
        return as_target(spec) if spec is not None else ClassLogit(None)

    def explain(self, x: Tensor, targets=None) -> Explanation:
        """The maps of images ``x`` (tensor, numpy array or PIL image; see the module docstring) with
        everything behind them: an :class:`Explanation`, also kept as ``self.last``.
        ``targets``: class indices or names (one, or one per image), or a callable logits -> (b,)."""
        x = as_batch(x, self.preprocess, self.model)
        if self.layers is None:
            self.layers = resolve_layers(self.model, default_layer(self.model, x[:1], self.reshape), self.reshape)
        ev = capture(self.model, x, self.layers, self.target_for(targets), needs=self.needs, output=self.output,
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


def explain_many(cams: Mapping[str, Explainer], x: Tensor, targets=None) -> dict[str, Explanation]:
    """Several methods on the same images, paying for the model once per distinct target.

    CAMs that explain the same target (every gradient seed but Finer-CAM, say) share one
    evidence capture: one forward and one backward for all of them; any other explainer (a
    meta-method) runs its own passes.
    """
    out: dict[str, Explanation] = {}
    groups: dict[tuple, dict[str, CAM]] = {}
    some = next(iter(cams.values()), None)
    x = as_batch(x, getattr(some, "preprocess", None), getattr(some, "model", None))
    for name, cam in cams.items():
        if not isinstance(cam, CAM):
            out[name] = cam.explain(x, targets)
            continue
        key = (id(cam.model), tuple((r.name, r.reshape) for r in cam.layers or ()), id(cam.reshape),
               cam.seed.target if cam.seed else None, id(cam.target), id(cam.output), cam.options)
        groups.setdefault(key, {})[name] = cam
    for group in groups.values():
        first = next(iter(group.values()))
        if first.layers is None:
            first.layers = resolve_layers(first.model, default_layer(first.model, x[:1], first.reshape), first.reshape)
        needs = set().union(*(c.needs for c in group.values()))
        ev = capture(first.model, x, first.layers, first.target_for(targets), needs=needs, output=first.output,
                     options=first.options)
        for n, cam in group.items():
            raw = {layer: cam.program(lev.layout())[0] for layer, lev in ev.layers.items()}
            maps, valid = _postprocess(ev, raw, cam.fusion)
            out[n] = Explanation(maps.to(x.device), valid.to(x.device), raw, ev)
    return out
