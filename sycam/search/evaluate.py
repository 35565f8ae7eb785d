"""Scoring candidates of a search space with a metric, on evidence captured once.

:class:`Evaluator` - candidates -> maps -> metric scores, batched over candidates and images,
from memoised sub-terms: the candidates' distinct sub-terms are computed together, once per block
of images (:class:`sycam.kernels.blocks.BlockMemo` on a :class:`sycam.evidence.sets.EvidenceSet`),
and their maps formed in the same pass (channel weights in one batched product). A map with a
NaN or infinity is *invalid*: its score is -inf, it never crashes the batch. Scores are returned "higher is better"
(``internal = direction.sign * metric``) next to the metric's own values. ``rows=`` scores a
subset of the images (the working subset of the search's stages, :mod:`sycam.search.objectives`).
Evaluators of several metrics share one value cache (:meth:`Evaluator.with_metric`).

Forward-free metrics that accept :class:`~sycam.kernels.lowres.LowResMaps` (pointing game,
energy pointing game, target Pearson) are scored at feature resolution, exactly.
"""
from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.batch import Batch
from ..errors import SycamError
from ..evidence.sets import EvidenceSet
from ..grammar.ast import Expr, Num, Var
from ..grammar.checker import infer
from ..grammar.ops import OPS
from ..kernels.blocks import BlockMemo
from ..kernels.memo import CacheStats, CandidateMaps, MiB, ValueCache
from ..metrics.base import GROUND_TRUTH, Metric, MetricError, missing_ground_truth
from ..metrics.registry import get_metric
from .reexplain import REEXPLAINED, REEXPLAINS, unsearchable
from .space import OpSpec, SearchSpace

CPU_BLOCK_BYTES = 1 * MiB     # about one core's L2 cache


def candidate_axes(expr: Expr, space: SearchSpace) -> frozenset[str]:
    return infer(expr, space.terminal_axes | {"A": "bkhw"})[expr]

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


def check_metric_inputs(metric: Metric, batch: Batch | None, resources: Mapping[str, Any],
                        space: SearchSpace | None = None, layers: Sequence[str] | None = None) -> None:
    """Fail before any work if the metric cannot be searched (:func:`~sycam.search.reexplain.unsearchable`)
    or lacks ground truth or callables it needs (a ``reexplainer=`` provides those that re-explain)."""
    reason = unsearchable(metric, None if space is None else space.result_axes, layers)
    if reason:
        raise MetricError(reason)
    provided = {k for k, v in resources.items() if v is not None}
    if resources.get("reexplainer") is not None:
        provided |= REEXPLAINED
    missing = missing_ground_truth(metric.needs, batch)
    missing += [f"{need}=" for need in sorted(metric.needs - GROUND_TRUTH) if need not in provided]
    if missing:
        hint = ("; give reexplainer=sycam.search.reexplain.Reexplainer(model, layers, space.evidence_terms)"
                if metric.needs & REEXPLAINS else "")
        raise MetricError(f"metric {metric.name!r} needs {', '.join(dict.fromkeys(missing))}{hint}")


class Evaluator:
    """Scores candidates of a space on an evidence set with a metric, from memoised sub-terms.

    ``memo_bytes`` bounds the cached sub-term values (all row subsets together);
    ``row_block`` images are computed at a time (:class:`~sycam.kernels.blocks.BlockMemo`;
    default: on CPU as many as keep one terminal tensor within ``CPU_BLOCK_BYTES``, so that a
    candidate's operators run on cache-resident values - memory bandwidth is what limits
    element-wise search; elsewhere all images);
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
        check_metric_inputs(self.metric, evidence.batch, resources, space, evidence.layer_names)
        self.reexplainer = resources.pop("reexplainer", None)      # sycam.search.reexplain.Reexplainer
        evidence.require(space.evidence_terms)
        self.evidence = evidence
        self.cache = ValueCache(memo_bytes)
        self.map_bytes = int(map_bytes)
        self.fusion = fusion
        self.chunk = int(chunk)
        self.resources = {k: v for k, v in resources.items() if v is not None}
        self.batch_size = batch_size            # rows per model call of metrics that run the model
        self.higher_is_better = self.metric.direction.sign > 0
        self._views: OrderedDict[tuple[int, ...], BlockMemo] = OrderedDict()
        self._all = tuple(range(len(evidence)))
        self._axes: dict[Expr, frozenset[str]] = {}
        self.scored = 0          # candidate-images scored
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.evidence)

    def with_metric(self, metric: str | Metric, *, metric_params: Mapping[str, Any] | None = None) -> "Evaluator":
        """An evaluator of another metric on the same evidence that shares this one's value cache and
        row-subset memos: a sub-term is computed once per image set, whatever the number of metrics."""
        other = copy.copy(self)
        other.metric = resolve_metric(metric, **dict(metric_params or {}))
        check_metric_inputs(other.metric, self.evidence.batch, {**self.resources, "reexplainer": self.reexplainer})
        other.higher_is_better = other.metric.direction.sign > 0
        other.scored, other.seconds = 0, 0.0
        return other

    def memo(self, rows: Sequence[int] | None = None) -> BlockMemo:
        """The memo of a subset of the images (all images when None), computed in blocks of
        ``row_block`` images; the last 3 subsets are kept."""
        key = self._all if rows is None else tuple(int(r) for r in rows)
        memo = self._views.get(key)
        if memo is None or memo.block_rows != self.row_block:
            ev = self.evidence if key == self._all else self.evidence.rows(key)
            if memo is not None:
                memo.forget()
            memo = self._views[key] = BlockMemo(ev, self.cache, self.row_block)
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
        return self.memo(rows).maps(candidates, [self.axes(c) for c in candidates], self.space.relu, self.fusion)

    def score(self, candidates: Sequence[Expr], rows: Sequence[int] | None = None) -> Scores:
        """Scores (n candidates x the images ``rows``). As many candidates as their raw maps fit
        ``map_bytes`` are computed together (their sub-terms once, block of images by block:
        :class:`~sycam.kernels.blocks.BlockMemo`); the metric scores them ``chunk`` at a time, or
        fewer where their maps at the input size would not fit ``map_bytes``."""
        memo = self.memo(rows)
        ev = memo.evidence
        b = len(ev)
        grids = [max(t.shape[-1] * t.shape[-2] for t in terms.values()) for terms in ev.layers.values()]
        lowres = self._lowres(len(ev.layers))
        per_map = 4 * b * (grids[0] if lowres else ev.input_size[0] * ev.input_size[1])
        step = max(1, min(self.chunk, self.map_bytes // max(per_map, 1)))
        together = max(step, self.map_bytes // (4 * b * sum(grids)))
        parts = []
        for i in range(0, len(candidates), together):
            chunk = list(candidates[i:i + together])
            cm = memo.maps(chunk, [self.axes(c) for c in chunk], self.space.relu, self.fusion)
            for j in range(0, len(chunk), step):
                parts.append(self.score_maps(cm.part(j, j + step), rows, chunk[j:j + step]))
        if not parts:
            empty = torch.zeros((0, b))
            return Scores(empty, empty, empty.bool(), list(memo_rows(rows, b)), self.higher_is_better)
        return Scores.cat(parts)

    def score_maps(self, maps: CandidateMaps, rows: Sequence[int] | None = None,
                   candidates: Sequence[Expr] | None = None) -> Scores:
        """Scores of candidates whose raw maps on the images ``rows`` are already computed (a metric
        that re-explains also needs the ``candidates``)."""
        t0 = time.perf_counter()
        memo = self.memo(rows)
        ev = memo.evidence
        b = len(ev)
        if maps.valid.shape[1] != b:
            raise SycamError(f"maps are for {maps.valid.shape[1]} images, rows name {b}")
        resources = self.resources
        if self.reexplainer is not None and self.metric.needs & REEXPLAINS:
            if candidates is None:
                raise SycamError(f"metric {self.metric.name!r} re-explains: score_maps needs the candidates")
            resources = {**resources, **self.reexplainer.resources(
                self.metric, candidates, [self.axes(c) for c in candidates], memo)}
        lowres = self._lowres(len(maps.raw))
        m = None if not self.metric.uses_maps else maps.lowres() if lowres else maps.full()
        value = self.metric(m, ev.batch, batch_size=self.batch_size, **resources).float()
        value = torch.where(maps.valid, value, torch.full_like(value, math.nan))
        internal = value * self.metric.direction.sign
        internal = torch.where(maps.valid, internal, torch.full_like(internal, -math.inf))
        self.scored += len(maps) * b
        self.seconds += time.perf_counter() - t0
        return Scores(value, internal, maps.valid, list(memo_rows(rows, b)), self.higher_is_better)

    def _lowres(self, layers: int) -> bool:
        """Score at feature resolution: one layer, a metric exact there, and for a metric that
        re-explains, a Reexplainer (whose maps of the copies are at feature resolution too)."""
        return (layers == 1 and bool(self.metric.accepts_lowres)
                and (self.reexplainer is not None or not self.metric.needs & REEXPLAINS))

    @property
    def memo_stats(self) -> CacheStats:
        return self.cache.stats


def memo_rows(rows: Sequence[int] | None, b: int) -> Iterable[int]:
    return range(b) if rows is None else (int(r) for r in rows)

