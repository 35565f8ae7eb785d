"""Decoding image and mask files into tensors (PIL underneath).

Images become (3,H,W) float32 in [0,1] (grey and palette images are converted to RGB,
alpha is dropped); pixels are taken as stored, without EXIF rotation, because
annotation boxes refer to the stored pixel grid. Mask files become (H,W) bool: the
alpha channel if the file has one, else the grey level, True where it is above 127 (or
above 0 for 0/1-valued masks). Unreadable files raise :class:`~sycam.errors.DataError`
with the reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch import Tensor

from ..errors import DataError


def open_image(path: str | Path) -> Image.Image:
    """A fully decoded PIL image; DataError (with the reason) if unreadable or truncated."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from err


def pil_to_tensor(im: Image.Image) -> Tensor:
    """(3,H,W) float32 in [0,1] from any PIL image."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | Path) -> Tensor:
    """(3,H,W) float32 in [0,1]."""
    return pil_to_tensor(open_image(path))


def pil_to_mask(im: Image.Image) -> Tensor:
    """(H,W) bool from a mask image (alpha channel if any, else grey level)."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        arr = np.asarray(im.convert("RGBA").getchannel("A"))
    elif im.mode == "P":
        arr = np.asarray(im)  # palette index: 0 is background
    else:
        arr = np.asarray(im.convert("L"))
    threshold = 127 if arr.max() > 1 else 0
    return torch.from_numpy(arr > threshold)


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> Tensor:
    """(H,W) bool mask from a file; DataError if unreadable or not of ``size`` (H,W)."""
    mask = pil_to_mask(open_image(path))
    if size is not None and tuple(mask.shape) != tuple(size):
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {size[1]}x{size[0]}")
    return mask


def polygon_mask(polygons: list[list[float]], size: tuple[int, int]) -> Tensor:
    """(H,W) bool: the union of polygons given as flat ``[x0, y0, x1, y1, ...]`` lists."""
    h, w = size
    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise DataError(f"polygon needs at least 3 (x, y) points, got {len(poly)} numbers")
        draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly), 2)], fill=1)
    return torch.from_numpy(np.asarray(canvas, dtype=bool).copy())


def rle_mask(counts: list[int], size: tuple[int, int]) -> Tensor:
    """(H,W) bool from COCO's uncompressed run-length encoding (column-major, 0-runs first)."""
    h, w = size
    if sum(counts) != h * w:
        raise DataError(f"RLE counts sum to {sum(counts)}, expected {h}*{w}")
    flat = np.zeros(h * w, dtype=bool)
    pos = 0
    for i, n in enumerate(counts):
        if i % 2:
            flat[pos:pos + n] = True
        pos += n
    return torch.from_numpy(flat.reshape(w, h).T.copy())
