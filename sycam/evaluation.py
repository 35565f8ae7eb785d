"""Evaluate methods x metrics on a batch of images with ground truth.

Per chunk of images, every method's maps come from one evidence capture per target
(:func:`sycam.methods.cam.explain_many`); every metric then scores all methods at once as an
``(n_methods, b, H, W)`` stack. Scores are kept per image, so any summary (mean and 95 %
interval, class mean for the pointing game) can be taken afterwards.

Baselines ``center`` (a centred Gaussian, the pointing game's classic baseline) and
``random`` (uniform noise) can be scored next to the methods. For images with a second
object of another class, ``pointing_other`` (the peak within 15 px of the *other* object)
measures class discrimination next to ``pointing_game``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .batching import model_rows
from .data.batch import Batch
from .errors import SycamError
from .methods.cam import explain_many
from .methods.explainer import Explainer
from .metrics import Metric, get_metric, summarise
from .metrics.aggregate import Summary, class_mean
from .metrics.base import Direction
from .metrics.localisation import PointingGame

BASELINES = ("center", "random")


def baseline_maps(name: str, b: int, size: tuple[int, int], device, seed: int = 0) -> Tensor:
    h, w = size
    if name == "center":
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device),
                                indexing="ij")
        return torch.exp(-(xx ** 2 + yy ** 2) / 0.5).expand(b, h, w).clone()
    if name == "random":
        gen = torch.Generator(device=device).manual_seed(seed)
        return torch.rand(b, h, w, generator=gen, device=device)
    raise SycamError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


def resolve_metrics(names: Sequence[str]) -> dict[str, Metric]:
    """Metric objects by name (``pointing_other`` = pointing game on the other object)."""
    out = {}
    for name in names:
        out[name] = PointingGame(region="other") if name == "pointing_other" else get_metric(name)
        if name == "pointing_other":             # a peak on the other object is a failure: lower is better
            out[name].name, out[name].direction = "pointing_other", Direction.LOWER
    return out


@dataclass
class Evaluation:
    methods: list[str]
    metrics: dict[str, Metric]
    scores: dict[str, dict[str, Tensor]]      # metric -> method -> (b,) per image (NaN: undefined)
    labels: Tensor
    names: list[str]
    valid: dict[str, Tensor] = field(default_factory=dict)   # method -> (b,) finite maps
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # "deletion"/"insertion" -> method -> (P,)
    fractions: dict[str, Tensor] = field(default_factory=dict)

    def summary(self, metric: str, method: str) -> Summary:
        """Mean over images with its 95 % interval: a percentile bootstrap for scores in [0, 1]
        (hit/miss, energy, IoU: a t-interval would leave [0, 1] on few images), Student's t otherwise."""
        scores = self.scores[metric][method]
        finite = scores[~scores.isnan()]
        bounded = finite.numel() > 0 and bool(((finite >= 0) & (finite <= 1)).all())
        return summarise(scores, method="bootstrap" if bounded else "t")

    def class_mean(self, metric: str, method: str) -> float:
        """The literature's pointing game: accuracy per class, then the mean over classes."""
        return float(class_mean(self.scores[metric][method][None], self.labels)[0])

    def rows(self) -> list[dict]:
        out = []
        for method in self.methods:
            row = {"method": method}
            for metric in self.metrics:
                s = self.summary(metric, method)
                row[metric] = float(s.mean)
                row[f"{metric}_low"], row[f"{metric}_high"] = float(s.low), float(s.high)
                row[f"{metric}_images"] = int(s.count)
                if metric in ("pointing_game", "pointing_other"):
                    row[f"{metric}_class_mean"] = self.class_mean(metric, method)
            out.append(row)
        return out


def evaluate(cams: Mapping[str, Explainer], metrics: dict[str, Metric], batch: Batch, model: nn.Module, *,
             baselines: Sequence[str] = (), chunk: int | None = None, batch_size: int | None = None,
             progress: Callable[[int], None] | None = None) -> Evaluation:
    """Score every method (and baseline) with every metric on every image of ``batch``."""
    model_fn = lambda x: model(x)  # noqa: E731
    methods = list(cams) + list(baselines)
    with_curves = [m for m in metrics if m in ("deletion", "insertion")]
    per: dict[str, dict[str, list[Tensor]]] = {m: {k: [] for k in methods} for m in metrics}
    curve_sum: dict[str, Tensor] = {}
    fractions: dict[str, Tensor] = {}
    valid: dict[str, list[Tensor]] = {k: [] for k in methods}

    def explainer_for(pool: Mapping[str, Explainer]):
        names = list(pool)

        def explain(x: Tensor, labels: Tensor) -> Tensor:
            res = explain_many(pool, x, labels)
            return torch.stack([res[n].maps for n in names])
        return explain

    def factory(new_model: nn.Module):
        pool = {n: c.with_model(new_model) for n, c in cams.items()}   # seeds keep their targets
        return explainer_for(pool)

    chunk = model_rows(batch.x.device, chunk)
    for start in range(0, len(batch), chunk):
        part = batch[slice(start, start + chunk)]
        results = explain_many(cams, part.x, part.labels) if cams else {}
        stack = [results[n].maps for n in cams]
        stack += [baseline_maps(b, len(part), part.size, part.x.device, seed=start) for b in baselines]
        maps = torch.stack(stack)
        for n in cams:
            valid[n].append(results[n].valid)
        for b in baselines:
            valid[b].append(torch.ones(len(part), dtype=torch.bool, device=part.x.device))
        for name, metric in metrics.items():
            needs = metric.needs
            if "explainer" in needs and baselines:
                raise SycamError(f"{name} re-runs the methods on modified images; baselines have no method: "
                                 "leave them out for this metric")
            kwargs = dict(model_fn=model_fn, batch_size=batch_size)
            if "explainer" in needs:
                kwargs["explainer"] = explainer_for(cams)
            if "explainer_factory" in needs:
                kwargs["explainer_factory"], kwargs["model"] = factory, copy.deepcopy(model)
            if name in with_curves:
                frac, curve = metric.curves(maps, part, model_fn, batch_size)
                fractions[name] = frac
                s = curve.sum(1)
                curve_sum[name] = s if name not in curve_sum else curve_sum[name] + s
                scores = torch.trapezoid(curve, frac, dim=-1)
            else:
                scores = metric(maps, part, **kwargs)
            for i, method in enumerate(methods):
                per[name][method].append(scores[i].detach())
        if progress:
            progress(len(part))
    scores = {m: {k: torch.cat(v) for k, v in d.items()} for m, d in per.items()}
    curves = {name: {method: curve_sum[name][i] / len(batch) for i, method in enumerate(methods)}
              for name in curve_sum}
    return Evaluation(methods, metrics, scores, batch.labels, list(batch.names),
                      {k: torch.cat(v) for k, v in valid.items()}, curves, fractions)
