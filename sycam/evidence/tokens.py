"""Token layers as (b, k, h, w) evidence: a *reshape* turns a layer's output into the map that
every terminal reads.

* :class:`TokenGrid` ("vit"): ViT / DeiT tokens (b, p + h*w, c) -> (b, c, h, w); the first p tokens
  (class, distillation, register tokens) are dropped and token p + i*w + j is grid cell (i, j).
  Either the grid is given ("vit:14x14"; p is what is left over) or p is the model's prefix token
  count and h = w = sqrt(n - p).
* :class:`ChannelLast` ("swin"): Swin's channel-last (b, h, w, c) -> (b, c, h, w).
* any callable output -> (b, k, h, w), as pytorch-grad-cam's ``reshape_transform``. It must only
  select and rearrange entries (it is applied to the gradient too); one with an
  ``inverse(map, output)`` method also serves Ablation-CAM, H2 and H3.

Because a reshape only selects and rearranges entries, the reshaped gradient dS/d(output) is the
gradient dS/dA of the map: the hooks (:mod:`sycam.evidence.forward`) record the layer's output,
and :func:`as_map` (through :meth:`~sycam.evidence.layers.LayerRef.map`) reshapes it and its
gradient. The terminals that change the map and run the rest of the model put it back into the
layer's output with :func:`map_suffix`.

Which layers are reshaped (:func:`reshape_for`): by default (``reshape=None`` or "auto") the token
layers of a recognised transformer (:data:`sycam.models.TOKEN_FAMILIES`: torchvision's and timm's
ViT, DeiT and Swin, by class name) with that family's reshape; a name or a callable applies to
every layer explained; "none" to none.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import EvidenceError, SycamError
from ..models import TokenFamily, token_family

#: the names ``reshape=`` (and ``--reshape``) takes; "vit:HxW" gives the grid, e.g. "vit:14x14"
RESHAPE_NAMES = ("auto", "vit", "vit:HxW", "swin", "none")
AUTO = "auto"
_GRID = re.compile(r"vit:(\d+)x(\d+)")


class ReshapeError(EvidenceError):
    """A layer's output that its reshape does not fit."""


@dataclass(frozen=True)
class TokenGrid:
    """ViT tokens (b, p + h*w, c) -> (b, c, h, w), the first p tokens dropped.

    ``grid``: (h, w), p being the tokens left over; else h = w = sqrt(n - ``prefix``), ``prefix``
    None meaning the model's (:meth:`~sycam.models.TokenFamily.prefix_tokens`: 1, a class token,
    unless the model says otherwise).
    """

    grid: tuple[int, int] | None = None
    prefix: int | None = None

    def _grid(self, n: int) -> tuple[int, int]:
        if self.grid is not None:
            h, w = self.grid
            if h * w > n:
                raise ReshapeError(f"the grid {h}x{w} needs {h * w} tokens, the layer gives {n}")
            return h, w
        p = 1 if self.prefix is None else self.prefix
        side = math.isqrt(max(n - p, 0))
        if n <= p or side * side != n - p:
            raise ReshapeError(
                f"it gives {n} tokens; after {p} class/prefix token{'s' if p != 1 else ''}, {n - p} is not a "
                f"square grid: give the grid, e.g. reshape='vit:{_grid_example(n - p)}' (command line: --reshape "
                "vit:HxW), which keeps the last h*w tokens")
        return side, side

    def __call__(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3:
            raise ReshapeError(f"it gives shape {tuple(tokens.shape)}, not ViT tokens (b, n, c) (a layer that gives "
                               "(b, k, h, w) maps needs reshape='none')")
        b, n, c = tokens.shape
        h, w = self._grid(n)
        return tokens[:, n - h * w:].transpose(1, 2).reshape(b, c, h, w)

    def inverse(self, a: Tensor, tokens: Tensor) -> Tensor:
        """``tokens`` with the grid replaced by the map ``a`` (the prefix tokens kept)."""
        h, w = a.shape[-2:]
        return torch.cat([tokens[:, :tokens.shape[1] - h * w], a.flatten(2).transpose(1, 2)], dim=1)


@dataclass(frozen=True)
class ChannelLast:
    """Swin's channel-last (b, h, w, c) -> (b, c, h, w)."""

    def __call__(self, t: Tensor) -> Tensor:
        if t.dim() != 4:
            raise ReshapeError(f"it gives shape {tuple(t.shape)}, not a channel-last map (b, h, w, c)")
        return t.permute(0, 3, 1, 2)

    def inverse(self, a: Tensor, _tokens: Tensor) -> Tensor:
        """The channel-last layout of the map ``a``."""
        return a.permute(0, 2, 3, 1)


def _grid_example(n: int) -> str:
    """A grid "hxw" with h*w = n, as square as can be (a generic one when n has no such grid)."""
    h = next((d for d in range(math.isqrt(n), 1, -1) if n % d == 0), None) if n > 3 else None
    return f"{h}x{n // h}" if h else "HxW"


def parse_reshape(spec: Any) -> Any:
    """``spec`` checked: AUTO (None or "auto"), None ("none"), or a reshape (a :class:`TokenGrid`,
    :class:`ChannelLast` or callable); SycamError for anything else."""
    if spec is None or spec == AUTO:
        return AUTO
    if isinstance(spec, str):
        text = spec.strip().lower()
        grid = _GRID.fullmatch(text)
        if text == "none":
            return None
        if text == "vit":
            return TokenGrid()
        if text == "swin":
            return ChannelLast()
        if grid and int(grid[1]) > 0 and int(grid[2]) > 0:
            return TokenGrid((int(grid[1]), int(grid[2])))
        raise SycamError(f"unknown reshape {spec!r}; choose from {', '.join(RESHAPE_NAMES)} "
                         "(e.g. vit:14x14), or give a callable (b, ...) -> (b, k, h, w)")
    if callable(spec):
        return spec
    raise SycamError(f"reshape must be a name ({', '.join(RESHAPE_NAMES)}) or a callable, not "
                     f"{type(spec).__name__}")


def reshape_for(model: nn.Module, name: str, module: nn.Module, spec: Any) -> Callable[[Tensor], Tensor] | None:
    """The reshape of layer ``name`` (``module``) of ``model`` under ``spec`` (see :func:`parse_reshape`):
    with AUTO, the family's reshape for its token layers and None elsewhere."""
    reshape = parse_reshape(spec)
    family = token_family(model)
    if reshape is AUTO:
        if family is None or not family.holds(name, module):
            return None
        reshape = parse_reshape(family.reshape)
    if isinstance(reshape, TokenGrid) and reshape.grid is None and reshape.prefix is None:
        reshape = dataclasses.replace(reshape, prefix=TokenFamily.prefix_tokens(model))
    return reshape


def as_map(out: Any, reshape: Callable[[Tensor], Tensor] | None, layer: str) -> Tensor:
    """The (b, k, h, w) map of layer ``layer``'s output ``out`` (reshaped if ``reshape``);
    :class:`ReshapeError` naming the layer if it is not one."""
    if not isinstance(out, Tensor):
        raise ReshapeError(f"layer {layer} returns {type(out).__name__}, not a tensor; choose a module whose "
                           "output is a (b, k, h, w) tensor (or tokens)")
    shape = tuple(out.shape)
    if reshape is not None:
        try:
            out = reshape(out)
        except ReshapeError as err:
            raise ReshapeError(f"layer {layer}: {err}") from None
        except Exception as err:   # a user's callable that does not fit the layer
            raise ReshapeError(f"layer {layer}: the reshape failed on its output of shape {shape} "
                               f"({type(err).__name__}: {err})") from None
        if not isinstance(out, Tensor) or out.dim() != 4:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ReshapeError(f"layer {layer}: the reshape turned its output {shape} into {got}, not (b, k, h, w)")
        out = out.contiguous()
    elif out.dim() != 4:
        hint = ("; tokens (b, n, c)? give reshape='vit' (or 'vit:HxW'; command line: --reshape vit)"
                if out.dim() == 3 else "")
        raise ReshapeError(f"layer {layer} gives shape {shape}; a CAM layer must give (b, k, h, w){hint}")
    return out


def map_suffix(suffix: Any, reshape: Callable[[Tensor], Tensor] | None, layer: str) -> Callable[..., Any]:
    """The model after layer ``layer`` as a function of the layer's map: ``run(a, index)`` puts the
    map ``a`` back into the layer's output (:meth:`inverse` of the reshape, the dropped tokens taken
    from ``suffix.activations``) and runs ``suffix`` on it. ``suffix`` itself for a layer without reshape."""
    if reshape is None:
        return suffix
    inverse = getattr(reshape, "inverse", None)
    if inverse is None:
        raise ReshapeError(f"layer {layer}: this method changes the layer's map and runs the model after it, which "
                           "needs the reshape's inverse; give reshape='vit' / 'swin' or an object with "
                           "inverse(map, output)")
    tokens = suffix.activations

    def run(a: Tensor, index: Tensor | None = None) -> Any:
        rows = tokens if index is None else tokens.index_select(0, torch.as_tensor(index, device=tokens.device))
        return suffix(inverse(a, rows.to(a.device)), index)

    return run
