"""Candidate evaluation from cached evidence: pay for the model once, then one op per new term.

* :class:`EvidenceSet` - the terminals of every layer for a set of images (captured once, in
  chunks), in the compiler's 6-D layout (b, s, v, k, h, w), with the images' ground truth.
* :class:`ValueCache` / :class:`Memo` - values of sub-terms keyed by AST node, so a candidate
  whose children were seen before costs one operator on stored tensors; least recently used
  values are evicted beyond a byte budget (and recomputed from their children if needed).
* :class:`Evaluator` - candidates -> maps -> metric scores, batched over candidates and
  images. Channel-weight candidates (axes {b, k}) are stacked into one
  ``weighted_maps`` product  L[n, b] = relu(sum_k w[n, b, k] A[b, k]);  per-position weights
  W (b, k, h, w) give relu(sum_k W A); heatmap candidates are used as they are. A map with a
  NaN or infinity is *invalid*: its score is -inf, it never crashes the batch. Scores are
  returned "higher is better" (``internal = direction.sign * metric``) next to the metric's
  own values. ``rows=`` scores a subset of the images (the multi-fidelity hook; see
  :meth:`Evaluator.score_staged`).

Forward-free metrics that accept :class:`~sycam.metrics.maps.LowResMaps` (pointing game,
energy pointing game, target Pearson) are scored at feature resolution, exactly.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..batching import model_rows
from ..data.batch import Batch
from ..errors import EvidenceError, SycamError
from ..evidence.capture import capture
from ..evidence.terminals import needed_terms
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.checker import infer
from ..grammar.ops import OPS
from ..kernels.batched import weighted_maps
from ..kernels.compiler import apply_op, interpret
from ..kernels.layout import to_layout
from ..kernels.postprocess import fuse, minmax, validity
from ..metrics.base import GROUND_TRUTH, Metric, MetricError, missing_ground_truth
from ..metrics.maps import LowResMaps
from ..metrics.registry import get_metric
from .space import WEIGHT_MAP, OpSpec, SearchSpace

Value = Tensor | float
MiB = 1 << 20
CPU_BLOCK_BYTES = 1 * MiB     # about one core's L2 cache


# ---------------------------------------------------------------------------------- evidence
@dataclass
class EvidenceSet:
    """Per layer, per terminal, a tensor in the 6-D layout whose first axis is the image.

    ``batch`` carries the images' ground truth for the metric (rows aligned with the evidence);
    ``input_size`` is the size maps are brought to.
    """

    layers: dict[str, dict[str, Tensor]]
    input_size: tuple[int, int]
    batch: Batch | None = None

    def __post_init__(self):
        if not self.layers:
            raise EvidenceError("an evidence set needs at least one layer")
        sizes = {t.shape[0] for terms in self.layers.values() for t in terms.values()}
        if len(sizes) != 1:
            raise EvidenceError(f"evidence tensors disagree on the number of images: {sorted(sizes)}")
        if self.batch is not None and len(self.batch) != sizes.pop():
            raise EvidenceError(f"the batch has {len(self.batch)} rows, the evidence {len(self)} images")

    @classmethod
    def capture(cls, model: torch.nn.Module, batch: Batch, layers, *, needs: Iterable[str] = ("A", "G"),
                target=None, chunk: int | None = None, output=None, options=None) -> "EvidenceSet":
        """Capture once: one forward + one backward per chunk of ``chunk`` images (default
        :func:`~sycam.batching.model_rows`; plus the passes that channel-score terminals need,
        set by ``options``).

        ``target`` None explains each row's label (``batch.labels``): what the metrics' ground
        truth is about.
        """
        needs = needed_terms(needs) | {"A"}
        chunk = model_rows(batch.x.device, chunk)
        parts: dict[str, dict[str, list[Tensor]]] = {}
        for i in range(0, len(batch), chunk):
            sub = batch[i:i + chunk]
            tgt = sub.labels if target is None else _slice_target(target, i, i + chunk)
            ev = capture(model, sub.x, layers, tgt, needs=needs, output=output, options=options)
            for name, lev in ev.layers.items():
                terms = parts.setdefault(name, {})
                for term, t in lev.layout().items():
                    if term in needs or term == "S":
                        terms.setdefault(term, []).append(t)
        return cls({name: {k: torch.cat(v) for k, v in terms.items()} for name, terms in parts.items()},
                   batch.size, batch)

    @classmethod
    def from_evidence(cls, evidence, batch: Batch | None = None) -> "EvidenceSet":
        """From a :class:`sycam.evidence.capture.Evidence` (one capture)."""
        return cls({name: lev.layout() for name, lev in evidence.layers.items()}, evidence.input_size, batch)

    @classmethod
    def from_tensors(cls, terms: Mapping[str, Mapping[str, tuple[Tensor, str]]], input_size: tuple[int, int],
                     batch: Batch | None = None) -> "EvidenceSet":
        """From plain tensors: ``{layer: {terminal: (tensor, axes)}}`` with axes in storage order."""
        return cls({layer: {k: to_layout(t, axes) for k, (t, axes) in ts.items()} for layer, ts in terms.items()},
                   tuple(input_size), batch)

    def __len__(self) -> int:
        return int(next(iter(next(iter(self.layers.values())).values())).shape[0])

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def device(self) -> torch.device:
        return next(iter(next(iter(self.layers.values())).values())).device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self.layers.values() for t in ts.values())

    def rows_per_block(self, block_bytes: int) -> int:
        """How many images fit in ``block_bytes`` per terminal tensor (at least 1)."""
        per_image = max(t[:1].numel() * t.element_size() for ts in self.layers.values() for t in ts.values())
        return max(1, block_bytes // per_image)

    def terminal_names(self) -> set[str]:
        return set.intersection(*(set(ts) for ts in self.layers.values()))

    def rows(self, rows: Sequence[int]) -> "EvidenceSet":
        """The evidence (and batch) of a subset of the images."""
        rows = [int(r) for r in rows]
        if rows and rows == list(range(rows[0], rows[0] + len(rows))):     # a block of rows: views, no copy
            layers = {name: {k: t[rows[0]:rows[0] + len(rows)] for k, t in ts.items()}
                      for name, ts in self.layers.items()}
        else:
            idx = torch.tensor(rows, dtype=torch.long, device=self.device)
            layers = {name: {k: t.index_select(0, idx) for k, t in ts.items()}
                      for name, ts in self.layers.items()}
        return EvidenceSet(layers, self.input_size, None if self.batch is None else self.batch[rows])

    def require(self, names: Iterable[str]) -> None:
        missing = sorted(set(names) - self.terminal_names())
        if missing:
            has = ", ".join(sorted(self.terminal_names()))
            raise EvidenceError(f"the evidence lacks {', '.join(missing)} (has {has}); "
                                "capture it with needs=space.evidence_terms")


def _slice_target(target, start: int, stop: int):
    if isinstance(target, Tensor) and target.dim() == 1:
        return target[start:stop]
    if isinstance(target, (list, tuple)):
        return list(target[start:stop])
    return target


# ---------------------------------------------------------------------------------- memo
def nbytes(values: Sequence[Value]) -> int:
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, Tensor))


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
        old = self._data.pop(key, None)
        if old is not None:
            self.stats.bytes -= old[1]
        self._data[key] = (tuple(values), size)
        self.stats.bytes += size
        while self.stats.bytes > self.budget:
            _, (_, s) = self._data.popitem(last=False)
            self.stats.bytes -= s
            self.stats.evictions += 1
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.stats.bytes)
        self.stats.entries = len(self._data)

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

    _tokens = 0

    def __init__(self, evidence: EvidenceSet, cache: ValueCache | int = 256 * MiB):
        self.evidence = evidence
        self.cache = cache if isinstance(cache, ValueCache) else ValueCache(cache)
        Memo._tokens += 1
        self.token = Memo._tokens
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


# ---------------------------------------------------------------------------------- maps
def candidate_axes(expr: Expr, space: SearchSpace) -> frozenset[str]:
    return infer(expr, space.terminal_axes | {"A": "bkhw"})[expr]


def _full(value: Value, shape: Sequence[int], like: Tensor) -> Tensor:
    """A layout value (or a float) expanded to ``shape`` (a view)."""
    if not isinstance(value, Tensor):
        value = torch.full((1,) * len(shape), float(value), dtype=like.dtype, device=like.device)
    return value.expand(*shape)


def stacked_maps(stack: Tensor, axes: frozenset[str], A: Tensor, space: SearchSpace) -> Tensor:
    """Raw (n, b, h, w) maps of n candidates of one type from their stacked layout values
    (n, b, s, v, k, h, w) and the layer's activations A (b, 1, 1, k, h, w).

    Channel weights {b, k} go through one ``weighted_maps`` product; per-position weights
    {b, k, h, w} through relu(sum_k W A); heatmaps {b, h, w} are taken as they are.
    """
    b, _, _, k, h, w = A.shape
    n = stack.shape[0]
    if axes == frozenset("bk"):
        weights = stack.expand(n, b, 1, 1, k, 1, 1).reshape(n, b, k)
        return weighted_maps(weights, A.reshape(b, k, h, w), relu=space.result != "heatmap")
    if axes == WEIGHT_MAP:
        W = stack.expand(n, b, 1, 1, k, h, w).reshape(n, b, k, h, w)
        return torch.relu((W * A.reshape(1, b, k, h, w)).sum(2))
    if axes == frozenset("bhw"):
        return stack.expand(n, b, 1, 1, 1, h, w).reshape(n, b, h, w)
    raise SycamError(f"candidates with axes {sorted(axes)} are not {space.result} candidates")


def layer_maps(values: Sequence[Value], axes: Sequence[frozenset[str]], A: Tensor, space: SearchSpace) -> Tensor:
    """Raw (n, b, h, w) maps of n candidates on one layer from their layout values and A.

    Channel weights are stacked into one ``weighted_maps`` product; per-position weights and
    heatmaps are mapped one candidate at a time (stacking them would copy n full tensors).
    """
    b, _, _, k, h, w = A.shape
    full = {frozenset("bk"): (b, 1, 1, k, 1, 1), WEIGHT_MAP: (b, 1, 1, k, h, w), frozenset("bhw"): (b, 1, 1, 1, h, w)}
    out = torch.empty((len(values), b, h, w), dtype=A.dtype, device=A.device)
    weights = []
    A3 = A.reshape(b, k, h, w)
    for i, t in enumerate(axes):
        if t not in full:
            raise SycamError(f"candidate {i} has axes {sorted(t)}, not a {space.result} candidate")
        if t == frozenset("bk"):
            weights.append(i)
            continue
        v = _full(values[i], full[t], A)
        if t == WEIGHT_MAP:
            out[i] = torch.relu((v.reshape(b, k, h, w) * A3).sum(1))
        else:
            out[i] = v.reshape(b, h, w)
    if weights:
        stack = torch.stack([_full(values[i], full[frozenset("bk")], A) for i in weights])
        out[weights] = stacked_maps(stack, frozenset("bk"), A, space)
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


def maps_from_values(values: Sequence[Sequence[Value]], axes: Sequence[frozenset[str]], evidence: EvidenceSet,
                     space: SearchSpace, fusion: str = "mean") -> CandidateMaps:
    """CandidateMaps from per-candidate, per-layer values (as a :class:`Memo` returns them)."""
    raws, valid = [], None
    for li, terms in enumerate(evidence.layers.values()):
        raw = layer_maps([v[li] for v in values], axes, terms["A"] if "A" in terms else _shape_only(terms), space)
        ok = validity(raw)
        raws.append(torch.where(ok[..., None, None], raw, torch.zeros((), dtype=raw.dtype, device=raw.device)))
        valid = ok if valid is None else valid & ok
    return CandidateMaps(raws, valid, evidence.input_size, fusion)


def _shape_only(terms: Mapping[str, Tensor]) -> Tensor:
    """A stand-in for A (heatmap spaces may not read it): the largest terminal's shape."""
    big = max(terms.values(), key=lambda t: t.numel())
    return torch.zeros_like(big)


# ---------------------------------------------------------------------------------- scores
@dataclass
class Scores:
    """Scores of n candidates on b images.

    value: (n, b) the metric's own numbers (NaN: undefined on that image, or invalid map);
    internal: (n, b) ``direction.sign * value``, -inf where the map is invalid (to be maximised);
    valid: (n, b) maps were finite; rows: the image indices scored.
    """

    value: Tensor
    internal: Tensor
    valid: Tensor
    rows: list[int]
    higher_is_better: bool = True

    def __len__(self) -> int:
        return int(self.value.shape[0])

    @property
    def mean(self) -> Tensor:
        """(n,) mean internal score over the images where the metric is defined; -inf if any map is
        invalid, -inf if the metric is undefined on every image."""
        x = self.internal
        defined = ~torch.isnan(x)
        total = torch.where(defined, x, torch.zeros_like(x)).sum(-1)
        count = defined.sum(-1)
        out = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, -math.inf))
        return torch.where(self.valid.all(-1), out, torch.full_like(out, -math.inf))

    @property
    def metric_mean(self) -> Tensor:
        """(n,) the mean in the metric's own units (sign undone)."""
        return self.mean * (1.0 if self.higher_is_better else -1.0)

    def select(self, index: Sequence[int]) -> "Scores":
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.value.device)
        return Scores(self.value[idx], self.internal[idx], self.valid[idx], self.rows, self.higher_is_better)

    @staticmethod
    def cat(parts: Sequence["Scores"]) -> "Scores":
        p0 = parts[0]
        return Scores(torch.cat([p.value for p in parts]), torch.cat([p.internal for p in parts]),
                      torch.cat([p.valid for p in parts]), p0.rows, p0.higher_is_better)


def resolve_metric(metric: str | Metric, **params: Any) -> Metric:
    """A metric instance from a name (``UnknownNameError`` with close matches) or an instance."""
    if isinstance(metric, Metric):
        if params:
            raise SycamError("metric parameters are given with a metric name, not with a metric instance")
        return metric
    if not isinstance(metric, str):
        raise SycamError(f"a metric is a name or a sycam.metrics.Metric, not {type(metric).__name__}")
    return get_metric(metric, **params)


def check_metric_inputs(metric: Metric, batch: Batch | None, resources: Mapping[str, Any]) -> None:
    """Fail before any work if the metric lacks ground truth or callables it needs."""
    missing = missing_ground_truth(metric.needs, batch)
    missing += [f"{need}=" for need in sorted(metric.needs - GROUND_TRUTH) if resources.get(need) is None]
    if missing:
        raise MetricError(f"metric {metric.name!r} needs {', '.join(dict.fromkeys(missing))}")
    if metric.uses_maps is False:
        raise MetricError(f"metric {metric.name!r} does not score maps; the search scores candidate maps")


class Evaluator:
    """Scores candidates of a space on an evidence set with a metric, from memoised sub-terms.

    ``memo_bytes`` bounds the cached sub-term values (all row subsets together);
    ``row_block`` images are scored at a time (default: on CPU as many as keep one terminal
    tensor within ``CPU_BLOCK_BYTES``, so that a candidate's operators run on cache-resident
    values - memory bandwidth is what limits elementwise search; elsewhere all images);
    ``map_bytes`` bounds the full-resolution maps materialised at once (candidates are
    chunked to fit). Callables a metric needs (``model_fn=``, ``model=``, ...) are passed as
    keyword arguments and handed to the metric.
    """

    def __init__(self, evidence: EvidenceSet, space: SearchSpace, metric: str | Metric, *,
                 metric_params: Mapping[str, Any] | None = None, memo_bytes: int = 256 * MiB,
                 map_bytes: int = 128 * MiB, fusion: str = "mean", chunk: int = 512, batch_size: int | None = None,
                 row_block: int | None = None, **resources: Any):
        self.space = space
        if row_block is None:
            row_block = evidence.rows_per_block(CPU_BLOCK_BYTES) if evidence.device.type == "cpu" else len(evidence)
        self.row_block = max(1, int(row_block))
        self.metric = resolve_metric(metric, **dict(metric_params or {}))
        check_metric_inputs(self.metric, evidence.batch, resources)
        evidence.require(space.evidence_terms)
        self.evidence = evidence
        self.cache = ValueCache(memo_bytes)
        self.map_bytes = int(map_bytes)
        self.fusion = fusion
        self.chunk = int(chunk)
        self.resources = {k: v for k, v in resources.items() if v is not None}
        self.batch_size = batch_size            # rows per model call of metrics that run the model
        self.higher_is_better = self.metric.direction.sign > 0
        self._views: OrderedDict[tuple[int, ...], Memo] = OrderedDict()
        self._all = tuple(range(len(evidence)))
        self._axes: dict[Expr, frozenset[str]] = {}
        self.scored = 0          # candidate-images scored
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.evidence)

    def memo(self, rows: Sequence[int] | None = None) -> Memo:
        """The memo of a subset of the images (all images when None); the last 3 subsets are kept."""
        key = self._all if rows is None else tuple(int(r) for r in rows)
        memo = self._views.get(key)
        if memo is None:
            ev = self.evidence if key == self._all else self.evidence.rows(key)
            memo = self._views[key] = Memo(ev, self.cache)
            while len(self._views) > 3:
                _, old = self._views.popitem(last=False)
                old.forget()
        else:
            self._views.move_to_end(key)
        return memo

    def axes(self, candidate: Expr) -> frozenset[str]:
        """The candidate's axes (memoised per node, so a new candidate costs one typing step)."""
        t = self._axes.get(candidate)
        if t is None:
            t = self._type(candidate)
            if t not in self.space.result_axes:
                raise SycamError(f"candidate has axes {sorted(t)}: not a {self.space.result} candidate")
        return t

    def _type(self, expr: Expr) -> frozenset[str]:
        t = self._axes.get(expr)
        if t is not None:
            return t
        if isinstance(expr, Var):
            axes = self.space.terminal_axes.get(expr.name) or ("bkhw" if expr.name == "A" else None)
            if axes is None:
                return candidate_axes(expr, self.space)        # raises the checker's error
            t = frozenset(axes)
        elif isinstance(expr, Num):
            t = frozenset()
        else:
            args = [self._type(a) for a in expr.args]
            t = OpSpec(expr.op, expr.axes).result_axes(*args) if OPS[expr.op].enumerable else None
            if t is None:
                return candidate_axes(expr, self.space)        # ill-typed or not enumerable: full check
        if len(self._axes) > 200_000:
            self._axes.clear()
        self._axes[expr] = t
        return t

    def maps(self, candidates: Sequence[Expr], rows: Sequence[int] | None = None) -> CandidateMaps:
        """Raw maps of the candidates on the images ``rows`` (all when None)."""
        memo = self.memo(rows)
        values = [memo(c) for c in candidates]
        return maps_from_values(values, [self.axes(c) for c in candidates], memo.evidence, self.space, self.fusion)

    def score(self, candidates: Sequence[Expr], rows: Sequence[int] | None = None) -> Scores:
        """Scores (n candidates x the images ``rows``), batched in chunks of candidates and, for
        many images, in blocks of ``row_block`` images (each block's sub-term values are small
        enough to stay in cache, and the memo holds many more of them)."""
        all_rows = list(range(len(self))) if rows is None else [int(r) for r in rows]
        if len(all_rows) > self.row_block:
            blocks = [all_rows[i:i + self.row_block] for i in range(0, len(all_rows), self.row_block)]
            parts = [self.score(candidates, block) for block in blocks]
            return Scores(torch.cat([p.value for p in parts], 1), torch.cat([p.internal for p in parts], 1),
                          torch.cat([p.valid for p in parts], 1), all_rows, self.higher_is_better)
        memo = self.memo(rows)
        ev = memo.evidence
        b = len(ev)
        lowres = len(ev.layers) == 1 and self.metric.accepts_lowres
        low = max(t.shape[-1] * t.shape[-2] for terms in ev.layers.values() for t in terms.values())
        per_map = 4 * b * (low if lowres else ev.input_size[0] * ev.input_size[1])
        step = max(1, min(self.chunk, self.map_bytes // max(per_map, 1)))
        parts = []
        for i in range(0, len(candidates), step):
            chunk = list(candidates[i:i + step])
            cm = maps_from_values([memo(c) for c in chunk], [self.axes(c) for c in chunk], ev, self.space,
                                  self.fusion)
            parts.append(self.score_maps(cm, rows))
        if not parts:
            empty = torch.zeros((0, b))
            return Scores(empty, empty, empty.bool(), list(memo_rows(rows, b)), self.higher_is_better)
        return Scores.cat(parts)

    def score_maps(self, maps: CandidateMaps, rows: Sequence[int] | None = None) -> Scores:
        """Scores of candidates whose raw maps on the images ``rows`` are already computed."""
        t0 = time.perf_counter()
        ev = self.memo(rows).evidence
        b = len(ev)
        if maps.valid.shape[1] != b:
            raise SycamError(f"maps are for {maps.valid.shape[1]} images, rows name {b}")
        lowres = len(maps.raw) == 1 and self.metric.accepts_lowres
        m = maps.lowres() if lowres else maps.full()
        value = self.metric(m, ev.batch, batch_size=self.batch_size, **self.resources).float()
        value = torch.where(maps.valid, value, torch.full_like(value, math.nan))
        internal = value * self.metric.direction.sign
        internal = torch.where(maps.valid, internal, torch.full_like(internal, -math.inf))
        self.scored += len(maps) * b
        self.seconds += time.perf_counter() - t0
        return Scores(value, internal, maps.valid, list(memo_rows(rows, b)), self.higher_is_better)

    def score_staged(self, candidates: Sequence[Expr], stages: Sequence[int | Sequence[int]],
                     keep: float = 0.25) -> tuple[list[int], Scores]:
        """Multi-fidelity: score on the first stage's images, keep the best ``keep`` fraction,
        score those on the next stage's images, ... Returns (indices of the final survivors
        into ``candidates``, their scores on the last stage). A stage is a number of images
        (the first n) or a list of rows."""
        alive = list(range(len(candidates)))
        scores = None
        for si, stage in enumerate(stages):
            rows = list(range(min(int(stage), len(self)))) if isinstance(stage, int) else list(stage)
            scores = self.score([candidates[i] for i in alive], rows)
            if si < len(stages) - 1:
                n_keep = max(1, math.ceil(keep * len(alive)))
                order = torch.argsort(scores.mean, descending=True, stable=True)[:n_keep].tolist()
                alive = [alive[i] for i in sorted(order)]
        return alive, scores

    @property
    def memo_stats(self) -> CacheStats:
        return self.cache.stats


def memo_rows(rows: Sequence[int] | None, b: int) -> Iterable[int]:
    return range(b) if rows is None else (int(r) for r in rows)
