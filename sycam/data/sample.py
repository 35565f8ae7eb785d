"""Annotated images at their original resolution, before any model geometry.

A :class:`Sample` is one image (3,H,W) float in [0,1] with its annotated objects; an
:class:`AnnotatedObject` has a class index, a box ``(x0, y0, x1, y1)`` in pixels (edges:
``x1``/``y1`` exclusive, so a 1-pixel box at column 5 is ``(5, y, 6, y+1)``) and
optionally an exact (H,W) bool mask. An :class:`ImageSet` is a list of samples plus the
list of images that were skipped, with the reason. :func:`sycam.data.to_batch` turns
samples into the model-space :class:`~sycam.data.Batch`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import DataError

Box = tuple[float, float, float, float]


class DataWarning(UserWarning):
    """Something in the input data was repaired or dropped (clipped box, skipped image)."""


def warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)


@dataclass
class AnnotatedObject:
    label: int | None        # class index; None: annotated (a distractor) but never explained
    box: Box                 # x0, y0, x1, y1 in pixels, x1/y1 exclusive
    mask: Tensor | None = None  # (H,W) bool exact mask, if known
    name: str = ""           # free text (e.g. "dog", the stamp file)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass
class Sample:
    image: Tensor                       # (3,H,W) float in [0,1], original resolution
    objects: list[AnnotatedObject]
    name: str                           # unique within its set (file name, "composite-0003", ...)
    source: str = ""                    # where it came from (path, package, generator)
    meta: dict = field(default_factory=dict)  # provenance details (e.g. a composite's layout)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def items(self) -> list[tuple["Sample", int]]:
        """(sample, object index) for the first object of every class in the image.

        Objects of the same class are explained together (see :func:`sycam.data.to_batch`),
        so each class gives one item; objects without a class give none.
        """
        seen: set[int] = set()
        out = []
        for i, o in enumerate(self.objects):
            if o.label is not None and o.label not in seen:
                seen.add(o.label)
                out.append((self, i))
        return out


@dataclass
class ImageSet:
    """Loaded samples, plus ``(image, reason)`` for every image that was skipped."""

    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def items(self) -> list[tuple[Sample, int]]:
        """Every explainable (sample, object index) pair, in order."""
        return [it for s in self.samples for it in s.items()]


def clip_box(box: Box, size: tuple[int, int], where: str = "") -> Box | None:
    """``box`` clipped to an (H,W) image, with a :class:`DataWarning` if it stuck out.

    Returns None (and warns) when nothing of the box is left inside the image.
    """
    h, w = size
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        warn(f"{where}: empty or inverted box {box} dropped")
        return None
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    if not (cx1 > cx0 and cy1 > cy0):
        warn(f"{where}: box {box} lies outside the {w}x{h} image; dropped")
        return None
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        warn(f"{where}: box {box} clipped to the {w}x{h} image")
    return cx0, cy0, cx1, cy1


def mask_box(mask: Tensor) -> Box:
    """Tight box (x1/y1 exclusive) of a non-empty (H,W) bool mask."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        raise DataError("empty mask has no box")
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
