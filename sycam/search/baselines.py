"""The seeds a held-out comparison includes: every seed the model and layer allow, within a cost cap.

A seed's cost is its model passes (forwards or backwards) per image beyond the first pass, the
one forward and backward whose evidence every gradient seed and every candidate share; it is
read from its terminals' records (``Terminal.passes``; K = the layer's channels, HW its
positions; a pass at 224 px): Score-CAM K, SS-CAM and IS-CAM N K, Ablation-CAM K (passes of
the layers after the layer: an upper bound), CAMERAS 2 sum_s (s / 224)^2 (122 at its 8 default
sizes), Smooth Grad-CAM++ 2 N, Relevance-CAM and ShapleyCAM 2, MI-CAM K / 40 (its histograms,
in pass equivalents), the gradient and activation seeds 0. Seeds of the study's space are compared anyway
(the search scored them). The others are explained on the held-out images with their own
explainer (:func:`sycam.methods.build.make_cam`: their target, fusion and parameters) when
their cost is within the cap; the report lists every seed left out, and why (cost above the cap,
refused by the model or layer, a meta-method).

A cap must be a number >= 0: at 0 the seeds that need no extra pass remain, so a cap that
leaves no seed at all is a negative (or non-finite) one, refused before any model work.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.batch import Batch
from ..errors import SycamError
from ..evidence.options import EvidenceOptions
from ..evidence.terminals import TERMINALS, needed_terms
from ..grammar.ast import terminals
from ..methods.build import explain
from ..methods.seeds import META_METHODS, SEEDS, Seed
from .heldout import Entry, Interval, interval
from .objectives import ObjectiveSpec

#: model passes per image a seed may cost. At EfficientNet-Lite0's head (K = 1280) it keeps every
#: seed but Score-CAM, SS-CAM, IS-CAM, Ablation-CAM (K and more) and CAMERAS (122): the other 13
#: outside the default space took 2-73 s each on 16 held-out images, 2 shared CPU cores (measured
#: under load: 170 s in all, MI-CAM 73 s of it); Score-CAM and Ablation-CAM come in at layers of
#: up to 100 channels
DEFAULT_SEED_COST_CAP = 100.0


class SeedCostError(SycamError, ValueError):
    """A cost cap that leaves no seed to compare with."""


def check_cap(cap: float | str | None) -> float:
    """The cap as a number >= 0 (None: the default); a cap that excludes every seed is an error."""
    if cap is None:
        return DEFAULT_SEED_COST_CAP
    try:
        value = float(cap)
    except (TypeError, ValueError):
        raise SeedCostError(f"--seed-cost-cap is a number of model passes per image, not {cap!r}") from None
    if not value >= 0 or math.isnan(value):
        raise SeedCostError(f"--seed-cost-cap {cap!r} leaves no seed to compare with: give a number >= 0 (0 keeps "
                            "the seeds that need no model pass beyond the shared one: Grad-CAM, HiResCAM, EigenCAM, "
                            f"...; default {DEFAULT_SEED_COST_CAP:g})")
    return value


def seed_passes(seed: Seed, channels: int, positions: int, options: EvidenceOptions | None = None) -> float:
    """Model passes per image beyond the shared first pass (terminals sharing passes counted once)."""
    options = EvidenceOptions.make(options)
    groups: dict[str, float] = {}
    for name in sorted(needed_terms(terminals(seed.tree))):
        term = TERMINALS[name]
        cost = float(term.passes(channels, positions, options))
        key = term.shares or name
        groups[key] = max(groups.get(key, 0.0), cost)
    return sum(groups.values())


@dataclass
class SeedPlan:
    """Which seeds the comparison includes: ``extra`` (name -> passes per image) are explained on the
    held-out images; ``left_out`` (name -> why) are not; ``in_study`` were scored by the search."""

    cap: float
    in_study: list[str]
    extra: dict[str, float] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"cost_cap_passes_per_image": self.cap, "in_study": self.in_study,
                "extra": {k: {"passes_per_image": v, "seconds": self.seconds.get(k)} for k, v in self.extra.items()},
                "left_out": self.left_out}

    def text(self) -> str:
        """One paragraph for the report: compared, and left out with why."""
        compared = [*self.in_study, *self.extra]
        out = (f"Compared with {len(compared)} seeds: " + ", ".join(compared) + "." if compared
               else "No seed compared.")
        if self.extra:
            out += (f" Outside the search space, explained on the held-out images (cost cap {self.cap:g} model "
                    "passes per image beyond the shared one): "
                    + ", ".join(f"{k} ({v:.4g})" for k, v in self.extra.items()) + ".")
        if self.left_out:
            out += " Left out: " + "; ".join(f"{k}: {why}" for k, why in self.left_out.items()) + "."
        return out


def plan(in_study: Sequence[str], cap: float, channels: int, positions: int,
         options: EvidenceOptions | None = None) -> SeedPlan:
    """Every seed and meta-method: compared (in the study, or within ``cap``) or left out with why."""
    p = SeedPlan(cap, list(in_study))
    for name, seed in SEEDS.items():
        if name in in_study:
            continue
        cost = seed_passes(seed, channels, positions, options)
        if cost > cap:
            p.left_out[name] = f"{cost:.4g} model passes per image (K = {channels}) > the cap {cap:g}"
        else:
            p.extra[name] = cost
    for name in META_METHODS:
        p.left_out[name] = "a meta-method (an explainer, not an expression): compare with `sycam eval`"
    return p


def score_extra(p: SeedPlan, model: Any, layers: Any, batch: Batch, objectives: Sequence[ObjectiveSpec],
                resources: Mapping[str, Any] | None = None, keep_maps: int = 6) -> list[Entry]:
    """Explain ``batch`` with each of ``p.extra`` and score the maps on every objective; a seed the
    model, layer or metric refuses moves to ``p.left_out`` with the reason."""
    out = []
    for name in list(p.extra):
        t0 = time.perf_counter()
        try:
            maps = explain(name, model, batch.x, layers, targets=batch.labels).detach()
            entry = Entry(name, SEEDS[name].tree, "seed", seed=name, full=True, maps=maps[:keep_maps].cpu())
            for spec in objectives:
                if spec.is_size:
                    size = float(entry.candidate.size)
                    entry.held[spec.text] = Interval(size, size, size, len(batch))
                    entry.per_image[spec.text] = torch.full((len(batch),), size, dtype=torch.float64)
                    continue
                values = spec.metric()(maps, batch, **_seed_resources(name, model, layers, resources)).double().cpu()
                entry.per_image[spec.text] = values
                entry.held[spec.text] = interval(values)
        except (SycamError, RuntimeError) as err:   # a model or layer the seed cannot run on: listed, not fatal
            del p.extra[name]
            p.left_out[name] = f"not applicable to this model / layer / metric: {err}".split("\n")[0][:300]
            continue
        p.seconds[name] = round(time.perf_counter() - t0, 2)
        out.append(entry)
    return out


def _seed_resources(name: str, model: Any, layers: Any, resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a metric is given for a seed outside the space: the callables of ``resources`` (not the
    search's Reexplainer, which evaluates expressions) and the seed itself as the explainer that
    re-explaining metrics re-run (on the given model, or on a randomised copy for the sanity check)."""
    out = {k: v for k, v in dict(resources or {}).items() if v is not None and k != "reexplainer"}
    out["explainer"] = lambda x, labels: explain(name, model, x, layers, targets=labels).detach()
    out["explainer_factory"] = lambda m: (lambda x, labels: explain(name, m, x, layers, targets=labels).detach())
    return out
