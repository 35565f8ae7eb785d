"""Loading an annotated image folder into an :class:`~sycam.data.sample.ImageSet`.

The annotation formats are described in :mod:`sycam.data.annotations`. Unreadable or
corrupt images (and images whose masks cannot be read) are skipped with a
:class:`~sycam.data.sample.DataWarning` and listed in ``ImageSet.skipped``; boxes that
stick out of their image are clipped with a warning; a set with no usable image is a
:class:`~sycam.errors.DataError`. An unknown class name is an
:class:`~sycam.errors.UnknownNameError` (with close matches): it is a mistake in the
annotations, not a damaged file.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import DataError
from . import annotations as ann
from .images import polygon_mask, read_image, read_mask, rle_mask
from .labels import resolve_label
from .sample import AnnotatedObject, ImageSet, Sample, clip_box, mask_box, warn


def load_folder(folder: str | Path, annotations: str | Path | None = None, *, format: str | None = None,
                label_map: Mapping[str, int | str] | None = None,
                classes: list[str] | None = None) -> ImageSet:
    """All annotated images of ``folder`` as samples at their original resolution.

    ``annotations``: the annotation file (or VOC XML folder); found in ``folder`` if None.
    ``format``: 'voc', 'coco', 'json' or 'csv' (sniffed if None). ``label_map`` renames
    dataset labels (e.g. COCO's ``"dog"``) to a class index or name before they are
    resolved against ``classes`` (the ImageNet-1k names by default).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    path = Path(annotations) if annotations is not None else ann.find_annotations(folder)
    records = ann.parse(path, folder, format)
    samples, skipped = [], []
    for rec in records:
        try:
            sample = _sample(rec, folder, label_map or {}, classes)
        except DataError as err:
            reason = str(err)
        else:
            if sample.objects:
                samples.append(sample)
                continue
            reason = f"{rec.file}: no usable object"
        warn(f"skipped {reason}")
        skipped.append((str(rec.file), reason))
    if skipped:
        warn(f"{folder}: skipped {len(skipped)} of {len(records)} images (see ImageSet.skipped)")
    if not samples:
        detail = f"; skipped {len(skipped)}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"{folder}: no usable annotated image in {path.name}{detail}")
    return ImageSet(samples, skipped)


def _sample(rec: ann.RawImage, folder: Path, label_map: Mapping[str, int | str],
            classes: list[str] | None) -> Sample:
    image = read_image(rec.file)
    size = (int(image.shape[1]), int(image.shape[2]))
    try:
        name = str(rec.file.relative_to(folder))
    except ValueError:
        name = str(rec.file)
    if rec.size is not None and tuple(rec.size) != size:
        warn(f"{name}: annotation says {rec.size[1]}x{rec.size[0]}, image is {size[1]}x{size[0]}")
    objects = []
    for k, raw in enumerate(rec.objects):
        where = f"{name} object {k}"
        label = raw.label
        if isinstance(label, str) and label in label_map:
            label = label_map[label]
        label = None if label is None else resolve_label(label, classes)
        mask = None
        if raw.mask_file is not None:
            mask = read_mask(raw.mask_file, size)
        else:
            try:
                if raw.polygons:
                    mask = polygon_mask(raw.polygons, size)
                elif raw.rle is not None:
                    mask = rle_mask(raw.rle, size)
            except DataError as err:
                raise DataError(f"{where}: {err}") from None
        if mask is not None and not mask.any():
            warn(f"{where}: empty mask ignored")
            mask = None
        box = raw.box if raw.box is not None else (mask_box(mask) if mask is not None else None)
        box = None if box is None else clip_box(box, size, where)
        if box is None:
            continue
        objects.append(AnnotatedObject(label, box, mask, raw.name))
    return Sample(image, objects, name, str(rec.file))
