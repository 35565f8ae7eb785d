"""Channel-score terminals: perturbation evidence computed once per (images, layer, target).

Each provider turns the captured activations A (b,k,h,w) into one weight per image and
channel (b,k) by running the model on perturbed inputs (:mod:`sycam.evidence.perturbation`)
or, for ``ablation``, only the part of the model after the layer
(:mod:`sycam.evidence.split`). The scores use the CAM's own target, so the Score-CAM seed
(target: softmax probability) gets the paper's f(x ⊙ M_k). Settings come from
:class:`~sycam.evidence.options.EvidenceOptions`: ``score`` is S(x ⊙ M_k) for
``score_variant="official"`` and softmax_k S(x ⊙ M_k) for "torchcam" / "gradcam" (the
peers' weights, softmax included); ``ablation`` sets A_k to ``ablation_value``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .layers import LayerRef
from .options import EvidenceOptions
from .perturbation import ablation_scores, is_cam, mi_scores, score_cam, ss_cam
from .split import split_model


@dataclass
class Context:
    model: nn.Module
    x: Tensor
    layer: LayerRef
    A: Tensor
    target: Any
    output: Any
    options: EvidenceOptions


def _score(c: Context) -> Tensor:
    o = c.options
    return score_cam(c.model, c.x, c.A, c.target, variant=o.score_variant, max_batch=o.max_batch,
                     skip_constant=o.skip_constant, top_k=o.top_k, output=c.output)


def _score_ss(c: Context) -> Tensor:
    o = c.options
    return ss_cam(c.model, c.x, c.A, c.target, n=o.ss_n, sigma=o.ss_sigma, noise=o.ss_noise,
                  max_batch=o.max_batch, skip_constant=o.skip_constant, top_k=o.top_k, output=c.output,
                  generator=torch.Generator(device=c.x.device).manual_seed(o.seed))


def _score_is(c: Context) -> Tensor:
    o = c.options
    return is_cam(c.model, c.x, c.A, c.target, n=o.is_n, schedule=o.is_schedule, max_batch=o.max_batch,
                  skip_constant=o.skip_constant, top_k=o.top_k, output=c.output, softmax=False)


def _ablation(c: Context) -> Tensor:
    suffix = split_model(c.model, c.layer.name, c.x, check=False)
    return ablation_scores(suffix, c.A.to(c.x.device), c.target, value=c.options.ablation_value,
                           max_batch=c.options.suffix_rows(), output=c.output)


def _mi(c: Context) -> Tensor:
    return mi_scores(c.x, c.A, bins=c.options.mi_bins, max_batch=c.options.suffix_rows())


PROVIDERS: dict[str, Callable[[Context], Tensor]] = {
    "score": _score, "score_ss": _score_ss, "score_is": _score_is, "ablation": _ablation, "mi": _mi,
}
