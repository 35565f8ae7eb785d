"""Metrics by name: ``get_metric("pointing_game", tolerance=15)``.

A registry entry is a factory ``(**params) -> Metric``; :func:`register_metric` adds one
(a user's :class:`~sycam.metrics.base.Metric` subclass, or a :func:`~sycam.metrics.base.define_metric`
function). Unknown names raise :class:`~sycam.errors.UnknownNameError` with close matches.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ..errors import SycamError, UnknownNameError
from .axioms import ConservationError, SensitivityError
from .base import Metric
from .complexity import Complexity, Gini
from .faithfulness import ADCC, AverageDrop, AverageIncrease, Deletion, FinerConfidenceDrop, Insertion
from .localisation import (BestIoU, EnergyPointingGame, GroundTruthAUC, GroundTruthPearson, IoU,
                           PointingGame)
from .road import ROAD
from .robustness import Equivariance, NoiseRobustness
from .sanity import CascadingRandomisation

Factory = Callable[..., Metric]
_REGISTRY: dict[str, Factory] = {}


def _named(name: str, factory: Factory) -> Factory:
    def make(**params: Any) -> Metric:
        m = factory(**params)
        m.name = name
        return m

    make.__doc__ = getattr(factory, "__doc__", None) or getattr(getattr(factory, "func", None), "__doc__", None)
    return make


def register_metric(name: str, factory: Factory | type[Metric], overwrite: bool = False) -> None:
    """Add a metric factory (a Metric subclass or any ``(**params) -> Metric``) under ``name``."""
    if not name or not name.replace("_", "").isalnum():
        raise SycamError(f"metric names are identifiers (letters, digits, _), got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise SycamError(f"metric {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = _named(name, factory)


def get_metric(name: str, **params: Any) -> Metric:
    """A new instance of the metric ``name`` with ``params`` (see each class for its options)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("metric", name, _REGISTRY, hint="see sycam.metrics.available_metrics()") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise SycamError(f"bad parameters for metric {name!r}: {exc}") from None


def available_metrics() -> list[str]:
    """Registered metric names, sorted."""
    return sorted(_REGISTRY)


def metric_table() -> list[dict[str, Any]]:
    """Name, direction, cost and needs of every registered metric (default parameters)."""
    rows = []
    for name in available_metrics():
        m = get_metric(name)
        rows.append({"name": name, "direction": m.direction.value, "forwards": m.cost.forwards,
                     "shared_forwards": m.cost.shared_forwards, "explainer_calls": m.cost.explainer_calls,
                     "needs": sorted(m.needs), "note": m.cost.note})
    return rows


_BUILTIN: dict[str, Factory] = {
    # localisation (forward-free)
    "pointing_game": PointingGame,
    "energy_pointing_game": EnergyPointingGame,
    "iou": IoU,
    "iou_mask": partial(IoU, region="mask"),
    "iou_box": partial(IoU, region="box"),
    "best_iou": BestIoU,
    "gt_pearson": GroundTruthPearson,
    "gt_auc": GroundTruthAUC,
    "complexity": Complexity,
    "gini": Gini,
    # faithfulness (model forwards)
    "insertion": Insertion,
    "deletion": Deletion,
    "average_drop": AverageDrop,
    "average_increase": AverageIncrease,
    "adcc": ADCC,
    "finer_confidence_drop": FinerConfidenceDrop,
    "road_morf": partial(ROAD, order="morf"),
    "road_lerf": partial(ROAD, order="lerf"),
    "road_combined": partial(ROAD, order="combined"),
    "road": partial(ROAD, order="combined"),
    # robustness / sanity (explainer re-runs)
    "noise_consistency": partial(NoiseRobustness, kind="consistency"),
    "noise_responsiveness": partial(NoiseRobustness, kind="responsiveness"),
    "noise_robustness": partial(NoiseRobustness, kind="combined"),
    "equivariance_flip": partial(Equivariance, transform="hflip"),
    "equivariance_shift": partial(Equivariance, transform="shift"),
    "equivariance_scale": partial(Equivariance, transform="scale"),
    "sanity_cascading": CascadingRandomisation,
    # axioms (channel weights)
    "xgrad_conservation": ConservationError,
    "xgrad_sensitivity": SensitivityError,
}
for _name, _factory in _BUILTIN.items():
    register_metric(_name, _factory)
