"""How many inputs go through the model in one call, by device.

On a CPU large batches are slower *per image*: the activations of a batch of 32 no longer fit
in the caches. ``benchmarks/model_rows.py`` measured (1 thread, 2-core EPYC;
``benchmarks/results/model_rows.txt``) EfficientNet-Lite0 at 40 ms per image with 4 rows per
call and 92 ms with 32; resnet50 161 vs 222 ms; resnet18 and vgg16 within 1.2x of flat.
Accelerators want large batches to fill the device. Every "rows per model call" setting of
sycam (metrics' ``batch_size``, evidence ``max_batch``, images per gradient capture) defaults
to None, which means :func:`model_rows` of the tensors' device; an explicit number always
wins. Passes through the model's suffix only (Ablation-CAM, MI-CAM's histograms, exact second
derivatives) use ``SUFFIX_ROWS``.
"""
from __future__ import annotations

import torch

CPU_ROWS = 4
ACCELERATOR_ROWS = 32
SUFFIX_ROWS = 64       # rows per call through only the part of the model after a layer (cheap rows)


def model_rows(device: torch.device | str, requested: int | None = None) -> int:
    """``requested`` if given, else the default rows per model call on ``device``."""
    if requested is not None:
        return int(requested)
    return CPU_ROWS if torch.device(device).type == "cpu" else ACCELERATOR_ROWS
