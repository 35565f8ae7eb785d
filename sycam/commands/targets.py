"""What ``sycam explain`` explains (a class, a segmentation model's class over a region, the
similarity to a reference embedding) and the smoothing switches, shared by the commands.

Loaded by the parsers, so it stays torch-free: torch and the data readers load inside the functions.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, SycamError

SEGMENT_HELP = ("explain a segmentation model's (fcn_resnet50, deeplabv3_resnet50, ...) class CLASS (index or name) "
                "as the sum of its per-pixel scores over a region: CLASS:MASK.png (the mask's non-zero pixels, at "
                "the image's size), CLASS:X0,Y0,X1,Y1 (a box in the image's pixels), or CLASS alone (the pixels the "
                "model assigns to CLASS); the region is cropped and resized with the image")
SIMILAR_HELP = ("explain the cosine similarity of each image's embedding to a reference: REF.pt (a saved (d,) tensor) "
                "or an image, embedded by the same model. The embedding is what the model's last linear layer "
                "reads (that layer is removed, as in pytorch-grad-cam's embedding tutorial)")


def add_smoothing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eigen-smooth", action="store_true",
                   help="pytorch-grad-cam's eigen_smooth on every method: each map's sum over channels, relu(sum(X, "
                        "k)), becomes the projection on its first principal component, relu(pc1(X)); same cost")
    p.add_argument("--aug-smooth", action="store_true",
                   help="pytorch-grad-cam's aug_smooth on every method: the mean of the maps of 6 views (horizontal "
                        "flip x input times 0.9, 1, 1.1), each brought back to the image; 6x the cost")


def add_target_args(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--target", help="class to explain (index or ImageNet name); default: each image's top-1")
    what.add_argument("--segment", metavar="CLASS[:MASK.png|:X0,Y0,X1,Y1]", help=SEGMENT_HELP)
    what.add_argument("--similar-to", metavar="REF.pt|REF.jpg", help=SIMILAR_HELP)


@dataclass
class Segment:
    """``--segment``: the class as written, and each image's region in its own pixels (None: predicted)."""

    cls: str
    regions: list[Any] | None
    region: str                    # how the region was given, for labels


def read_segment(spec: str, images) -> Segment:
    """Parse ``--segment`` and read its region for every image (before the model loads)."""
    # deferred: keeps start-up torch-free (sycam.data loads torch)
    import torch

    from ..data.images import read_mask
    from ..evidence.targets import box_mask

    cls, _, region = spec.partition(":")
    if not cls:
        raise SycamError(f"--segment {spec!r}: give a class, CLASS[:MASK.png|:X0,Y0,X1,Y1]")
    if not region:
        return Segment(cls, None, "predicted pixels")
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    if re.fullmatch(r"\s*[-+0-9.eE]+\s*(,\s*[-+0-9.eE]+\s*){3}", region):
        try:
            x0, y0, x1, y1 = (float(v) for v in region.split(","))
        except ValueError:
            raise SycamError(f"--segment {spec!r}: a box is four numbers X0,Y0,X1,Y1") from None
        if not (x1 > x0 and y1 > y0):
            raise SycamError(f"--segment {spec!r}: a box X0,Y0,X1,Y1 needs X1 > X0 and Y1 > Y0")
        box = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float64)
        return Segment(cls, [box_mask(box, size)[0] for size in sizes], f"box {x0:g},{y0:g},{x1:g},{y1:g}")
    if not Path(region).is_file():
        raise DataError(f"--segment {spec!r}: {region} is not a mask file (nor a box X0,Y0,X1,Y1)")
    return Segment(cls, [read_mask(region, size) for size in sizes], f"mask {Path(region).name}")


def segmentation_target(segment: Segment, bundle, images):
    """The :class:`~sycam.evidence.targets.SegmentationTarget` of ``--segment`` in the model's input frame."""
    # deferred: keeps start-up torch-free
    import torch

    from ..data.labels import resolve_label
    from ..evidence.targets import SegmentationTarget

    c = resolve_label(segment.cls, bundle.classes)
    if segment.regions is None:
        return SegmentationTarget(c), c
    masks = [bundle.preprocess.geometry(m[None].float())[0] >= 0.5 for m in segment.regions]
    empty = [i for i, m in enumerate(masks) if not bool(m.any())]
    if empty:
        raise SycamError(f"--segment: the {segment.region} leaves no pixel inside the model's crop of image(s) "
                         f"{empty}: give a region inside it")
    return SegmentationTarget(c, torch.stack(masks)), c


def read_reference(path: str):
    """``--similar-to``: a saved embedding tensor, or an image to embed (read before the model loads)."""
    # deferred: keeps start-up torch-free
    import torch

    from ..data.images import read_image

    if not Path(path).is_file():
        raise DataError(f"--similar-to {path}: no such file")
    if Path(path).suffix.lower() not in (".pt", ".pth"):
        return read_image(path)
    try:
        ref = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # zip, pickle and torch errors of every kind: not a tensor file
        raise DataError(f"--similar-to {path}: not a saved tensor ({type(err).__name__})") from None
    if not isinstance(ref, torch.Tensor):
        raise DataError(f"--similar-to {path} holds a {type(ref).__name__}, not a (d,) embedding tensor")
    if ref.dim() == 2 and ref.shape[0] == 1:
        ref = ref[0]
    if ref.dim() != 1:
        raise DataError(f"--similar-to {path}: an embedding is a (d,) tensor, not of shape {tuple(ref.shape)}")
    return ref


def embedding_model(model):
    """``model`` without its last linear layer (replaced by the identity), so that it returns the
    embedding that layer read; the model as it is when it has none."""
    from torch import nn  # deferred: keeps start-up torch-free

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return model
    parent, _, child = last.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def similarity_target(reference, bundle, device: str):
    """The :class:`~sycam.evidence.targets.EmbeddingSimilarity` of ``--similar-to`` (an image is embedded
    by ``bundle.model``, which must already be the embedding model)."""
    # deferred: keeps start-up torch-free
    import torch

    from ..evidence.targets import EmbeddingSimilarity, select_output

    if reference.dim() == 3:                     # an image
        with torch.no_grad():
            reference = select_output(bundle.model(bundle.preprocess(reference)[None].to(device)))[0]
    return EmbeddingSimilarity(reference)
