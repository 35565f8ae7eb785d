"""Heatmap pictures: colour maps, overlays on the image, grids of methods x images.

Pure functions of tensors (RGB order, floats in [0, 1]); files are PNG.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@lru_cache(maxsize=8)
def _lut(cmap: str) -> Tensor:
    import matplotlib

    colors = matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
    return torch.tensor(colors, dtype=torch.float32)


def colorize(heatmap: Tensor, cmap: str = "jet") -> Tensor:
    """(H, W) in [0, 1] -> (3, H, W) RGB through a matplotlib colour map."""
    idx = (heatmap.detach().float().clamp(0, 1) * 255).round().long().cpu()
    return _lut(cmap)[idx].permute(2, 0, 1)


def overlay(image: Tensor, heatmap: Tensor, alpha: float = 0.5, cmap: str = "jet") -> Tensor:
    """Blend a heatmap over an RGB image (3, H, W) in [0, 1]: (1 - alpha) image + alpha colours."""
    if image.shape[-2:] != heatmap.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape[-2:])} and heatmap {tuple(heatmap.shape[-2:])} differ in size")
    return ((1 - alpha) * image.detach().float().cpu().clamp(0, 1) + alpha * colorize(heatmap, cmap)).clamp(0, 1)


def to_uint8(rgb: Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def save_png(path: str | Path, rgb: Tensor) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(rgb)).save(path)
    return path


def save_grid(path: str | Path, images: Tensor, maps: Mapping[str, Tensor], *,
              row_titles: Sequence[str] = (), alpha: float = 0.5, cmap: str = "jet",
              title: str | None = None, tile: float = 2.0) -> Path:
    """One row per image: the image, then each method's overlay (columns titled by method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    n, cols = len(images), len(names) + 1
    fig, axes = plt.subplots(n, cols, figsize=(tile * cols, tile * n + (0.4 if title else 0)), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_uint8(images[i].cpu()))
        axes[i, 0].set_ylabel(row_titles[i] if i < len(row_titles) else "", fontsize=7)
        for j, name in enumerate(names, start=1):
            axes[i, j].imshow(to_uint8(overlay(images[i], maps[name][i], alpha, cmap)))
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for j, name in enumerate(["image", *names]):
        axes[0, j].set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
