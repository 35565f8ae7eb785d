"""Finding the layer to explain: by module, dotted name, ``name[i]`` or ``name@call``.

``"layer4"``, ``"layer4.1"``, ``"layer4[-1]"`` (the last child, as grad-cam users write it)
and ``"features.28"`` all resolve to a module. A module that runs several times in one
forward pass (a shared activation, say) records every call; ``"name@0"`` picks the first,
the default is the last. An unknown name lists the closest module names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SycamError, UnknownNameError

_SEGMENT = re.compile(r"\[(-?\d+)\]|([^.\[\]]+)")


@dataclass(frozen=True)
class LayerRef:
    name: str               # the name as the user gave it (or the module's dotted name)
    module: nn.Module
    call: int = -1          # which call, when the module runs more than once per forward


def module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, spec: str | nn.Module | LayerRef) -> LayerRef:
    if isinstance(spec, LayerRef):
        return spec
    if isinstance(spec, nn.Module):
        for name, module in model.named_modules():
            if module is spec:
                return LayerRef(name or "<model>", module)
        raise SycamError(f"the given {type(spec).__name__} module is not part of the model")
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
    return LayerRef(spec.strip(), module, call)


def resolve_layers(model: nn.Module, specs) -> list[LayerRef]:
    if specs is None:
        raise SycamError("no layer given: name the layer to explain, e.g. layers='layer4'")
    if isinstance(specs, (str, nn.Module, LayerRef)):
        specs = [specs]
    refs = [resolve_layer(model, s) for s in specs]
    if not refs:
        raise SycamError("no layer given")
    return refs


@dataclass
class LayerInfo:
    name: str
    kind: str
    shape: tuple[int, ...] | None   # output shape of the last call, without the batch axis
    calls: int


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


def list_layers(model: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Every named module with its output shape and call count on one example forward."""
    shapes: dict[str, tuple | None] = {}
    calls: dict[str, int] = {}
    for name, out in traced_outputs(model, example):
        calls[name] = calls.get(name, 0) + 1
        shapes[name] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
    return [LayerInfo(name, type(m).__name__, shapes.get(name), calls.get(name, 0))
            for name, m in model.named_modules() if name]


def last_spatial_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The last module (in call order) whose output is a (b, k, h, w) map with h, w > 1."""
    spatial = [name for name, out in traced_outputs(model, example)
               if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] > 1 and out.shape[3] > 1]
    if not spatial:
        raise SycamError("the model has no layer with a spatial (b, k, h, w) output to explain")
    return spatial[-1]
