"""Heatmap pictures: colour maps, overlays on the image, grids of methods x images.

Tensors are RGB, floats in [0, 1]; files are PNG. :func:`overlay` is public as ``sycam.overlay``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..data.images import pil_to_tensor
from ..errors import SycamError
from .text import label_font, wrap_px

#: (top, left, height, width) in image pixels: where a model-input map lies on the image
Box = tuple[float, float, float, float]

#: brightness of the image outside the region the model saw
OUTSIDE = 0.45
#: long side of the pictures in a grid figure (full-resolution images are shrunk to it)
GRID_SIDE = 400


@lru_cache(maxsize=8)
def _lut(cmap: str) -> Tensor:
    import matplotlib  # deferred: matplotlib costs 0.1 s; only for its colour maps, on first use

    colors = matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
    return torch.tensor(colors, dtype=torch.float32)


def colorize(heatmap: Tensor, cmap: str = "jet") -> Tensor:
    """(H, W) in [0, 1] -> (3, H, W) RGB through a matplotlib colour map."""
    idx = (heatmap.detach().float().clamp(0, 1) * 255).round().long().cpu()
    return _lut(cmap)[idx].permute(2, 0, 1)


def as_rgb(image) -> Tensor:
    """A picture as a (3, H, W) float tensor in [0, 1], on the CPU.

    Accepts a tensor (3, H, W) or (1, H, W) or (H, W) in [0, 1] (what :func:`sycam.read_image`
    gives), a numpy array (H, W, C) or (C, H, W) or (H, W), uint8 (0..255) or float (in [0, 1]),
    or a PIL image. Alpha channels are dropped, grey is repeated to RGB.
    """
    if hasattr(image, "mode") and hasattr(image, "size") and not isinstance(image, (Tensor, np.ndarray)):
        return pil_to_tensor(image)             # a PIL image, any mode
    if isinstance(image, np.ndarray):
        if image.dtype == object or not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
            raise SycamError(f"an image array must hold numbers, not {image.dtype}")
        scale = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
        t = torch.from_numpy(np.array(image, dtype=np.float32)) / scale      # a copy (read-only arrays)
        if t.dim() == 3 and t.shape[-1] in (1, 3, 4) and t.shape[0] not in (1, 3, 4):
            t = t.permute(2, 0, 1)              # HWC -> CHW
    elif isinstance(image, Tensor):
        t = image.detach().float().cpu()
    else:
        raise SycamError(f"an image is a (3, H, W) tensor, a numpy array or a PIL image, not {type(image).__name__}")
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise SycamError(f"an image is (3, H, W) or (H, W, 3) (or grey), not of shape {tuple(t.shape)}")
    t = t[:3] if t.shape[0] >= 3 else t.expand(3, -1, -1)
    return t.clamp(0, 1)


def as_map(heatmap) -> Tensor:
    """A heatmap (H, W) (or (1, H, W)) tensor or array as a float CPU tensor."""
    t = torch.as_tensor(np.asarray(heatmap) if not isinstance(heatmap, Tensor) else heatmap).detach().float().cpu()
    while t.dim() > 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise SycamError(f"a heatmap is (H, W), not of shape {tuple(t.shape)} (for a batch, pass maps[i])")
    return t


def _resize(t: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) or (C, H, W) bilinearly resized (antialiased when shrinking)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    shrink = size[0] < t.shape[-2] or size[1] < t.shape[-1]
    x = t[None] if t.dim() == 3 else t[None, None]
    y = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return y[0] if t.dim() == 3 else y[0, 0]


def place(heatmap: Tensor, size: tuple[int, int], box: Box | None = None) -> tuple[Tensor, Tensor]:
    """The heatmap on an image of ``size`` (H, W): (map (H, W), covered (H, W) bool).

    Without ``box`` the map covers the whole image (resized to it); with ``box`` = (top, left,
    height, width) in image pixels it covers that region and is 0 (not covered) elsewhere.
    """
    h, w = size
    if box is None:
        return _resize(heatmap, (h, w)), torch.ones(h, w, dtype=torch.bool)
    top, left, bh, bw = box
    y0, x0 = int(round(top)), int(round(left))
    y1, x1 = int(round(top + bh)), int(round(left + bw))
    if y1 <= y0 or x1 <= x0:
        raise SycamError(f"empty box {box}")
    scaled = _resize(heatmap, (y1 - y0, x1 - x0))
    out = torch.zeros(h, w)
    covered = torch.zeros(h, w, dtype=torch.bool)
    cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if cy1 > cy0 and cx1 > cx0:
        out[cy0:cy1, cx0:cx1] = scaled[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        covered[cy0:cy1, cx0:cx1] = True
    return out, covered


def overlay(image, heatmap, alpha: float = 0.5, cmap: str = "jet", *, box: Box | None = None,
            label: str | None = None, colorbar: bool = False, path: str | Path | None = None) -> Tensor:
    """A heatmap blended over a picture, at the picture's own resolution.

    ``image``: the picture, (3, H, W) in [0, 1] as :func:`sycam.read_image` gives, a numpy array
    (H, W, 3) or (3, H, W), uint8 or float in [0, 1], or a PIL image. ``heatmap``: one map
    (h, w) in [0, 1], e.g. ``cam(x)[0]``.

    Without ``box`` the heatmap covers the whole picture (resized to it when sizes differ). With
    ``box`` = (top, left, height, width), the region of the picture the model saw, in its pixels
    (``bundle.preprocess.crop_box(image)`` for a resized and centre-cropped input), the heatmap
    is drawn there, the rest of the picture dimmed and the region outlined.

    ``label``: text written in the top-left corner (e.g. the explained class and its
    probability); ``colorbar``: a colour scale (0 low, 1 high) inset at the right edge;
    ``path``: also write the picture there as a PNG. Returns (3, H, W) floats in [0, 1]:
    (1 - alpha) picture + alpha colours.
    """
    rgb = as_rgb(image)
    size = (int(rgb.shape[1]), int(rgb.shape[2]))
    values, covered = place(as_map(heatmap), size, box)
    blend = ((1 - alpha) * rgb + alpha * colorize(values, cmap)).clamp(0, 1)
    out = torch.where(covered, blend, rgb * OUTSIDE)
    if box is not None or label or colorbar:
        out = _annotate(out, box=box, label=label, colorbar=colorbar, cmap=cmap)
    if path is not None:
        save_png(path, out)
    return out


def _fitted(draw, text: str, width: float, size: int):
    """(font, text) no wider than ``width``: a smaller font, then an ellipsis where needed."""
    font = label_font(size)
    while size > 8 and draw.textlength(text, font=font) > width:
        size -= 1
        font = label_font(size)
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return font, text


def _annotate(rgb: Tensor, *, box: Box | None, label: str | None, colorbar: bool, cmap: str) -> Tensor:
    """The crop outline, a colour bar and a label, drawn on the picture (PIL)."""
    h, w = int(rgb.shape[1]), int(rgb.shape[2])
    base = Image.fromarray(to_uint8(rgb)).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    line = max(1, round(min(h, w) / 250))
    size = int(min(max(min(h, w) / 28, 9), 48))
    margin = max(2, size // 3)
    if box is not None:
        top, left, bh, bw = box
        rect = [round(left), round(top), round(left + bw) - 1, round(top + bh) - 1]
        if min(h, w) >= 100:                   # a dark rim, where there is room for it
            draw.rectangle(rect, outline=(0, 0, 0, 255), width=line + 2)
        draw.rectangle(rect, outline=(255, 255, 255, 255), width=line)
    right = w
    if colorbar and h >= 16 and w >= 16:
        bar_w = max(4, round(w / 40))
        y0, y1 = round(h * 0.2), round(h * 0.8)
        font = label_font(max(size - 2, 8))
        text_w = max(draw.textlength(t, font=font) for t in ("0", "1")) if h >= 64 else 0
        x1 = w - margin
        x0 = x1 - bar_w
        panel = [x0 - margin - text_w - (margin if text_w else 0), y0 - margin, w - 1, y1 + margin]
        draw.rectangle(panel, fill=(0, 0, 0, 140))
        lut = (_lut(cmap) * 255).round().byte()
        for y in range(y0, y1):
            c = lut[int(round((y1 - 1 - y) / max(y1 - y0 - 1, 1) * 255))].tolist()
            draw.line([(x0, y), (x1 - 1, y)], fill=(*c, 255))
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255, 255), width=1)
        if text_w:
            draw.text((x0 - margin // 2, y0), "1", font=font, fill=(255, 255, 255, 255), anchor="ra")
            draw.text((x0 - margin // 2, y1), "0", font=font, fill=(255, 255, 255, 255), anchor="rd")
        right = panel[0]
    if label and w >= 16 and h >= 12:
        font, text = _fitted(draw, label, right - 3 * margin, size)
        x, y = margin, margin
        text_left, text_top, text_right, text_bottom = draw.textbbox((x, y), text, font=font)
        pad = margin // 2
        draw.rectangle([text_left - pad, text_top - pad, text_right + pad, text_bottom + pad], fill=(0, 0, 0, 160))
        draw.text((x, y), text, font=font, fill=(255, 255, 255, 255))
    out = Image.alpha_composite(base, layer).convert("RGB")
    return torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255


def to_uint8(rgb: Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def save_png(path: str | Path, rgb: Tensor) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(rgb)).save(path)
    return path


def _thumbnail(image: Tensor, crop: Box | None, side: int = GRID_SIDE) -> tuple[Tensor, Box | None]:
    """The image shrunk to at most ``side`` pixels on its long side, with its crop box scaled alike."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return image, crop
    small = _resize(image.float().cpu(), (max(1, round(h * scale)), max(1, round(w * scale))))
    sy, sx = small.shape[-2] / h, small.shape[-1] / w
    return small, None if crop is None else (crop[0] * sy, crop[1] * sx, crop[2] * sy, crop[3] * sx)


#: height of a line of label text, in multiples of its font size
LINE_SPACING = 1.25


def grid_label_lines(text: str, points: float, inches: float, dpi: int = 100) -> list[str]:
    """``text`` wrapped, in full, to lines of ``points``-pt DejaVu Sans (matplotlib's font) no
    longer than ``inches``: broken at spaces, else after ``/ _ - , .``, else anywhere."""
    return wrap_px(text, label_font(max(1, round(points * dpi / 72))), max(1, int(inches * dpi)))


def save_grid(path: str | Path, images: Tensor | Sequence[Tensor], maps: Mapping[str, Tensor | Sequence[Tensor]], *,
              row_titles: Sequence[str] = (), alpha: float = 0.5, cmap: str = "jet",
              title: str | None = None, tile: float = 2.0, crops: Sequence[Box | None] | None = None,
              colorbar: bool = True) -> Path:
    """One row per image: the image, then each method's overlay (columns titled by method).

    ``images``: a (n, 3, H, W) batch or n pictures of any sizes; ``maps[method][i]``: image i's
    map, covering the whole picture or, with ``crops[i]`` = (top, left, height, width), that
    region of it (outlined). Every label is shown in full: row titles are wrapped to the row's
    height, column titles to the column's width, the title to the figure's, and the figure grows
    by the room the wrapped lines take; a colour bar is added.
    """
    import matplotlib  # deferred: matplotlib (pyplot: 0.5 s) loads only when a grid is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after use("Agg"), which must come first

    dpi = 100
    names = list(maps)
    n, cols = len(images), len(names) + 1
    rows_text = [grid_label_lines(row_titles[i], 7, tile * 0.92, dpi) if i < len(row_titles) and row_titles[i] else []
                 for i in range(n)]                                     # along the row's height
    cols_text = [grid_label_lines(name, 8, tile * 0.95, dpi) for name in ["image", *names]]
    width = tile * cols + (0.5 if colorbar else 0)
    side = max(map(len, rows_text), default=0) * 7 * LINE_SPACING / 72      # inches the row titles take
    top = max(map(len, cols_text), default=0) * 8 * LINE_SPACING / 72
    title_text = grid_label_lines(title, 10, width + side - 0.2, dpi) if title else []
    head = len(title_text) * 10 * LINE_SPACING / 72 + (0.15 if title else 0)
    fig, axes = plt.subplots(n, cols, figsize=(width + side, tile * n + top + head), dpi=dpi,
                             squeeze=False, layout="constrained")
    for i in range(n):
        picture, crop = _thumbnail(images[i].cpu(), crops[i] if crops is not None else None)
        axes[i, 0].imshow(to_uint8(picture.clamp(0, 1)))
        if rows_text[i]:
            axes[i, 0].set_ylabel("\n".join(rows_text[i]), fontsize=7)
        for j, name in enumerate(names, start=1):
            axes[i, j].imshow(to_uint8(overlay(picture, maps[name][i], alpha, cmap, box=crop)))
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for j, lines in enumerate(cols_text):
        axes[0, j].set_title("\n".join(lines), fontsize=8)
    if colorbar:
        # deferred: with pyplot, above
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes[:, -1].tolist(), fraction=0.05,
                           shrink=0.8, pad=0.02)
        bar.set_label("heatmap (0 low, 1 high)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle("\n".join(title_text), fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
