"""Raw maps of many candidates at once, computed one block of images at a time.

:class:`BlockMemo` evaluates a chunk of candidates on an evidence set (the per-expression
:class:`~sycam.kernels.memo.Memo` evaluates one tree at a time through the compiler's interpreter;
this is the same arithmetic scheduled for many trees):

1. the chunk's distinct sub-terms are listed once, children first (shared sub-expressions once);
2. the images are split into blocks of ``block_rows`` (one terminal's block about the size of a
   core's cache); for each block, a backward sweep finds the sub-terms to compute (those a candidate
   needs whose value the :class:`~sycam.kernels.memo.ValueCache` does not hold; the sub-tree of a
   cached value is not visited) and a forward sweep applies each operator once through its
   record's lowering (:func:`~sycam.kernels.compiler.lowering`, i.e. ``apply_op``), frees a value
   after its last use (unless the cache keeps it) and forms a candidate's map as soon as its value
   exists, while the block is in cache:

   * weight maps W {b, k, h, w}:  L = relu(sum_k W A), right after W;
   * channel weights w {b, k} of all the chunk's candidates in one batched product
     L[n, b] = relu(sum_k w[n, b, k] A[b, k]) (``weighted_maps``; relu as the space says);
   * heatmaps {b, h, w} as they are.

No Python runs per candidate and image: per block, a few dictionary operations per sub-term.
Terminals are laid out in memory with the longer of k and h*w innermost (:func:`fast_layout`: same
values, same 6-D shape; element-wise results follow their operands' layout), so that reductions
over h, w of a late layer (49 positions, 1280 channels) run along contiguous channels.
"""
from __future__ import annotations

import os as _os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import SycamError
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.ops import OPS
from .batched import weighted_maps
from .compiler import lowering
from .memo import (HEATMAP, WEIGHT_MAP, WEIGHTS, CandidateMaps, MiB, Value, ValueCache, candidate_maps, expand_value,
                   new_token)

Values = tuple[Value, ...]      # one value per layer


def fast_layout(t: Tensor) -> Tensor:
    """A (b, s, v, k, h, w) terminal with channels innermost in memory where k >= h*w > 1 (a copy
    with the same values and shape), else ``t`` itself."""
    k, h, w = t.shape[3:]
    if _os.environ.get("SYCAM_NOCL"):
        return t
    if k == 1 or h * w == 1 or k < h * w or t.stride(3) == 1:
        return t
    return t.permute(0, 1, 2, 4, 5, 3).contiguous().permute(0, 1, 2, 5, 3, 4)


class _Plan:
    """The distinct sub-terms of a chunk of candidates, children first: each with its arguments (one
    object per distinct sub-term, so that lookups compare by identity), its lowering and its
    operand transforms (``Op.prepare``)."""

    def __init__(self, roots: Sequence[Expr]):
        self.order: list[Call] = []
        self.steps: dict[Call, tuple[tuple[Expr, ...], Callable[[Sequence[Value]], Value],
                                     dict[int, Callable[[Any], Any]]]] = {}
        self.roots: dict[Expr, list[int]] = {}
        self._one: dict[Expr, Expr] = {}
        for i, root in enumerate(roots):
            self.roots.setdefault(self._visit(root), []).append(i)

    def _visit(self, node: Expr) -> Expr:
        one = self._one.get(node)
        if one is not None:
            return one
        self._one[node] = node
        if isinstance(node, Call):
            args = tuple(self._visit(a) for a in node.args)
            self.steps[node] = (args, lowering(node), dict(OPS[node.op].prepare))
            self.order.append(node)
        return node


class BlockMemo:
    """Values of many candidates on one evidence set, block of images by block, memoised in a
    :class:`ValueCache` (keys carry the block, so a cached value is one block's); ``maps`` gives
    their raw maps. ``ops`` counts operator applications (one per sub-term and block computed)."""

    def __init__(self, evidence: Any, cache: ValueCache | int = 256 * MiB, block_rows: int | None = None):
        self.evidence = evidence
        self.cache = cache if isinstance(cache, ValueCache) else ValueCache(cache)
        self.token = new_token()
        n = len(evidence)
        self.block_rows = n if block_rows is None else max(1, int(block_rows))
        self.blocks = [(s, min(s + self.block_rows, n)) for s in range(0, n, self.block_rows)]
        self._layers = list(evidence.layers.values())
        self.ops = 0

    def forget(self) -> None:
        """Drop this memo's values from the (shared) cache."""
        token = self.token
        self.cache.drop(lambda k: k[0] == token)

    def maps(self, candidates: Sequence[Expr], axes: Sequence[frozenset[str]], relu: bool = True,
             fusion: str = "mean") -> CandidateMaps:
        """CandidateMaps of the candidates (their axes: weights, weight maps or heatmaps)."""
        for i, t in enumerate(axes):
            if t not in (WEIGHTS, WEIGHT_MAP, HEATMAP):
                raise SycamError(f"candidate {i} has axes {sorted(t)}: it gives no map "
                                 "(expected weights, weight maps or heatmaps)")
        plan = _Plan(candidates)
        b = len(self.evidence)
        raws = []
        for terms in self._layers:
            big = max(terms.values(), key=lambda t: t.numel())
            raws.append(torch.empty((len(candidates), b, *big.shape[-2:]), dtype=big.dtype, device=big.device))
        for bi in range(len(self.blocks)):
            self._block(plan, axes, relu, bi, raws)
        return candidate_maps(raws, self.evidence.input_size, fusion)

    def _terminal(self, bi: int, name: str) -> Values:
        r0, r1 = self.blocks[bi]
        try:
            views = tuple(terms[name][r0:r1] for terms in self._layers)
        except KeyError:
            self.evidence.require([name])
            raise
        fast = tuple(fast_layout(v) for v in views)
        if all(f is v for f, v in zip(fast, views)):
            return views
        key = (self.token, bi, name)           # the copies are cached (budgeted) like any value
        hit = self.cache.get(key)
        if hit is None:
            self.cache.put(key, fast)
            hit = fast
        return hit

    def _block(self, plan: _Plan, axes: Sequence[frozenset[str]], relu: bool, bi: int, raws: list[Tensor]) -> None:
        cache, tok, L = self.cache, self.token, len(self._layers)
        vals: dict[Expr, Values] = {}
        terms: dict[str, Values] = {}
        prepared: dict[tuple[Any, Expr], Values] = {}

        # backward sweep: what to compute in this block, and how often each value is read
        need = {r for r in plan.roots if isinstance(r, Call)}
        uses: dict[Expr, int] = {}
        todo: list[Call] = []
        for node in reversed(plan.order):
            if node not in need:
                continue
            hit = cache.get((tok, bi, node))
            if hit is not None:
                vals[node] = hit
                continue
            todo.append(node)
            node_args, _, prep = plan.steps[node]
            for i, a in enumerate(node_args):
                if not isinstance(a, Call):
                    continue
                t = prep.get(i) if prep else None
                if t is not None:
                    if (t, a) in prepared:
                        continue
                    hit = cache.get((tok, bi, t, a))
                    if hit is not None:
                        prepared[t, a] = hit
                        continue
                need.add(a)
                uses[a] = uses.get(a, 0) + 1

        def value(a: Expr) -> Values:
            if isinstance(a, Call):
                return vals[a]
            if isinstance(a, Num):
                return (a.value,) * L
            assert isinstance(a, Var)
            v = terms.get(a.name)
            if v is None:
                v = terms[a.name] = self._terminal(bi, a.name)
            return v

        weights: list[tuple[list[int], Values]] = []

        def mapped(node: Expr, v: Values) -> None:
            self._map(node, v, plan.roots[node], axes, bi, raws, weights, value)

        for root in plan.roots:                 # roots known before the sweep: terminals, cached values
            if not isinstance(root, Call) or root in vals:
                mapped(root, value(root))

        # forward sweep: each operator once, on the block
        for node in reversed(todo):
            node_args, apply, prep = plan.steps[node]
            args = []
            for i, a in enumerate(node_args):
                t = prep.get(i) if prep else None
                if t is None:
                    args.append(value(a))
                    continue
                v = prepared.get((t, a))
                if v is None and not isinstance(a, Num):
                    v = cache.get((tok, bi, t, a))
                if v is None:
                    v = tuple(t(x) for x in value(a))
                    if not isinstance(a, Num):
                        cache.put((tok, bi, t, a), v)
                prepared[t, a] = v
                args.append(v)
            out = tuple(apply([arg[li] for arg in args]) for li in range(L))
            self.ops += 1
            cache.put((tok, bi, node), out)
            if node in plan.roots:
                mapped(node, out)
            if uses.get(node):
                vals[node] = out
            for a in node_args:
                n = uses.get(a)
                if n is not None:
                    if n == 1:
                        del uses[a]
                        vals.pop(a, None)
                    else:
                        uses[a] = n - 1

        if weights:                             # every channel-weight candidate of the chunk: one product
            self._weighted(weights, bi, relu, raws, value)

    def _map(self, node: Expr, v: Values, positions: list[int], axes: Sequence[frozenset[str]], bi: int,
             raws: list[Tensor], weights: list, value: Callable[[Expr], Values]) -> None:
        t = axes[positions[0]]
        if t == WEIGHTS:
            weights.append((positions, v))
            return
        r0, r1 = self.blocks[bi]
        A = value(Var("A")) if t == WEIGHT_MAP else None
        for li, raw in enumerate(raws):
            h, w = raw.shape[-2:]
            x = v[li]
            if A is not None:
                m = torch.relu((x * A[li]).sum(3))
            else:
                m = expand_value(x, (r1 - r0, 1, 1, 1, h, w), raw)
            raw[positions, r0:r1] = m.reshape(r1 - r0, h, w)

    def _weighted(self, weights: list[tuple[list[int], Values]], bi: int, relu: bool, raws: list[Tensor],
                  value: Callable[[Expr], Values]) -> None:
        r0, r1 = self.blocks[bi]
        b = r1 - r0
        A = value(Var("A"))
        index = torch.tensor([i for positions, _ in weights for i in positions], device=raws[0].device)
        for li, raw in enumerate(raws):
            k, h, w = A[li].shape[3:]
            stack = torch.stack([expand_value(v[li], (b, 1, 1, k, 1, 1), raw).reshape(b, k)
                                 for positions, v in weights for _ in positions])
            raw[index, r0:r1] = weighted_maps(stack, A[li].reshape(b, k, h, w), relu=relu)

