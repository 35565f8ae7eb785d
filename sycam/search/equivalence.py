"""The equivalence oracle: when are two terms, or two candidates, the same?

Three tests, cheapest to most semantic:

* **sympy** (:func:`sympy_apply`): the algebraic canonical form of a term, built from its
  children's forms with one sympy operation (the same mapping as
  :func:`sycam.grammar.symbolic.to_sympy`), so commutativity, associativity, constant
  folding and the sound rewrites of the language's functions make equal forms. For
  candidates :func:`candidate_form` also drops what the final normalisation removes (a
  positive factor; for heatmaps an added constant too).
* **observational, sub-terms** (:func:`observe`): two sub-terms are interchangeable in any
  context if their values on the probe images are equal. The key is an exact hash of the
  float32 values, so only identical values merge (e.g. ``relu(A)`` and ``A`` for A >= 0);
  equal values computed with different rounding are left to the sympy oracle (or kept: a
  duplicate costs time, never a wrong merge). Non-finite and constant terms are dropped.
* **observational, candidates** (:class:`MapIndex`): two candidates are one if their
  min-max-normalised heatmaps on the probe images agree within ``atol`` everywhere (a
  positive scale or an added constant of a map is invisible after normalisation). Lookup is
  by a grid over per-image half-map means (1-Lipschitz in the max-norm, so a match within
  ``atol`` is never missed: neighbouring cells are probed when a feature lies near a cell
  border), then an exact max-norm check against the stored maps.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import sympy
import torch
from torch import Tensor

from ..grammar import symbolic as sy
from ..grammar.ast import Call, Num, Var


# ---------------------------------------------------------------------------------- sympy
def sympy_leaf(expr: Var | Num) -> sympy.Expr:
    return sy.to_sympy(expr)


def sympy_apply(node: Call, args: Sequence[sympy.Expr]) -> sympy.Expr:
    """The sympy form of ``node`` from its children's forms (one sympy operation); the
    enumerator never builds ``where`` (its comparison is not a value it can store)."""
    if node.op == "where":
        raise ValueError("where is not enumerated")
    return sy.sympy_apply(node, list(args))


def candidate_form(form: sympy.Expr, result: str) -> sympy.Expr:
    """What the candidate's final map depends on: a positive numeric factor is dropped (weights
    and weight maps: relu(sum(c w A)) = c relu(sum(w A))); for heatmaps the added constant too."""
    if result == "heatmap":
        return sy.scale_free(form)
    c, rest = form.as_coeff_Mul()
    return rest if c.is_positive and c != 1 and rest != 1 else form


# ---------------------------------------------------------------------------------- values
_PROJ: dict[tuple[int, str], Tensor] = {}


def _projection(n: int, device: torch.device) -> Tensor:
    key = (n, str(device))
    p = _PROJ.get(key)
    if p is None:
        g = torch.Generator().manual_seed(1234567 + n)
        p = torch.randint(0, 1 << 20, (2, n), generator=g, dtype=torch.int64).to(device)
        if len(_PROJ) > 64:
            _PROJ.pop(next(iter(_PROJ)))
        _PROJ[key] = p
    return p


INVALID = "invalid"      # a value with NaN or infinity
CONSTANT = "constant"    # one value everywhere: equivalent to a constant


def _hash_bits(v: Tensor):
    """Exact hash of a tensor's float bits (CPU: the bytes; elsewhere two integer projections)."""
    if v.device.type == "cpu":
        return hash(v.contiguous().numpy().tobytes())
    bits = v.contiguous().view(torch.int32 if v.element_size() == 4 else torch.int64).reshape(-1).to(torch.int64)
    p = _projection(bits.numel(), v.device)
    return tuple((p * (bits & 0xFFFFF)).sum(1).tolist()) + tuple((p * (bits >> 20)).sum(1).tolist())


def observe(values: Sequence[Tensor | float]) -> tuple | str:
    """The observational key of a term's per-layer values on the probe images, or
    :data:`INVALID` (NaN/inf somewhere) or :data:`CONSTANT` (one value everywhere).

    The key is an exact hash of the float bits: sub-terms merge only when their probe values
    are identical (algebraic rewrites that change the rounding are the sympy oracle's job).
    """
    key = []
    varies = False
    for v in values:
        if not isinstance(v, Tensor):
            if not math.isfinite(v):
                return INVALID
            key.append(("c", float(v)))
            continue
        v = v.detach()
        lo, hi = torch.stack(torch.aminmax(v)).tolist()
        if not (abs(lo) < math.inf and abs(hi) < math.inf):    # NaN fails too
            return INVALID
        varies = varies or lo != hi
        key.append((tuple(v.shape), _hash_bits(v)))
    if not varies:
        return CONSTANT
    return tuple(key)


def value_key(values: Sequence[Tensor | float]) -> tuple | str:
    """Alias of :func:`observe` (kept for readability at call sites that only want the key)."""
    return observe(values)


# ---------------------------------------------------------------------------------- candidates
class MapIndex:
    """Distinct normalised probe maps; ``find_or_add(maps)`` returns the id of an equal one, or adds.

    maps: (b, P) per probe image, normalised to [0, 1]. Equal means max |difference| <= atol.
    """

    def __init__(self, atol: float = 1e-3, features: int = 6):
        self.atol = float(atol)
        self.cell = 20.0 * self.atol
        self.features = int(features)
        self._buckets: dict[tuple[int, ...], tuple[list[int], Tensor]] = {}   # cell -> (ids, stacked maps)
        self._store: list[Tensor] = []
        self.nbytes = 0
        self.ids: list[object] = []      # caller's payload per stored map

    def __len__(self) -> int:
        return len(self._store)

    def features_of(self, maps: Tensor) -> list[list[float]]:
        """Lookup features of (n, b, P) maps: the means of the first and second half of each probe
        image's map (1-Lipschitz in the max-norm), at most ``features`` of them."""
        n, b, p = maps.shape
        if p >= 2:
            half = p // 2
            feats = torch.stack([maps[..., :half].mean(-1), maps[..., half:].mean(-1)], -1).reshape(n, -1)
        else:
            feats = maps.mean(-1)
        return feats[:, : self.features].tolist()

    def _features(self, maps: Tensor) -> list[float]:
        return self.features_of(maps[None])[0]

    def _cells(self, feats: list[float]) -> list[tuple[int, ...]]:
        options = []
        for f in feats:
            c = math.floor(f / self.cell)
            near = [c]
            if f - c * self.cell <= self.atol:
                near.append(c - 1)
            if (c + 1) * self.cell - f <= self.atol:
                near.append(c + 1)
            options.append(near)
        return [tuple(t) for t in itertools.product(*options)]

    def find(self, maps: Tensor, feats: list[float] | None = None) -> int | None:
        maps = maps.detach().float()
        for cell in self._cells(self._features(maps) if feats is None else feats):
            bucket = self._buckets.get(cell)
            if not bucket:
                continue
            ids, stack = bucket
            if stack.shape[1:] != maps.shape:
                continue
            close = ((stack - maps).abs().flatten(1).amax(1) <= self.atol).nonzero()
            if close.numel():
                return ids[int(close[0, 0])]
        return None

    def add(self, maps: Tensor, payload: object = None, feats: list[float] | None = None) -> int:
        maps = maps.detach().float().clone()
        i = len(self._store)
        self._store.append(maps)
        self.nbytes += 2 * maps.numel() * maps.element_size()      # the map and its copy in a bucket
        self.ids.append(payload)
        feats = self._features(maps) if feats is None else feats
        cell = tuple(math.floor(f / self.cell) for f in feats)
        bucket = self._buckets.get(cell)
        if bucket is None or bucket[1].shape[1:] != maps.shape:
            self._buckets[cell] = ([i], maps[None])
        else:
            bucket[0].append(i)
            self._buckets[cell] = (bucket[0], torch.cat([bucket[1], maps[None]]))
        return i

    def find_or_add(self, maps: Tensor, payload: object = None,
                    feats: list[float] | None = None) -> tuple[int, bool]:
        """(index, True if new)."""
        hit = self.find(maps, feats)
        if hit is not None:
            return hit, False
        return self.add(maps, payload, feats), True
