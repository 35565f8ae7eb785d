"""Metrics that score candidate heatmaps, batched over images and candidates.

``get_metric(name, **params)(maps, batch, model_fn=..., explainer=...) -> (b,) | (n,b)``; see
:mod:`sycam.metrics.base` for the interface and :func:`available_metrics` for the names.
:func:`describe` (``name -> dict(name, definition, direction, params, ...)``) and
:func:`describe_all` need no torch. Every name loads on first use (PEP 562), so that
``sycam metrics`` and the command line's help start without torch.
"""
from __future__ import annotations

import importlib

#: module -> the public names it defines, imported when one of them is first read
_MODULES: dict[str, tuple[str, ...]] = {
    "aggregate": ("Summary", "class_mean", "per_class", "summarise", "t_quantile"),
    "catalogue": ("describe", "describe_all", "params_text"),         # torch-free
    "axioms": ("AxiomInput", "ConservationError", "SensitivityError"),
    "base": ("Cost", "Direction", "FunctionMetric", "Metric", "MetricError", "Resources", "input_affine",
             "target_score"),
    "complexity": ("Complexity", "Gini"),
    "faithfulness": ("ADCC", "AverageDrop", "AverageIncrease", "Deletion", "FinerConfidenceDrop", "Insertion",
                     "rise_blur", "rise_kernel"),
    "localisation": ("BestIoU", "EnergyPointingGame", "GroundTruthAUC", "GroundTruthPearson", "IoU", "PointingGame",
                     "dilate_disk"),
    "registry": ("available_metrics", "define_metric", "describe_metric", "get_metric", "metric_table",
                 "register_metric"),
    "road": ("ROAD", "linear_impute", "noisy_linear_impute", "removal_masks", "spsolve_impute"),
    "robustness": ("NOISES", "Equivariance", "NoiseRobustness"),
    "sanity": ("CascadingRandomisation", "parameter_layers"),
    "similarity": ("SIMILARITIES", "cosine", "get_similarity", "pearson", "spearman", "ssim", "top_iou"),
    "target": ("TargetPearson", "lowres_pearson"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value          # later reads skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
