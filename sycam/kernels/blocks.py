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

import itertools
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from ..errors import SycamError
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.ops import OPS
from .batched import weighted_maps
from .compiler import lowering
from .memo import (
    HEATMAP,
    WEIGHT_MAP,
    WEIGHTS,
    CandidateMaps,
    MiB,
    Value,
    ValueCache,
    candidate_maps,
    expand_value,
    new_token,
)

Values = tuple[Value, ...]      # one value per layer
Terminal = tuple[Tensor, ...]    # one tensor per layer


def fast_layout(t: Tensor) -> Tensor:
    """A (b, s, v, k, h, w) terminal with channels innermost in memory where k >= h*w > 1 (a copy
    with the same values and shape), else ``t`` itself."""
    k, h, w = t.shape[3:]
    if k == 1 or h * w == 1 or k < h * w or t.stride(3) == 1:
        return t
    return t.permute(0, 1, 2, 4, 5, 3).contiguous().permute(0, 1, 2, 5, 3, 4)


class _Plan:
    """The distinct sub-terms of a chunk of candidates as integers 0..n-1, children first: per
    sub-term its arguments, lowering, operand transforms (``Op.prepare``) and cache key (the id the
    memo gives each distinct sub-term it sees; integer keys hash without Python calls)."""

    def __init__(self, roots: Sequence[Expr], ids: dict[Expr, int]):
        self.ids = ids
        self.nodes: list[Expr] = []
        self.keys: list[int] = []
        self.args: list[tuple[int, ...]] = []
        self.apply: list[Callable[[Sequence[Value]], Value] | None] = []
        self.prep: list[tuple[Callable[[Any], Any] | None, ...] | None] = []
        self._local: dict[int, int] = {}
        self.roots: dict[int, list[int]] = {}
        for pos, root in enumerate(roots):
            self.roots.setdefault(self._visit(root), []).append(pos)
        self.calls = [i for i, n in enumerate(self.nodes) if isinstance(n, Call)]
        self.is_call = [isinstance(n, Call) for n in self.nodes]

    def _visit(self, node: Expr) -> int:
        key = self.ids.get(node)
        if key is None:
            key = self.ids[node] = next(_IDS)
        i = self._local.get(key)
        if i is not None:
            return i
        args: tuple[int, ...] = ()
        apply, prep = None, None
        if isinstance(node, Call):
            args = tuple(self._visit(a) for a in node.args)
            apply = lowering(node)
            given = dict(OPS[node.op].prepare)
            prep = tuple(given.get(j) for j in range(len(args))) if given else None
        i = self._local[key] = len(self.nodes)
        self.nodes.append(node)
        self.keys.append(key)
        self.args.append(args)
        self.apply.append(apply)
        self.prep.append(prep)
        return i


_IDS = itertools.count()
#: distinct sub-terms a memo keeps ids for; beyond, it starts afresh (stale ids are never reused)
MAX_IDS = 1 << 20


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
        self._ids: dict[Expr, int] = {}
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
        if len(self._ids) > MAX_IDS:
            self._ids = {}
        plan = _Plan(candidates, self._ids)
        b = len(self.evidence)
        raws = []
        for terms in self._layers:
            big = max(terms.values(), key=lambda t: t.numel())
            raws.append(torch.empty((len(candidates), b, *big.shape[-2:]), dtype=big.dtype, device=big.device))
        reads_a = any(t != HEATMAP for t in axes)
        for bi in range(len(self.blocks)):
            self._block(plan, axes, relu, bi, raws, self._terminal(bi, "A") if reads_a else ())
        return candidate_maps(raws, self.evidence.input_size, fusion)

    def _terminal(self, bi: int, name: str) -> Terminal:
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
            return fast
        return cast(Terminal, hit)

    def _block(self, plan: _Plan, axes: Sequence[frozenset[str]], relu: bool, bi: int, raws: list[Tensor],
               A: Terminal) -> None:
        get, put, tok, L = self.cache.get, self.cache.put, self.token, len(self._layers)
        keys, args_of, prep_of, is_call = plan.keys, plan.args, plan.prep, plan.is_call
        n = len(plan.nodes)
        vals: list[Any] = [None] * n          # Values, or None where not (or no longer) held
        for i, node in enumerate(plan.nodes):
            if isinstance(node, Num):
                vals[i] = (node.value,) * L
            elif isinstance(node, Var):
                vals[i] = self._terminal(bi, node.name)
        prepared: dict[tuple[Any, int], Values] = {}

        # backward sweep: what to compute in this block, and how often each value is read
        need = [False] * n
        for r in plan.roots:
            need[r] = True
        uses = [0] * n
        todo: list[int] = []
        reads: dict[int, list[int]] = {}        # the values each computed sub-term reads from ``vals``
        for i in reversed(plan.calls):
            if not need[i]:
                continue
            hit = get((tok, bi, keys[i]))
            if hit is not None:
                vals[i] = hit
                continue
            todo.append(i)
            read = reads[i] = []
            prep = prep_of[i]
            for pos, j in enumerate(args_of[i]):
                if not is_call[j]:
                    continue
                t = prep[pos] if prep is not None else None
                if t is not None:
                    if (t, j) in prepared:
                        continue
                    hit = get((tok, bi, t, keys[j]))
                    if hit is not None:
                        prepared[t, j] = hit
                        continue
                need[j] = True
                uses[j] += 1
                read.append(j)

        weights: list[tuple[list[int], Values]] = []
        scratch: list[Tensor] = []
        for r, positions in plan.roots.items():   # roots known before the sweep: terminals, cached values
            v = vals[r]
            if v is not None:
                self._map(v, positions, axes, bi, raws, weights, A, scratch)

        # forward sweep: each operator once, on the block
        ops = 0
        for i in reversed(todo):
            prep = prep_of[i]
            a_ids = args_of[i]
            if prep is None:
                args = [vals[j] for j in a_ids]
            else:
                args = []
                for pos, j in enumerate(a_ids):
                    t = prep[pos]
                    if t is None:
                        args.append(vals[j])
                        continue
                    v = prepared.get((t, j))
                    if v is None:
                        if isinstance(plan.nodes[j], Num):
                            v = tuple(t(x) for x in vals[j])
                        else:
                            v = get((tok, bi, t, keys[j]))
                            if v is None:
                                v = tuple(t(x) for x in vals[j])
                                put((tok, bi, t, keys[j]), v)
                        prepared[t, j] = v
                    args.append(v)
            apply = plan.apply[i]
            assert apply is not None
            if L == 1:
                out: Values = (apply([a[0] for a in args]),)
            else:
                out = tuple(apply([a[li] for a in args]) for li in range(L))
            ops += 1
            put((tok, bi, keys[i]), out)
            at = plan.roots.get(i)
            if at is not None:
                self._map(out, at, axes, bi, raws, weights, A, scratch)
            if uses[i]:
                vals[i] = out
            for j in reads[i]:
                uses[j] -= 1
                if not uses[j]:
                    vals[j] = None
        self.ops += ops

        if weights:                             # every channel-weight candidate of the chunk: one product
            self._weighted(weights, bi, relu, raws, A)

    def _map(self, v: Values, positions: list[int], axes: Sequence[frozenset[str]], bi: int, raws: list[Tensor],
             weights: list[tuple[list[int], Values]], A: Terminal, scratch: list[Tensor]) -> None:
        """A candidate's raw map on the block, written in place (a weight map's product W * A into
        ``scratch``, one block-sized buffer per layer)."""
        t = axes[positions[0]]
        if t == WEIGHTS:
            weights.append((positions, v))
            return
        r0, r1 = self.blocks[bi]
        b = r1 - r0
        for li, raw in enumerate(raws):
            h, w = raw.shape[-2:]
            dest = raw[positions[0], r0:r1]
            if t == WEIGHT_MAP:
                if len(scratch) <= li:
                    scratch.append(torch.empty_like(A[li]))
                torch.sum(torch.mul(v[li], A[li], out=scratch[li]), dim=3, out=dest.view(b, 1, 1, h, w))
                dest.relu_()
            else:
                dest.copy_(expand_value(v[li], (b, 1, 1, 1, h, w), raw).reshape(b, h, w))
            for p in positions[1:]:
                raw[p, r0:r1] = dest

    def _weighted(self, weights: list[tuple[list[int], Values]], bi: int, relu: bool, raws: list[Tensor],
                  A: Terminal) -> None:
        r0, r1 = self.blocks[bi]
        b = r1 - r0
        index = torch.tensor([i for positions, _ in weights for i in positions], device=raws[0].device)
        for li, raw in enumerate(raws):
            k, h, w = A[li].shape[3:]
            stack = torch.stack([expand_value(v[li], (b, 1, 1, k, 1, 1), raw).reshape(b, k)
                                 for positions, v in weights for _ in positions])
            raw[index, r0:r1] = weighted_maps(stack, A[li].reshape(b, k, h, w), relu=relu)
