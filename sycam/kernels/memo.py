"""Values of many expressions on one set of evidence, and the raw maps they give.

* :class:`ValueCache` / :class:`Memo` - values of sub-terms keyed by AST node, so a candidate
  whose children were seen before costs one operator on stored tensors; least recently used
  values are evicted beyond a byte budget (and recomputed from their children if needed).
  The search scores many candidates at once with :class:`sycam.kernels.blocks.BlockMemo` (the same
  operators, scheduled for a chunk of candidates, block of images by block); ``Memo`` serves
  one expression at a time (the enumerator's probe values, tests).
* :func:`maps_from_values` - raw maps of n candidates: channel weights {b, k} are stacked into
  one ``weighted_maps`` product  L[n, b] = relu(sum_k w[n, b, k] A[b, k]);  per-position
  weights W (b, k, h, w) give relu(sum_k W A); heatmaps {b, h, w} are used as they are. A map
  with a NaN or infinity is *invalid* (``CandidateMaps.valid``).

The evidence is anything with ``layers`` ({layer: {terminal: 6-D tensor}}), ``input_size`` and
``require(names)`` (:class:`sycam.evidence.sets.EvidenceSet`).
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import SycamError
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.ops import OPS
from .batched import weighted_maps
from .compiler import apply_op, interpret
from .lowres import LowResMaps
from .postprocess import fuse, minmax, validity

Value = Tensor | float
MiB = 1 << 20
WEIGHTS = frozenset("bk")
WEIGHT_MAP = frozenset("bkhw")
HEATMAP = frozenset("bhw")


def nbytes(values: Sequence[Value]) -> int:
    total = 0
    for v in values:
        if isinstance(v, Tensor):
            total += v.numel() * v.element_size()
    return total


_TOKENS = itertools.count(1)


def new_token() -> int:
    """A key prefix no other memo uses: memos of different evidence share one cache safely."""
    return next(_TOKENS)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    peak_bytes: int = 0
    entries: int = 0


class ValueCache:
    """An LRU map key -> per-layer values under a byte budget (shared by several :class:`Memo`)."""

    def __init__(self, budget_bytes: int = 256 * MiB):
        if budget_bytes < 0:
            raise SycamError(f"memo budget must be >= 0 bytes, not {budget_bytes}")
        self.budget = int(budget_bytes)
        self._data: OrderedDict[Any, tuple[tuple[Value, ...], int]] = OrderedDict()
        self.stats = CacheStats()

    def get(self, key) -> tuple[Value, ...] | None:
        hit = self._data.get(key)
        if hit is None:
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return hit[0]

    def put(self, key, values: Sequence[Value]) -> None:
        size = nbytes(values)
        if size > self.budget:
            return                       # larger than the whole budget: never stored
        stats, data = self.stats, self._data
        old = data.pop(key, None)
        if old is not None:
            stats.bytes -= old[1]
        data[key] = (tuple(values), size)
        total = stats.bytes + size
        while total > self.budget:
            _, (_, s) = data.popitem(last=False)
            total -= s
            stats.evictions += 1
        stats.bytes = total
        if total > stats.peak_bytes:
            stats.peak_bytes = total
        stats.entries = len(data)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def drop(self, predicate: Callable[[Any], bool]) -> None:
        for key in [k for k in self._data if predicate(k)]:
            _, s = self._data.pop(key)
            self.stats.bytes -= s
        self.stats.entries = len(self._data)


class Memo:
    """Values of expressions on one :class:`EvidenceSet`, one tensor per layer: the compiler's
    interpreter (``sycam.kernels.compiler.interpret``) with a :class:`ValueCache` around it.

    ``memo(expr)`` computes only the nodes whose values are not cached: for a candidate whose
    children are cached that is one operator. Terminals are read from the evidence (never
    evicted); constants are floats. Prepared operands (a divisor with its zeros made infinite)
    are cached too: many candidates divide by the same term, and preparing it costs more
    passes than the division.
    """

    def __init__(self, evidence: Any, cache: ValueCache | int = 256 * MiB):
        self.evidence = evidence
        self.cache = cache if isinstance(cache, ValueCache) else ValueCache(cache)
        self.token = new_token()
        self._layers = list(evidence.layers.values())
        self.ops = 0   # operators applied (work done)

    def __call__(self, expr: Expr) -> tuple[Value, ...]:
        return interpret(expr, self._leaf, apply=self._apply, known=self._known, keep=self._keep,
                         operand=self._operand)

    def _leaf(self, expr: Var | Num) -> tuple[Value, ...]:
        if isinstance(expr, Num):
            return (expr.value,) * len(self._layers)
        try:
            return tuple(terms[expr.name] for terms in self._layers)
        except KeyError:
            self.evidence.require([expr.name])
            raise

    def _known(self, expr: Call) -> tuple[Value, ...] | None:
        return self.cache.get((self.token, expr))

    def _keep(self, expr: Call, values: tuple[Value, ...]) -> None:
        self.cache.put((self.token, expr), values)

    def _apply(self, expr: Call, args: list[tuple[Value, ...]]) -> tuple[Value, ...]:
        """The operator on every layer; its operands arrive prepared (``_operand``)."""
        self.ops += 1
        return tuple(apply_op(expr, [a[layer] for a in args], prepared=True) for layer in range(len(self._layers)))

    def _operand(self, node: Call, i: int, value) -> tuple[Value, ...]:
        """The i-th argument of ``node``, prepared as its record says and memoised as such: a
        prepared divisor is found without the divisor's own value (which may be evicted)."""
        transform = next((t for j, t in OPS[node.op].prepare if j == i), None)
        if transform is None:
            return value(node.args[i])
        key = (self.token, transform, node.args[i])
        hit = self.cache.get(key)
        if hit is None:
            hit = tuple(transform(v) for v in value(node.args[i]))
            # counted in full even when it is the term's own tensor: this entry keeps that tensor
            # alive after the term's entry is evicted, so the budget stays a true bound
            self.cache.put(key, hit)
        return hit

    def forget(self) -> None:
        """Drop this memo's values from the (shared) cache."""
        token = self.token
        self.cache.drop(lambda k: k[0] == token)



def expand_value(value: Value, shape: Sequence[int], like: Tensor) -> Tensor:
    """A layout value (or a float) expanded to ``shape`` (a view)."""
    if not isinstance(value, Tensor):
        value = torch.full((1,) * len(shape), float(value), dtype=like.dtype, device=like.device)
    return value.expand(*shape)


def stacked_maps(stack: Tensor, axes: frozenset[str], A: Tensor, relu: bool = True) -> Tensor:
    """Raw (n, b, h, w) maps of n candidates of one type from their stacked layout values
    (n, b, s, v, k, h, w) and the layer's activations A (b, 1, 1, k, h, w).

    Channel weights {b, k} go through one ``weighted_maps`` product; per-position weights
    {b, k, h, w} through relu(sum_k W A); heatmaps {b, h, w} are taken as they are.
    """
    b, _, _, k, h, w = A.shape
    n = stack.shape[0]
    if axes == WEIGHTS:
        weights = stack.expand(n, b, 1, 1, k, 1, 1).reshape(n, b, k)
        return weighted_maps(weights, A.reshape(b, k, h, w), relu=relu)
    if axes == WEIGHT_MAP:
        W = stack.expand(n, b, 1, 1, k, h, w).reshape(n, b, k, h, w)
        return torch.relu((W * A.reshape(1, b, k, h, w)).sum(2))
    if axes == HEATMAP:
        return stack.expand(n, b, 1, 1, 1, h, w).reshape(n, b, h, w)
    raise SycamError(f"candidates with axes {sorted(axes)} give no map (expected weights, weight maps or heatmaps)")


def layer_maps(values: Sequence[Value], axes: Sequence[frozenset[str]], A: Tensor, relu: bool = True) -> Tensor:
    """Raw (n, b, h, w) maps of n candidates on one layer from their layout values and A.

    Channel weights are stacked into one ``weighted_maps`` product; per-position weights and
    heatmaps are mapped one candidate at a time (stacking them would copy n full tensors).
    """
    b, _, _, k, h, w = A.shape
    full = {WEIGHTS: (b, 1, 1, k, 1, 1), WEIGHT_MAP: (b, 1, 1, k, h, w), HEATMAP: (b, 1, 1, 1, h, w)}
    out = torch.empty((len(values), b, h, w), dtype=A.dtype, device=A.device)
    weights = []
    A3 = A.reshape(b, k, h, w)
    for i, t in enumerate(axes):
        if t not in full:
            raise SycamError(f"candidate {i} has axes {sorted(t)}: it gives no map "
                             "(expected weights, weight maps or heatmaps)")
        if t == WEIGHTS:
            weights.append(i)
            continue
        v = expand_value(values[i], full[t], A)
        if t == WEIGHT_MAP:
            out[i] = torch.relu((v.reshape(b, k, h, w) * A3).sum(1))
        else:
            out[i] = v.reshape(b, h, w)
    if weights:
        stack = torch.stack([expand_value(values[i], full[WEIGHTS], A) for i in weights])
        out[weights] = stacked_maps(stack, WEIGHTS, A, relu)
    return out


@dataclass
class CandidateMaps:
    """Raw maps of n candidates on b images, per layer, with validity.

    raw[l]: (n, b, h_l, w_l), zeros where invalid; valid: (n, b) False where a map had NaN/inf.
    """

    raw: list[Tensor]
    valid: Tensor
    size: tuple[int, int]
    fusion: str = "mean"

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def part(self, start: int, stop: int) -> "CandidateMaps":
        """The maps of candidates start..stop-1 (views)."""
        if start == 0 and stop >= len(self):
            return self
        return CandidateMaps([r[start:stop] for r in self.raw], self.valid[start:stop], self.size, self.fusion)

    def lowres(self) -> LowResMaps:
        """Feature-resolution maps standing for min-max(upsample(raw)) (one layer only)."""
        if len(self.raw) != 1:
            raise SycamError("LowResMaps needs a single layer; use full() for several layers")
        return LowResMaps(self.raw[0], self.size, "minmax")

    def full(self) -> Tensor:
        """(n, b, H, W) maps in [0, 1] at the input size, layers fused (``fuse``)."""
        maps, _ = fuse(list(self.raw), self.size, self.fusion)
        return maps

    def normalised(self) -> Tensor:
        """(n, b, P) min-max normalised maps at feature resolution, layers concatenated: what the
        observational equivalence of candidates compares (a positive scale or an added constant
        of a map does not change it)."""
        return torch.cat([minmax(r.flatten(2)[..., None, :])[..., 0, :] for r in self.raw], dim=-1)


def maps_from_values(values: Sequence[Sequence[Value]], axes: Sequence[frozenset[str]], evidence: Any,
                     relu: bool = True, fusion: str = "mean") -> CandidateMaps:
    """CandidateMaps from per-candidate, per-layer values (as a :class:`Memo` returns them)."""
    raws = [layer_maps([v[li] for v in values], axes, terms["A"] if "A" in terms else _shape_only(terms), relu)
            for li, terms in enumerate(evidence.layers.values())]
    return candidate_maps(raws, evidence.input_size, fusion)


def candidate_maps(raws: Sequence[Tensor], size: tuple[int, int], fusion: str = "mean") -> CandidateMaps:
    """CandidateMaps from raw (n, b, h_l, w_l) maps per layer: a candidate's map of an image is
    valid where it is valid on every layer (``validity``); invalid maps become zeros."""
    out: list[Tensor] = []
    valid: Tensor | None = None
    for raw in raws:
        ok = validity(raw)
        out.append(torch.where(ok[..., None, None], raw, torch.zeros((), dtype=raw.dtype, device=raw.device)))
        valid = ok if valid is None else valid & ok
    assert valid is not None, "evidence without layers"
    return CandidateMaps(out, valid, size, fusion)


def _shape_only(terms: Mapping[str, Tensor]) -> Tensor:
    """A stand-in for A (heatmap spaces may not read it): the largest terminal's shape."""
    big = max(terms.values(), key=lambda t: t.numel())
    return torch.zeros_like(big)

