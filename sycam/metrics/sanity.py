"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018, https://arxiv.org/abs/1810.03292).

A map that explains the *model* must change when the model's weights are destroyed. Cascading
randomisation re-initialises the layers from the logits down, cumulatively; after each stage
the method is re-run (``explainer_factory(randomised_model)``) and compared with the original
map. Low similarity passes the check.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..errors import UnknownNameError
from .base import Cost, Direction, Metric, MetricError, Resources, call_explainer
from .similarity import spearman, ssim


def parameter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules owning parameters directly, from the output back to the input (registration order
    reversed: for sequential-style models, the logits layer comes first)."""
    layers = [(name, m) for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return layers[::-1]


def randomise_(module: nn.Module, generator_seed: int) -> None:
    """Re-initialise ``module``'s own parameters in place (``reset_parameters`` where defined,
    else N(0, 0.01^2)); seeded without touching the global RNG stream."""
    devices = [p.device for p in module.parameters(recurse=False) if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(generator_seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    p.normal_(0, 0.01)


class CascadingRandomisation(Metric):
    """Similarity between the original map and the map of a progressively randomised model.

    Stage k re-initialises the first ``counts[k]`` layers of :func:`parameter_layers` (logits
    first) of a deep copy of ``model`` -- the caller's model is never modified. ``stages`` is the
    number of evenly spaced cascade points (the last randomises every layer) or a list of module
    names, each randomised together with all earlier ones. Per stage: Spearman rank correlation
    and SSIM of the original vs the randomised map. Score = mean over stages of
    ``similarity`` (``"spearman"`` or ``"ssim"``). Lower is better.
    Cost: one explainer construction per stage and one explainer call per stage, map and image.
    """

    name = "sanity_cascading"
    direction = Direction.LOWER
    needs = frozenset({"model", "explainer_factory"})

    def __init__(self, stages: int | list[str] = 3, similarity: str = "spearman", seed: int = 0):
        if similarity not in ("spearman", "ssim"):
            raise MetricError(f"similarity must be 'spearman' or 'ssim', got {similarity!r}")
        if isinstance(stages, int) and stages < 1:
            raise MetricError(f"stages must be >= 1 (cascade points), not {stages}")
        if not isinstance(stages, int) and not list(stages):
            raise MetricError("stages: give at least one module name (or a number of cascade points)")
        self.stages, self.similarity, self.seed = stages, similarity, seed
        n = stages if isinstance(stages, int) else len(stages)
        self.cost = Cost(explainer_calls=n)

    def _plan(self, model: nn.Module) -> list[list[str]]:
        layers = [name for name, _ in parameter_layers(model)]
        if not layers:
            raise MetricError("the model has no parameters to randomise")
        if isinstance(self.stages, int):
            if self.stages < 1:
                raise MetricError("stages must be >= 1")
            k = min(self.stages, len(layers))
            counts = sorted({max(1, round(len(layers) * (i + 1) / k)) for i in range(k)})
            return [layers[:c] for c in counts]
        known = dict(model.named_modules())
        plan, done = [], []
        for name in self.stages:
            if name not in known:
                raise UnknownNameError("module", name, known)
            done = done + [n for n, _ in known[name].named_modules(prefix=name)
                           if any(True for _ in known[n].parameters(recurse=False))]
            plan.append(list(done))
        return plan

    def randomised(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model after each stage of the plan: one deep copy, randomised further at each step
        (seeded: the same models on every call)."""
        copy_ = copy.deepcopy(model)
        modules = dict(copy_.named_modules())
        done: set[str] = set()
        for stage in self._plan(copy_):
            for i, name in enumerate(stage):
                if name not in done:
                    randomise_(modules[name], self.seed + i)
                    done.add(name)
            yield copy_

    def details(self, maps: Tensor, batch: Batch, res: Resources) -> dict[str, Tensor]:
        """``spearman`` and ``ssim`` per stage ``(S,n,b)`` and the ``layers`` of each stage."""
        model = res.model
        assert model is not None and res.explainer_factory is not None
        n = maps.shape[0]
        plan = self._plan(model)
        rho, sim = [], []
        for randomised in self.randomised(model):
            explainer = res.explainer_factory(randomised)
            rand = call_explainer(explainer, batch.x, batch.labels, n, res.batch_size)
            rho.append(spearman(maps, rand))
            sim.append(ssim(maps, rand))
        return {"spearman": torch.stack(rho), "ssim": torch.stack(sim), "layers": plan}  # type: ignore[dict-item]

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        return self.details(maps, batch, res)[self.similarity].mean(0)
