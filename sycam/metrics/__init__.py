"""Metrics that score candidate heatmaps, batched over images and candidates.

``get_metric(name, **params)(maps, batch, model_fn=..., explainer=...) -> (b,) | (n,b)``; see
:mod:`sycam.metrics.base` for the interface and :func:`available_metrics` for the names.
"""
from .aggregate import Summary, class_mean, per_class, summarise, t_quantile
from .axioms import AxiomInput, ConservationError, SensitivityError
from .base import (Cost, Direction, FunctionMetric, Metric, MetricError, Resources, define_metric,
                   input_affine, target_score)
from .complexity import Complexity, Gini
from .faithfulness import (ADCC, AverageDrop, AverageIncrease, Deletion, FinerConfidenceDrop, Insertion,
                           rise_blur, rise_kernel)
from .localisation import (BestIoU, EnergyPointingGame, GroundTruthAUC, GroundTruthPearson, IoU,
                           PointingGame, dilate_disk)
from .maps import LowResMaps
from .registry import available_metrics, get_metric, metric_table, register_metric
from .road import ROAD, linear_impute, noisy_linear_impute, removal_masks, spsolve_impute
from .robustness import NOISES, Equivariance, NoiseRobustness
from .sanity import CascadingRandomisation, parameter_layers
from .similarity import SIMILARITIES, cosine, get_similarity, pearson, spearman, ssim, top_iou

from . import detection  # noqa: E402,F401  (registers the det_* metrics for object detectors)

__all__ = [
    "ADCC", "AverageDrop", "AverageIncrease", "AxiomInput", "BestIoU", "CascadingRandomisation", "Complexity",
    "ConservationError", "Cost", "Deletion", "Direction", "EnergyPointingGame", "Equivariance",
    "FinerConfidenceDrop", "FunctionMetric", "Gini", "GroundTruthAUC", "GroundTruthPearson", "Insertion", "IoU",
    "LowResMaps", "Metric", "MetricError", "NOISES", "NoiseRobustness", "PointingGame", "ROAD", "Resources",
    "SIMILARITIES", "SensitivityError", "Summary", "available_metrics", "class_mean", "cosine", "define_metric",
    "dilate_disk", "get_metric", "get_similarity", "input_affine", "linear_impute", "metric_table",
    "noisy_linear_impute", "parameter_layers", "pearson", "per_class", "register_metric", "removal_masks",
    "rise_blur", "rise_kernel", "spearman", "spsolve_impute", "ssim", "summarise", "t_quantile", "target_score",
    "top_iou",
]
