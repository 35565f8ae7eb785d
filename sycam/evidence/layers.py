"""Finding the layer to explain: by module, dotted name, ``name[i]`` or ``name@call``.

``"layer4"``, ``"layer4.1"``, ``"layer4[-1]"`` (the last child, as grad-cam users write it)
and ``"features.28"`` all resolve to a module. A module that runs several times in one
forward pass (a shared activation, say) records every call; ``"name@0"`` picks the first,
the default is the last. An unknown name lists the closest module names.

A layer whose output is tokens (a vision transformer's) carries the reshape that turns it into a
(b, k, h, w) map (:mod:`sycam.evidence.tokens`), chosen when it is resolved.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SycamError, UnknownNameError
from ..models import token_family
from .tokens import ReshapeError, as_map, parse_reshape, reshape_for

_SEGMENT = re.compile(r"\[(-?\d+)\]|([^.\[\]]+)")


@dataclass(frozen=True)
class LayerRef:
    name: str               # the name as the user gave it (or the module's dotted name)
    module: nn.Module
    call: int = -1          # which call, when the module runs more than once per forward
    reshape: Callable[[Tensor], Tensor] | None = None   # tokens -> (b, k, h, w) (sycam.evidence.tokens)

    def map(self, out: Any) -> Tensor:
        """This layer's output (or its gradient) as a (b, k, h, w) map (:func:`~sycam.evidence.tokens.as_map`)."""
        return as_map(out, self.reshape, self.name)


def module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def dotted_name(model: nn.Module, module: nn.Module) -> str | None:
    """The name of ``module`` in ``model`` ("" for the model itself), None if it is not in it."""
    return next((name for name, m in model.named_modules() if m is module), None)


def resolve_layer(model: nn.Module, spec: str | nn.Module | LayerRef, reshape: Any = None) -> LayerRef:
    """The layer ``spec`` names, with its reshape under ``reshape`` (:func:`~sycam.evidence.tokens.reshape_for`;
    None: automatic). A :class:`LayerRef` is kept as it is."""
    if isinstance(spec, LayerRef):
        return spec
    if isinstance(spec, nn.Module):
        name = dotted_name(model, spec)
        if name is None:
            raise SycamError(f"the given {type(spec).__name__} module is not part of the model")
        return LayerRef(name or "<model>", spec, reshape=reshape_for(model, name, spec, reshape))
    if not isinstance(spec, str) or not spec.strip():
        raise SycamError(f"a layer is a module or its dotted name, not {spec!r}")
    text, call = spec.strip(), -1
    if "@" in text:
        text, _, index = text.rpartition("@")
        try:
            call = int(index)
        except ValueError:
            raise SycamError(f"layer {spec!r}: after '@' comes a call number, e.g. {text}@0 or {text}@-1") from None
    module: nn.Module = model
    pos = 0
    for part in text.split("."):
        for m in _SEGMENT.finditer(part):
            index, name = m.group(1), m.group(2)
            children = list(module.named_children())
            if index is not None:
                i = int(index)
                if not -len(children) <= i < len(children):
                    raise SycamError(f"layer {spec!r}: index [{i}] out of range, "
                                     f"{text[:pos] or 'the model'} has {len(children)} children")
                module = children[i][1]
            elif name in module._modules and module._modules[name] is not None:
                module = module._modules[name]
            else:
                raise UnknownNameError("layer", text, module_names(model),
                                       hint="`sycam layers --model MODEL` lists them with their output shapes")
        pos += len(part) + 1
    return LayerRef(spec.strip(), module, call, reshape_for(model, dotted_name(model, module) or "", module, reshape))


def resolve_layers(model: nn.Module, specs, reshape: Any = None) -> list[LayerRef]:
    """The layers of ``specs`` (one or a list), each with its reshape (see :func:`resolve_layer`)."""
    if specs is None:
        raise SycamError("no layer given: name the layer to explain, e.g. layers='layer4'")
    if isinstance(specs, (str, nn.Module, LayerRef)):
        specs = [specs]
    refs = [resolve_layer(model, s, reshape) for s in specs]
    if not refs:
        raise SycamError("no layer given")
    return refs


@dataclass
class LayerInfo:
    name: str
    kind: str
    shape: tuple[int, ...] | None   # output of the last call without the batch axis: its (k, h, w) map if reshaped
    calls: int
    tokens: tuple[int, ...] | None = None   # the output as the layer gives it, when it is reshaped into the map


def traced_outputs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, object]]:
    """(module name, output) of every named module, in the order calls finish, on one
    no-grad forward of ``example``."""
    order: list[tuple[str, object]] = []
    handles = [module.register_forward_hook(lambda _m, _i, out, name=name: order.append((name, out)))
               for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


def _maps(model: nn.Module, example: torch.Tensor, reshape: Any) -> list[tuple[str, object, Tensor | None]]:
    """(name, output, its map or None) of every named module's calls in call order; the map is the
    output reshaped (``reshape`` as for :func:`resolve_layer`) where that gives (b, k, h, w)."""
    modules = dict(model.named_modules())
    rows = []
    for name, out in traced_outputs(model, example):
        try:
            a = as_map(out, reshape_for(model, name, modules[name], reshape), name)
        except ReshapeError:
            a = None
        rows.append((name, out, a))
    return rows


def list_layers(model: nn.Module, example: torch.Tensor, reshape: Any = None) -> list[LayerInfo]:
    """Every named module with its output shape (that of its map, for a reshaped token layer) and
    call count on one example forward."""
    shapes: dict[str, tuple | None] = {}
    tokens: dict[str, tuple | None] = {}
    calls: dict[str, int] = {}
    for name, out, a in _maps(model, example, reshape):
        calls[name] = calls.get(name, 0) + 1
        raw = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        shapes[name] = tuple(a.shape[1:]) if a is not None else raw
        tokens[name] = raw if a is not None and a is not out else None
    return [LayerInfo(name, type(m).__name__, shapes.get(name), calls.get(name, 0), tokens.get(name))
            for name, m in model.named_modules() if name]


def default_layer(model: nn.Module, example: torch.Tensor, reshape: Any = None) -> str:
    """The layer a CAM explains when none is named: for a recognised transformer (unless ``reshape`` is
    "none") its family's default (:meth:`~sycam.models.TokenFamily.default_layer`), else the last
    module (in call order) whose output, reshaped, is a (b, k, h, w) map with h, w > 1."""
    family = token_family(model)
    if parse_reshape(reshape) is not None and family is not None:
        name = family.default_layer(model)
        if name:
            return name
    spatial = [name for name, _, a in _maps(model, example, reshape)
               if a is not None and a.shape[2] > 1 and a.shape[3] > 1]
    if not spatial:
        raise SycamError("the model has no layer with a spatial (b, k, h, w) output to explain")
    return spatial[-1]
