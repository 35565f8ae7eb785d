"""Metrics by name: ``get_metric("pointing_game", tolerance=15)``.

A registry entry is a factory ``(**params) -> Metric``; :func:`register_metric` adds one
(a user's :class:`~sycam.metrics.base.Metric` subclass, or a :func:`define_metric` function).
Unknown names raise :class:`~sycam.errors.UnknownNameError` with close matches.

:func:`describe_metric` is the one source of a metric's definition, direction, parameters and
cost: the built-in ones are also written, by ``python -m sycam.metrics.catalogue``, to the
torch-free :mod:`sycam.metrics.catalogue_data` that ``sycam metrics`` and
:func:`sycam.metrics.describe` read.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from torch import Tensor

from ..errors import SycamError, UnknownNameError
from .axioms import ConservationError, SensitivityError
from .base import Cost, Direction, FunctionMetric, Metric
from .complexity import Complexity, Gini
from .detection import DETECTION_METRICS
from .faithfulness import ADCC, AverageDrop, AverageIncrease, Deletion, FinerConfidenceDrop, Insertion
from .localisation import BestIoU, EnergyPointingGame, GroundTruthAUC, GroundTruthPearson, IoU, PointingGame
from .road import ROAD
from .robustness import Equivariance, NoiseRobustness
from .sanity import CascadingRandomisation
from .target import TargetPearson

Factory = Callable[..., Metric]
_REGISTRY: dict[str, Factory] = {}
_DEFINITIONS: dict[str, str] = {}


def _named(name: str, factory: Factory) -> Factory:
    def make(**params: Any) -> Metric:
        m = factory(**params)
        m.name = name
        return m

    make.__doc__ = getattr(factory, "__doc__", None) or getattr(getattr(factory, "func", None), "__doc__", None)
    make.factory = factory
    return make


def register_metric(name: str, factory: Factory | type[Metric], overwrite: bool = False,
                    definition: str | None = None) -> None:
    """Add a metric factory (a Metric subclass or any ``(**params) -> Metric``) under ``name``.

    ``definition``: one line saying what the metric computes (``sycam metrics`` shows it);
    default: the first paragraph of the metric class's docstring.
    """
    if not name or not name.replace("_", "").isalnum():
        raise SycamError(f"metric names are identifiers (letters, digits, _), got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise SycamError(f"metric {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = _named(name, factory)
    _DEFINITIONS.pop(name, None)
    if definition:
        _DEFINITIONS[name] = " ".join(definition.split())


#: the cost of a metric defined without one: no model work beyond the maps (frozen, so one instance serves all)
NO_COST = Cost()


def define_metric(name: str, direction: Direction | str = "higher", needs: Iterable[str] = (),
                  cost: Cost = NO_COST, register: bool = False) -> Callable[[Callable[..., Tensor]], FunctionMetric]:
    """Decorator turning ``fn(maps, batch, **callables) -> (n,b)`` into a :class:`~sycam.metrics.base.Metric`.

    With ``register=True`` the metric is also added to the registry under ``name``.
    """

    def wrap(fn: Callable[..., Tensor]) -> FunctionMetric:
        if register:
            register_metric(name, lambda: FunctionMetric(fn, name, direction, needs, cost))
        return FunctionMetric(fn, name, direction, needs, cost)

    return wrap


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
    """:func:`describe_metric` of every registered metric, by name."""
    return [describe_metric(name) for name in available_metrics()]


def describe_metric(name: str) -> dict[str, Any]:
    """What ``name`` computes, from its registration and a default instance: ``name``,
    ``definition`` (one line), ``direction`` (``higher`` / ``lower`` is better), ``params``
    (parameter -> default, those ``--metric name:param=value`` can set), ``fixed`` (parameters
    the name fixes, e.g. ``order`` of ``road_morf``), cost per map and image (``forwards``,
    ``shared_forwards``, ``explainer_calls``, ``note``) and ``needs``."""
    m = get_metric(name)
    factory = getattr(_REGISTRY[name], "factory", _REGISTRY[name])
    params, fixed = _parameters(factory, m)
    return {"name": name, "definition": _DEFINITIONS.get(name) or _summary(type(m).__doc__),
            "direction": m.direction.value, "params": params, "fixed": fixed,
            "forwards": float(m.cost.forwards), "shared_forwards": float(m.cost.shared_forwards),
            "explainer_calls": float(m.cost.explainer_calls), "note": m.cost.note, "needs": sorted(m.needs)}


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring on one line, without reST markup."""
    first = inspect.cleandoc(doc or "").split("\n\n")[0]
    return re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", lambda g: g[1] or g[2], " ".join(first.split()))


def _plain(value: Any) -> Any:
    """A default as a Python literal (numbers, strings, None, tuples of them), else its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return tuple(value)
    return repr(value)


def _parameters(factory: Any, metric: Metric) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settable parameters with defaults, parameters fixed by the registered name).

    A ``partial`` fixes its keywords. A default of None usually means "computed": where the
    instance stores a plain value under the parameter's name, that value is shown (Deletion's
    ``substrate=None`` is ``zero``, Equivariance's ``amount=None`` the transform's amount). A
    factory taking only ``**params`` (a lambda) passes them to the metric's class and may set some
    itself: its parameters are the class's, with the values the instance stores.
    """
    fixed = dict(getattr(factory, "keywords", None) or {})
    target = getattr(factory, "func", factory)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, {k: _plain(v) for k, v in fixed.items()}
    opaque = {p.kind for p in sig.parameters.values()} == {inspect.Parameter.VAR_KEYWORD}
    if opaque:                                           # lambda **p: Class(**{..., **p})
        sig = inspect.signature(type(metric))
    params = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in fixed or p.default is p.empty:
            continue
        value = p.default
        if opaque or value is None:
            stored = getattr(metric, p.name, None)
            if isinstance(stored, (bool, int, float, str)):
                value = stored
        params[p.name] = _plain(value)
    return params, {k: _plain(v) for k, v in fixed.items()}


# name -> (factory, one-line definition: what `sycam metrics` and the reports say the metric computes)
_BUILTIN: dict[str, tuple[Factory, str]] = {
    # localisation (forward-free)
    "pointing_game": (PointingGame, "1 if the map's maximum lies within `tolerance` px of the object (its mask, "
                                    "else its box), else 0; the mean is the share of hits"),
    "energy_pointing_game": (EnergyPointingGame, "share of the map's energy (sum of its values) inside the object's "
                                                 "box (else its mask)"),
    "iou": (IoU, "IoU of the map thresholded at `threshold` with the object region (its mask, else its box)"),
    "iou_mask": (partial(IoU, region="mask"), "IoU of the map thresholded at `threshold` with the object's mask"),
    "iou_box": (partial(IoU, region="box"), "IoU of the map thresholded at `threshold` with the object's box"),
    "best_iou": (BestIoU, "best IoU of the thresholded map with the object region over thresholds "
                          "0.05, 0.10, ..., 0.95"),
    "gt_pearson": (GroundTruthPearson, "Pearson correlation between the map and the binary object mask, "
                                       "pixels as samples"),
    "gt_auc": (GroundTruthAUC, "ROC AUC of the map as a classifier of object pixels against background pixels"),
    "complexity": (Complexity, "mean value of the map, ||L||_1 / (H W): how much of the image it highlights"),
    "gini": (Gini, "sparseness: Gini index of the map's values (0 for a uniform map, near 1 for one hot pixel)"),
    # faithfulness (model forwards)
    "insertion": (Insertion, "area under the target probability as the image's pixels, most relevant first, "
                             "replace a blurred copy (RISE)"),
    "deletion": (Deletion, "area under the target probability as the most relevant pixels are removed first "
                           "(set to the substrate; RISE)"),
    "average_drop": (AverageDrop, "drop of the target probability, in %, from the image to the image multiplied "
                                  "by the map: 100 max(0, Y - O) / Y"),
    "average_increase": (AverageIncrease, "100 if the image multiplied by the map is more confident of the target "
                                          "than the image, else 0 (the mean is a share of images, in %)"),
    "adcc": (ADCC, "harmonic mean of coherency, 1 - complexity and 1 - average drop (Poppi et al. 2021)"),
    "finer_confidence_drop": (FinerConfidenceDrop, "fall of the target's probability relative to its `k` closest "
                                                   "classes when the map's top `fraction` of pixels is removed "
                                                   "(Finer-CAM)"),
    "road_morf": (partial(ROAD, order="morf"), "ROAD, most relevant first: mean change of the target probability "
                                               "when the map's top `fractions` of pixels are imputed away"),
    "road_lerf": (partial(ROAD, order="lerf"), "ROAD, least relevant first: mean change of the target probability "
                                               "when the map's bottom `fractions` of pixels are imputed away"),
    "road_combined": (partial(ROAD, order="combined"), "ROAD combined: (LeRF - MoRF) / 2, averaged over the "
                                                       "removed `fractions`"),
    "road": (partial(ROAD, order="combined"), "ROAD combined (= road_combined): (LeRF - MoRF) / 2, averaged over "
                                              "the removed `fractions`"),
    # robustness / sanity (explainer re-runs)
    "noise_consistency": (partial(NoiseRobustness, kind="consistency"),
                          "mean similarity of the map to the maps of noisy copies of the image on which the "
                          "prediction is unchanged"),
    "noise_responsiveness": (partial(NoiseRobustness, kind="responsiveness"),
                             "mean dissimilarity (1 - similarity) of the map to the maps of noisy copies on which "
                             "the prediction changed"),
    "noise_robustness": (partial(NoiseRobustness, kind="combined"),
                         "mean over noisy copies of the similarity where the prediction is unchanged and the "
                         "dissimilarity where it changed"),
    "equivariance_flip": (partial(Equivariance, transform="hflip"),
                          "similarity between the map of the flipped image and the flipped map"),
    "equivariance_shift": (partial(Equivariance, transform="shift"),
                           "similarity between the map of the shifted image and the shifted map, on the overlap"),
    "equivariance_scale": (partial(Equivariance, transform="scale"),
                           "similarity between the map of the zoomed image and the zoomed map"),
    "sanity_cascading": (CascadingRandomisation, "similarity of the map to the maps of progressively randomised "
                                                 "copies of the model (low: the map depends on the weights)"),
    # axioms (channel weights)
    "xgrad_conservation": (ConservationError, "XGrad-CAM's conservation error |S - sum_k sum_hw W_k A_k| / |S| "
                                              "of the channel weights W"),
    "xgrad_sensitivity": (SensitivityError, "XGrad-CAM's sensitivity error sum_k |S - S(A without channel k) - "
                                            "sum_hw W_k A_k| / |S|"),
    # rediscovery (reference maps of a known method, sycam.search.target.reference_maps)
    "target_pearson": (TargetPearson, "Pearson correlation of the map with the reference map of its image "
                                      "(given as reference=, images=, labels=)"),
}
for _name, (_factory, _definition) in _BUILTIN.items():
    register_metric(_name, _factory, definition=_definition)
for _name, _factory in DETECTION_METRICS.items():
    register_metric(_name, _factory)

#: the metrics sycam itself registers (described, torch-free, in :mod:`sycam.metrics.catalogue_data`)
BUILTIN: frozenset[str] = frozenset(_REGISTRY)
