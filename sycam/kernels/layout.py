"""One tensor layout for every value: (b, s, v, k, h, w), size 1 where an axis is absent.

With every value in this layout, element-wise operators broadcast by plain torch
broadcasting and a reduction over named axes is a ``keepdim`` reduction over fixed
dimensions; no transposes are ever needed.
"""
from __future__ import annotations

from torch import Tensor

from ..grammar.ops import AXES, BATCH

ORDER = BATCH + AXES
DIMS: dict[str, int] = {a: i for i, a in enumerate(ORDER)}


def dims(axes: str) -> tuple[int, ...]:
    return tuple(DIMS[a] for a in axes)


def to_layout(t: Tensor, axes: str) -> Tensor:
    """View a tensor whose dimensions are ``axes`` (in storage order) in the 6-D layout."""
    ordered = "".join(a for a in ORDER if a in axes)
    if ordered != axes:
        raise ValueError(f"axes {axes!r} are not in storage order {ORDER!r}")
    if t.dim() != len(axes):
        raise ValueError(f"tensor has {t.dim()} dimensions but axes {axes!r} name {len(axes)}")
    it = iter(t.shape)
    return t.reshape([next(it) if a in axes else 1 for a in ORDER])


def from_layout(t: Tensor, axes: str) -> Tensor:
    """The inverse of :func:`to_layout`: keep only the named axes."""
    return t.reshape([t.shape[DIMS[a]] for a in ORDER if a in axes])
