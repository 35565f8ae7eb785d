"""Decoding image and mask files into tensors (PIL underneath).

Images become (3,H,W) float32 in [0,1]: 8-bit modes (grey, palette, CMYK, YCbCr, ...)
are converted to RGB, alpha is dropped; 16-bit grey (``I;16*``, or ``I`` holding 16-bit
values) is scaled by 65535, wider integers by 2**32-1, float (``F``) images are taken as
[0,1] when they fit, else scaled by the smallest of 255 / 65535 that holds them. Pixels
are taken as stored, without EXIF rotation, because annotation boxes refer to the stored
pixel grid. Mask files become (H,W) bool: the alpha channel if the file has one, else the
grey level, True above half its range (or above 0 for 0/1-valued masks).

**Size budget**: an image may have at most :data:`MAX_PIXELS` pixels and a long side at
most :data:`MAX_ASPECT` times its short side (models resize the short side, so a thin
strip becomes a huge tensor); both are checked from the file header before decoding, and
can be raised with the environment variables ``SYCAM_MAX_PIXELS`` / ``SYCAM_MAX_ASPECT``
or the ``max_pixels`` / ``max_aspect`` arguments. Unreadable, truncated or oversized
files raise :class:`~sycam.errors.DataError` with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch import Tensor

from ..errors import DataError

MAX_PIXELS = 50_000_000     # 50 MP: an 8000x6000 photo fits, 8000x8000 does not (SYCAM_MAX_PIXELS)
MAX_ASPECT = 32             # long side / short side (SYCAM_MAX_ASPECT)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _limit(value: float | None, env: str, default: float) -> float:
    if value is not None:
        return value
    text = os.environ.get(env)
    if text is None:
        return default
    try:
        limit = float(text)
    except ValueError:
        limit = 0
    if not limit > 0:
        raise DataError(f"{env}={text!r} must be a positive number")
    return limit


def check_size(size: tuple[int, int], where: str | Path = "image", *, max_pixels: int | None = None,
               max_aspect: float | None = None) -> None:
    """DataError if a (W, H) image is over the pixel budget or more elongated than the aspect limit."""
    w, h = size
    max_pixels = _limit(max_pixels, "SYCAM_MAX_PIXELS", MAX_PIXELS)
    max_aspect = _limit(max_aspect, "SYCAM_MAX_ASPECT", MAX_ASPECT)
    if w < 1 or h < 1:
        raise DataError(f"{where}: empty image ({w}x{h})")
    if w * h > max_pixels:
        raise DataError(f"{where}: {w}x{h} is {w * h / 1e6:.1f} megapixels, over the budget of "
                        f"{max_pixels / 1e6:g} megapixels (set SYCAM_MAX_PIXELS to allow more)")
    if max(w, h) > max_aspect * min(w, h):
        raise DataError(f"{where}: {w}x{h} has an aspect ratio of {max(w, h) / min(w, h):.0f}:1, over the "
                        f"limit of {max_aspect:g}:1 (set SYCAM_MAX_ASPECT to allow more)")


def open_image(path: str | Path, *, max_pixels: int | None = None, max_aspect: float | None = None) -> Image.Image:
    """A fully decoded PIL image; DataError (with the reason) if unreadable, truncated or too large.

    The size budget (see the module docstring) is checked from the header, before decoding.
    """
    try:
        with Image.open(path) as im:
            check_size(im.size, path, max_pixels=max_pixels, max_aspect=max_aspect)
            im.load()
            return im.copy()
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from err


def _full_scale(im: Image.Image, arr: np.ndarray) -> float:
    """The value that means 'white' in a single-channel image of mode I;16*, I or F."""
    if im.mode in _SIXTEEN_BIT:
        return 65535.0
    top = float(arr.max()) if arr.size else 0.0
    if im.mode == "I":
        return 65535.0 if top <= 65535 else 2.0 ** 32 - 1
    return next((s for s in (1.0, 255.0, 65535.0) if top <= s), top)   # F


def _grey_values(im: Image.Image) -> np.ndarray | None:
    """(H,W) float32 values of a 16-bit, 32-bit or float grey image (non-finite -> 0); None for other modes."""
    if im.mode not in (*_SIXTEEN_BIT, "I", "F"):
        return None
    return np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _wide_grey(im: Image.Image) -> np.ndarray | None:
    """(H,W) float32 in [0,1] for 16-bit, 32-bit and float grey images; None for the other modes."""
    arr = _grey_values(im)
    if arr is None:
        return None
    return np.clip(arr / _full_scale(im, arr), 0.0, 1.0)


def pil_to_tensor(im: Image.Image) -> Tensor:
    """(3,H,W) float32 in [0,1] from a PIL image of any mode (see the module docstring)."""
    grey = _wide_grey(im)
    if grey is not None:
        return torch.from_numpy(grey).expand(3, -1, -1).contiguous()
    try:
        rgb = im if im.mode == "RGB" else im.convert("RGB")
    except ValueError as err:
        raise DataError(f"unsupported image mode {im.mode} ({err})") from err
    pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8))      # uint8 until the last step: 4x less memory
    return pixels.permute(2, 0, 1).contiguous().float().div_(255.0)


def read_image(path: str | Path, *, max_pixels: int | None = None, max_aspect: float | None = None) -> Tensor:
    """Read an image file as a (3, H, W) float32 tensor in [0, 1], RGB, at its own size
    (public as ``sycam.read_image``).

    Any PIL mode is read: grey, palette, CMYK, ... become RGB, alpha is dropped, 16-bit grey is
    scaled by 65535; pixels are taken as stored (no EXIF rotation). The size budget
    (``max_pixels``, default 50 megapixels or ``SYCAM_MAX_PIXELS``; ``max_aspect``, long side /
    short side, default 32 or ``SYCAM_MAX_ASPECT``) is checked from the file header before
    decoding. A missing, unreadable, truncated or oversized file raises
    :class:`~sycam.errors.DataError` with the reason.

        image = sycam.read_image("cat.jpg")          # (3, H, W)
        x = bundle.inputs([image])                   # the model's input (resize, crop, normalise)
    """
    im = open_image(path, max_pixels=max_pixels, max_aspect=max_aspect)
    try:
        return pil_to_tensor(im)
    except DataError as err:
        raise DataError(f"{path}: {err}") from err


def pil_to_mask(im: Image.Image) -> Tensor:
    """(H,W) bool from a mask image (alpha channel if any, else grey level)."""
    full = 255.0
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        arr = np.asarray(im.convert("RGBA").getchannel("A"))
    elif im.mode == "P":
        arr = np.asarray(im)  # palette index: 0 is background
    elif (values := _grey_values(im)) is not None:
        arr, full = values, _full_scale(im, values)
    else:
        arr = np.asarray(im.convert("L"))
    threshold = full / 2 if arr.max() > 1 else 0
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
