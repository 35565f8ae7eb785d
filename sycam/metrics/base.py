"""The metric interface: what a metric declares, what it is given, and how it is called.

A metric scores candidate heatmaps against a :class:`~sycam.data.batch.Batch`:

* ``maps`` are float tensors in [0,1] at input resolution, ``(b,H,W)`` for one method or
  ``(n,b,H,W)`` for ``n`` candidate methods (a :class:`~sycam.kernels.lowres.LowResMaps` is also
  accepted: feature-resolution maps plus the upsampling that brings them to input resolution);
* the result is one score per image, ``(b,)`` or ``(n,b)``, on the maps' device. ``NaN`` marks an
  image on which the metric is undefined (e.g. no ground truth); aggregation skips it.

Every metric declares a ``name``, a ``direction`` (is higher better?), a ``cost`` (model forwards
and explainer calls it adds) and ``needs``: the ground truth (``masks``, ``boxes``,
``other_masks``) and callables (``model_fn``, ``explainer``, ``explainer_factory``, ``model``,
``axioms``) it cannot work without. Callables are keyword arguments of the call::

    metric(maps, batch, model_fn=f, explainer=g, batch_size=None)

``model_fn(x) -> logits`` maps a normalised input ``(m,3,S,S)`` to logits ``(m,C)``; metrics run
it under ``torch.no_grad`` in chunks of ``batch_size`` (None: :func:`sycam.batching.model_rows`
of the maps' device). ``explainer(x, labels) -> maps`` re-runs
the explained CAM method(s) on a modified input; it returns ``(m,H,W)`` or, for ``n`` candidates
at once, ``(n,m,H,W)`` (see :func:`call_explainer`).

A new metric is a subclass of :class:`Metric` implementing ``compute`` on the canonical shapes
(``(n,b,H,W)`` in, ``(n,b)`` out), or a plain function wrapped by
:func:`~sycam.metrics.registry.define_metric`.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..batching import model_rows
from ..data.batch import Batch
from ..errors import SycamError
from ..kernels.lowres import LowResMaps

ModelFn = Callable[[Tensor], Tensor]
Explainer = Callable[[Tensor, Tensor], Tensor]
ExplainerFactory = Callable[[nn.Module], Explainer]

GROUND_TRUTH = frozenset({"masks", "boxes", "other_masks", "region"})
RESOURCES = frozenset({"model_fn", "explainer", "explainer_factory", "model", "axioms"})



def missing_ground_truth(needs, batch: "Batch | None") -> list[str]:
    """What of the ground truth in ``needs`` the batch lacks, as the user would supply it."""
    missing = []
    for need in sorted(set(needs) & GROUND_TRUTH):
        if batch is None:
            missing.append("a batch with ground truth")
        elif need == "masks" and batch.masks is None:
            missing.append("batch.masks")
        elif need == "boxes" and not batch.boxes:
            missing.append("batch.boxes")
        elif need == "other_masks" and batch.other_masks is None:
            missing.append("batch.other_masks")
        elif need == "region" and batch.masks is None and not batch.boxes:
            missing.append("batch.masks or batch.boxes")
    return list(dict.fromkeys(missing))

class MetricError(SycamError, ValueError):
    """A metric was called with inputs it cannot use (missing ground truth, bad shapes, ...)."""


class Direction(str, Enum):
    """Which way is better for a metric's score."""

    HIGHER = "higher"
    LOWER = "lower"

    @property
    def sign(self) -> float:
        """+1 for higher-is-better, -1 for lower-is-better: ``sign * score`` is to be maximised."""
        return 1.0 if self is Direction.HIGHER else -1.0


@dataclass(frozen=True)
class Cost:
    """Extra work a metric adds on top of the maps it scores.

    forwards: model forwards per image per candidate map (inputs that depend on the map).
    shared_forwards: model forwards per image shared by all candidates (original prediction, baselines).
    explainer_calls: explainer evaluations per image per candidate map.
    """

    forwards: float = 0.0
    shared_forwards: float = 0.0
    explainer_calls: float = 0.0
    note: str = ""  # work not counted above (e.g. "K head evaluations per image")

    def total_forwards(self, n_maps: int = 1) -> float:
        """Forwards per image for ``n_maps`` candidates."""
        return self.forwards * n_maps + self.shared_forwards


@dataclass
class Resources:
    """The callables a metric may use (all optional; ``Metric.needs`` says which are required)."""

    model_fn: ModelFn | None = None
    explainer: Explainer | None = None
    explainer_factory: ExplainerFactory | None = None
    model: nn.Module | None = None
    axioms: Any = None  # sycam.metrics.axioms.AxiomInput
    batch_size: int = 64


class Metric(ABC):
    """Base class of every metric: declarations plus a batched ``compute``.

    Subclasses set the class attributes (or instance attributes in ``__init__`` when they depend
    on parameters, e.g. ``cost`` of insertion depends on ``steps``) and implement :meth:`compute`.
    """

    name: str = ""
    direction: Direction = Direction.HIGHER
    needs: frozenset[str] = frozenset()
    cost: Cost = Cost()
    uses_maps: ClassVar[bool] = True        # False: scores something else (e.g. axiom weights)
    accepts_lowres: ClassVar[bool] = False  # True: compute() handles LowResMaps itself

    @property
    def forward_passes(self) -> float:
        """Extra model forwards per image per candidate map (``cost.forwards``)."""
        return self.cost.forwards

    @abstractmethod
    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        """Scores ``(n,b)`` for maps ``(n,b,H,W)`` (already validated, on the batch's device)."""

    # ------------------------------------------------------------------ calling
    def __call__(self, maps: Any, batch: Batch, *, model_fn: ModelFn | None = None,
                 explainer: Explainer | None = None, explainer_factory: ExplainerFactory | None = None,
                 model: nn.Module | None = None, axioms: Any = None, batch_size: int | None = None) -> Tensor:
        """Score ``maps`` on ``batch``: ``(b,H,W) -> (b,)`` or ``(n,b,H,W) -> (n,b)``."""
        if batch_size is not None and int(batch_size) < 1:
            raise MetricError(f"batch_size must be >= 1, got {batch_size}")
        res = Resources(model_fn, explainer, explainer_factory, model, axioms, model_rows(batch.x.device, batch_size))
        self._check_needs(batch, res)
        if not self.uses_maps:
            # scores something other than maps (e.g. axiom weights): the metric shapes its output
            return self.compute(maps, batch, res)
        if isinstance(maps, LowResMaps):
            squeeze = maps.a.dim() == 3
            maps = maps.unsqueeze() if squeeze else maps
            device = maps.a.device
            if not self.accepts_lowres:
                maps = maps.full()
        elif isinstance(maps, Tensor):
            if maps.dim() not in (3, 4):
                raise MetricError(f"{self.name}: maps must be (b,H,W) or (n,b,H,W), got shape "
                                  f"{tuple(maps.shape)}")
            squeeze = maps.dim() == 3
            maps = maps.detach()
            maps = (maps[None] if squeeze else maps)
            if not maps.is_floating_point():
                maps = maps.float()
            device = maps.device
        else:
            raise MetricError(f"{self.name}: maps must be a tensor or LowResMaps, got {type(maps).__name__}")
        b = maps.a.shape[1] if isinstance(maps, LowResMaps) else maps.shape[1]
        if b != len(batch):
            raise MetricError(f"{self.name}: {b} maps per candidate for a batch of {len(batch)} images")
        size = maps.size if isinstance(maps, LowResMaps) else tuple(maps.shape[-2:])
        if tuple(size) != batch.size:
            raise MetricError(f"{self.name}: maps are {tuple(size)} but the batch is {batch.size}; "
                              "maps must be at input resolution")
        if batch.x.device != device:
            batch = batch.to(device)
            res.batch_size = model_rows(device, batch_size)
        out = self.compute(maps, batch, res)
        return out[0] if squeeze else out

    def _check_needs(self, batch: Batch, res: Resources) -> None:
        missing = missing_ground_truth(self.needs, batch)
        missing += [f"{need}=" for need in sorted(self.needs & RESOURCES) if getattr(res, need) is None]
        if missing:
            raise MetricError(f"metric {self.name!r} needs {', '.join(missing)}")

    def __repr__(self) -> str:
        return f"<metric {self.name} ({self.direction.value} is better, {self.cost.forwards:g} fwd/map/img)>"


# ---------------------------------------------------------------------- user-defined metrics
class FunctionMetric(Metric):
    """A metric from a plain function ``fn(maps (n,b,H,W), batch, **needed_callables) -> (n,b)``.

    Only the callables named in ``needs`` are passed, as keyword arguments (``model_fn=...``).
    """

    def __init__(self, fn: Callable[..., Tensor], name: str, direction: Direction | str = "higher",
                 needs: Iterable[str] = (), cost: Cost = Cost()):
        unknown = set(needs) - GROUND_TRUTH - RESOURCES
        if unknown:
            raise MetricError(f"metric {name!r}: unknown needs {sorted(unknown)}; "
                              f"known: {sorted(GROUND_TRUTH | RESOURCES)}")
        self.fn, self.name, self.direction = fn, name, Direction(direction)
        self.needs = frozenset(needs)
        self.cost = cost
        self.__doc__ = fn.__doc__

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        kwargs = {k: getattr(res, k) for k in self.needs if k in RESOURCES}
        if "batch_size" in inspect.signature(self.fn).parameters:
            kwargs["batch_size"] = res.batch_size
        out = self.fn(maps, batch, **kwargs)
        if not isinstance(out, Tensor) or tuple(out.shape) != tuple(maps.shape[:2]):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise MetricError(f"metric {self.name!r} returned {got}; expected a tensor of shape "
                              f"{tuple(maps.shape[:2])} (candidates, images)")
        return out


# ---------------------------------------------------------------------- shared helpers
ScoreFn = Callable[[Tensor, Tensor], Tensor]


def first_equal(rows: Tensor) -> Tensor:
    """For each row of ``rows (m, ...)``, the index of the first row exactly equal to it.

    ``rows[first_equal(rows)]`` equals ``rows``; a row is its own representative iff
    ``first_equal(rows)[i] == i``. Floating rows are compared bit for bit (NaN equals the same NaN,
    0.0 and -0.0 differ), so equal rows are interchangeable inputs to any computation.
    """
    m = rows.shape[0]
    idx = torch.arange(m, device=rows.device)
    if m <= 1:
        return idx
    flat = rows.reshape(m, -1)
    if flat.is_floating_point():
        flat = flat.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()])
    _, inv = torch.unique(flat, dim=0, return_inverse=True)
    first = torch.full((m,), m, dtype=torch.long, device=rows.device).scatter_reduce_(0, inv, idx, "amin")
    return first[inv]


def dedup_rows(n_jobs: int, groups: Callable[[], Iterable[tuple[Tensor, Tensor]]]) -> tuple[Tensor, Tensor]:
    """Identical model inputs, computed once: ``(unique (u,), where (n_jobs,))``.

    ``groups()`` yields ``(jobs (m,), rows (m, ...))``: jobs whose model inputs are equal iff their
    rows are (jobs in different groups are never equal). ``unique`` lists the jobs to run (each the
    first of its class), ``where[j]`` the position in ``unique`` of job ``j``'s representative, so
    ``scores_of_unique[where]`` are the scores of every job.
    """
    rep = torch.arange(n_jobs)
    for jobs, rows in groups():
        jobs = jobs.cpu()
        rep[jobs] = jobs[first_equal(rows).cpu()]
    own = rep == torch.arange(n_jobs)
    unique = own.nonzero()[:, 0]
    position = own.long().cumsum(0) - 1
    return unique, position[rep]


def target_score(logits: Tensor, labels: Tensor, score: str | ScoreFn = "prob") -> Tensor:
    """Score of the explained class: softmax probability (``"prob"``), logit, or a callable."""
    if callable(score):
        return score(logits, labels)
    if score == "prob":
        return logits.float().softmax(dim=1).gather(1, labels[:, None])[:, 0]
    if score == "logit":
        return logits.float().gather(1, labels[:, None])[:, 0]
    raise MetricError(f"score must be 'prob', 'logit' or a callable (logits, labels) -> (m,), got {score!r}")


def run_model(model_fn: ModelFn, total: int, build: Callable[[int, int], tuple[Tensor, Tensor]],
              batch_size: int, score: str | ScoreFn = "prob") -> Tensor:
    """Target scores of ``total`` inputs built lazily chunk by chunk, under ``no_grad``.

    ``build(start, stop) -> (x (m,3,S,S), labels (m,))`` creates only one chunk at a time, so the
    perturbed inputs of all steps, images and candidates never sit in memory together.
    """
    outs = []
    with torch.no_grad():
        for start in range(0, total, batch_size):
            x, labels = build(start, min(start + batch_size, total))
            logits = model_fn(x)
            if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise MetricError("model_fn must return logits (m, C) for inputs (m, 3, S, S); got "
                                  f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}")
            outs.append(target_score(logits, labels, score))
    return torch.cat(outs) if outs else torch.zeros(0)


def logits_of(model_fn: ModelFn, x: Tensor, batch_size: int) -> Tensor:
    """Logits of ``x`` under ``no_grad``, chunked."""
    with torch.no_grad():
        return torch.cat([model_fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@dataclass
class InputAffine:
    """Per-channel ``x = images * scale + shift`` (the model's normalisation), fitted from a batch."""

    scale: Tensor  # (3,)
    shift: Tensor  # (3,)

    def to_input(self, images: Tensor) -> Tensor:
        return images * self.scale.view(-1, 1, 1) + self.shift.view(-1, 1, 1)

    def to_pixels(self, x: Tensor) -> Tensor:
        return (x - self.shift.view(-1, 1, 1)) / self.scale.view(-1, 1, 1)


def input_affine(batch: Batch) -> InputAffine:
    """Fit the per-channel normalisation mapping ``batch.images`` to ``batch.x`` (least squares).

    Raises :class:`MetricError` when ``x`` is not an affine function of the pixels (then pixel-space
    perturbations cannot be mapped back to the model input).
    """
    img = batch.images.transpose(0, 1).flatten(1).double()  # (3, b*S*S)
    x = batch.x.transpose(0, 1).flatten(1).double()
    im, xm = img.mean(1, keepdim=True), x.mean(1, keepdim=True)
    var = ((img - im) ** 2).mean(1)
    scale = torch.where(var > 0, ((img - im) * (x - xm)).mean(1) / var.clamp_min(1e-30), torch.ones_like(var))
    shift = xm[:, 0] - scale * im[:, 0]
    resid = (x - (img * scale[:, None] + shift[:, None])).abs().max()
    if resid > 1e-3 * max(1.0, float(x.abs().max())):
        raise MetricError("batch.x is not a per-channel affine function of batch.images (residual "
                          f"{float(resid):.3g}); pixel-space metrics cannot map images back to inputs")
    return InputAffine(scale.to(batch.x.dtype), shift.to(batch.x.dtype))


def call_explainer(explainer: Explainer, x: Tensor, labels: Tensor, n: int, batch_size: int) -> Tensor:
    """Maps ``(n,m,H,W)`` of ``n`` candidate methods on inputs ``x (m,...)``.

    The explainer may return ``(m,H,W)`` (one method; requires ``n == 1``) or ``(n,m,H,W)``.
    Called in chunks of ``batch_size`` images; gradients stay enabled (gradient CAMs need them).
    """
    outs = []
    for i in range(0, x.shape[0], batch_size):
        out = explainer(x[i:i + batch_size], labels[i:i + batch_size])
        if not isinstance(out, Tensor):
            raise MetricError(f"explainer must return a tensor, got {type(out).__name__}")
        out = out.detach()
        if out.dim() == 3:
            out = out[None]
        if out.dim() != 4 or out.shape[0] != n:
            raise MetricError(f"explainer returned shape {tuple(out.shape)} for {n} candidate map(s); "
                              "expected (m,H,W) for one candidate or (n,m,H,W)")
        outs.append(out.float())
    return torch.cat(outs, dim=1)


def call_explainer_per_candidate(explainer: Explainer, x: Tensor, labels: Tensor, batch_size: int) -> Tensor:
    """Candidate ``i``'s map on its own inputs ``x[i]``: ``x (n,m,3,S,S) -> (n,m,H,W)``.

    Used when each candidate perturbs the input differently (ADCC re-explains ``x * L_i``).
    If the explainer takes a ``candidates`` keyword, it is called as
    ``explainer(x, labels, candidates=idx) -> (m,H,W)`` (input ``j`` explained by candidate
    ``idx[j]``): n*m maps in all. Otherwise, with ``n > 1``, every candidate explains every input
    and the diagonal blocks are kept (n*n*m maps).
    """
    n, m = x.shape[:2]
    if n > 1 and _takes_candidates(explainer):
        idx = torch.arange(n, device=x.device).repeat_interleave(m)
        flat, lab = x.flatten(0, 1), labels.repeat(n)
        outs = []
        for i in range(0, n * m, batch_size):
            out = explainer(flat[i:i + batch_size], lab[i:i + batch_size], candidates=idx[i:i + batch_size])
            if not isinstance(out, Tensor) or out.dim() != 3:
                raise MetricError("explainer(x, labels, candidates=...) must return (m,H,W), got "
                                  f"{tuple(getattr(out, 'shape', ()))}")
            outs.append(out.detach().float())
        return torch.cat(outs).view(n, m, *outs[0].shape[-2:])
    maps = call_explainer(explainer, x.flatten(0, 1), labels.repeat(n), n, batch_size)  # (n, n*m, H, W)
    idx = torch.arange(n, device=maps.device)
    return maps.view(n, n, m, *maps.shape[-2:])[idx, idx]


def _takes_candidates(fn: Callable[..., Any]) -> bool:
    try:
        return "candidates" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def region_masks(batch: Batch, region: str) -> Tensor:
    """Ground-truth region ``(b,H,W)`` bool: ``"mask"``, ``"box"`` or ``"auto"`` (mask, else boxes)."""
    if region == "auto":
        region = "mask" if batch.masks is not None else "box"
    if region == "mask":
        if batch.masks is None:
            raise MetricError("this metric needs batch.masks (or region='box' with batch.boxes)")
        return batch.masks.bool()
    if region == "box":
        boxes = batch.box_masks
        if boxes is None:
            raise MetricError("this metric needs batch.boxes (or region='mask' with batch.masks)")
        return boxes
    if region == "other":
        if batch.other_masks is None:
            raise MetricError("this metric needs batch.other_masks")
        return batch.other_masks.bool()
    raise MetricError(f"region must be 'mask', 'box', 'auto' or 'other', got {region!r}")


def top_fraction_mask(maps: Tensor, fraction: float) -> Tensor:
    """Bool mask of the ``ceil(fraction*H*W)`` highest pixels of each map (exact count; ties are
    broken by ``topk``, deterministically)."""
    hw = maps.shape[-1] * maps.shape[-2]
    k = max(1, min(hw, int(-(-fraction * hw // 1))))
    flat = maps.flatten(-2)
    idx = flat.topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, idx, True).view(maps.shape)
