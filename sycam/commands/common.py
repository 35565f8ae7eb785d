"""What several commands share: model and image arguments, the console, device choice."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from ..errors import DataError, SycamError, UnknownNameError

console = Console(highlight=False, soft_wrap=True)


def add_model_args(p: argparse.ArgumentParser, layers: bool = True) -> None:
    p.add_argument("--model", default="efficientnet-lite0",
                   help="efficientnet-lite0 (pretrained, default) or a torchvision classifier name")
    p.add_argument("--weights", help="local weights file for a torchvision model (loaded with weights_only=True)")
    if layers:
        p.add_argument("--layer", action="append", dest="layers",
                       help="layer to explain (dotted name, name[i], name@call); repeat to fuse several")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def load_bundle(args):
    from ..models import load_model

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
    """Images from files; unreadable ones are reported and skipped, with a count."""
    from ..data.images import read_image

    images, names, skipped = [], [], []
    for p in paths:
        try:
            images.append(read_image(p))
            names.append(Path(p).stem)
        except DataError as err:
            skipped.append(str(err))
    for reason in skipped:
        console.print(f"[yellow]skipped[/] {reason}")
    if skipped:
        console.print(f"[yellow]{len(skipped)} of {len(paths)} images skipped[/]")
    if not images:
        raise DataError("no readable images")
    return images, names
