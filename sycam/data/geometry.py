"""From annotated samples to a model-space :class:`~sycam.data.Batch`.

Images, masks and boxes go through the *same* ``Preprocess.geometry`` call (torchvision
v2 dispatches on the tensor type: images are resized with antialiasing, ``Mask`` with
nearest neighbour, ``BoundingBoxes`` by scaling and translating their coordinates, then
clamping to the crop), so a mask pixel, a box and an image pixel refer to the same
place by construction.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import DataError
from .batch import Batch
from .sample import Box, Sample, warn

Item = Sample | tuple[Sample, int]


def transform_boxes(boxes: Tensor, size: tuple[int, int], preprocess) -> Tensor:
    """(n,4) boxes of an (H,W) image -> (n,4) boxes in model space (clamped to the crop)."""
    from torchvision import tv_tensors  # deferred: torchvision costs 1.5 s at import

    bb = tv_tensors.BoundingBoxes(boxes.float().reshape(-1, 4), format="XYXY", canvas_size=size)
    return preprocess.geometry(bb).as_subclass(Tensor).float()


def transform_mask(mask: Tensor, preprocess) -> Tensor:
    """(H,W) bool -> (S,S) bool with nearest-neighbour resizing."""
    from torchvision import tv_tensors  # deferred: torchvision costs 1.5 s at import

    return preprocess.geometry(tv_tensors.Mask(mask[None].to(torch.uint8))).as_subclass(Tensor)[0].bool()


def box_fill(box: Tensor, size: tuple[int, int]) -> Tensor:
    """(H,W) bool of a box, rounded like :attr:`Batch.box_masks`."""
    h, w = size
    x0, y0, x1, y1 = box.round().long().tolist()
    out = torch.zeros(h, w, dtype=torch.bool)
    out[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = True
    return out


def visible_region(preprocess, size: tuple[int, int]) -> Box:
    """The part ``(x0, y0, x1, y1)`` of an (H,W) image that survives ``preprocess.geometry``."""
    h, w = size
    nh, nw = h, w
    if preprocess.resize:
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(preprocess.resize * long / short)
        nh, nw = (preprocess.resize, new_long) if h <= w else (new_long, preprocess.resize)
    s = preprocess.size
    top = int(round((nh - s) / 2.0)) if nh > s else 0
    left = int(round((nw - s) / 2.0)) if nw > s else 0
    sx, sy = nw / w, nh / h
    return (left / sx, top / sy, min(w, (left + s) / sx), min(h, (top + s) / sy))


def _items(items: Iterable[Item]) -> list[tuple[Sample, int]]:
    out = []
    for it in items:
        out.extend(it.items() if isinstance(it, Sample) else [it])
    return out


def to_batch(items: Iterable[Item], preprocess, *, drop_empty: bool = True) -> Batch:
    """A :class:`Batch` explaining one class of one image per row.

    ``items``: samples (each expands to one item per class it contains) or
    ``(sample, object index)`` pairs. Per row: ``labels`` = the object's class; the
    explained object is that object *together with every other object of the same class*
    in the image (a CAM for "orange" may rightly point at any orange): ``masks`` = union of
    their exact masks (filled boxes where no mask is known), ``boxes`` = their transformed
    boxes (n,4), the given object's first; ``other_masks`` = union of the image's objects
    of a *different* class (distractors without a class included). Objects that the crop
    removes entirely are left out; a row whose objects are all gone is dropped with a
    warning (``drop_empty``) or raises :class:`DataError`.
    """
    pairs = _items(items)
    if not pairs:
        raise DataError("no items to put in a batch")
    s = preprocess.size
    cache: dict[int, tuple[Tensor, Tensor, list[Tensor], list[bool]]] = {}
    images, labels, masks, boxes, others, names = [], [], [], [], [], []
    for sample, k in pairs:
        obj = sample.objects[k]
        if obj.label is None:
            raise DataError(f"{sample.name} object {k} has no class to explain")
        if id(sample) not in cache:
            cache[id(sample)] = _transformed(sample, preprocess)
        image, tboxes, tmasks, inside = cache[id(sample)]
        same = [k] + [j for j, o in enumerate(sample.objects) if j != k and o.label == obj.label]
        same = [j for j in same if inside[j]]
        if not same:
            msg = f"{sample.name} object {k}: outside the {s}x{s} crop"
            if not drop_empty:
                raise DataError(msg)
            warn(msg + "; dropped")
            continue
        mask = torch.zeros(s, s, dtype=torch.bool)
        for j in same:
            mask |= tmasks[j]
        other = torch.zeros(s, s, dtype=torch.bool)
        for j, o in enumerate(sample.objects):
            if o.label != obj.label and inside[j]:
                other |= tmasks[j]
        images.append(image)
        labels.append(obj.label)
        masks.append(mask)
        boxes.append(tboxes[same].clone())
        others.append(other)
        names.append(f"{sample.name}#{k}")
    if not images:
        raise DataError("every object fell outside the crop")
    imgs = torch.stack(images)
    return Batch(preprocess.normalise(imgs), imgs, torch.tensor(labels, dtype=torch.long),
                 torch.stack(masks), boxes, torch.stack(others), names)


def _transformed(sample: Sample, preprocess) -> tuple[Tensor, Tensor, list[Tensor], list[bool]]:
    """Model-space image, boxes (n,4), masks and whether each object survives the crop."""
    s = preprocess.size
    image = preprocess.geometry(sample.image).clamp(0, 1)
    tboxes = transform_boxes(torch.tensor([o.box for o in sample.objects]), sample.size, preprocess)
    tmasks, inside = [], []
    for o, b in zip(sample.objects, tboxes):
        m = transform_mask(o.mask, preprocess) if o.mask is not None else None
        m = m if m is not None and m.any() else box_fill(b, (s, s))
        tmasks.append(m)
        inside.append(bool(b[2] - b[0] >= 1 and b[3] - b[1] >= 1 and m.any()))
    return image, tboxes, tmasks, inside
