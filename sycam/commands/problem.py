"""The problem a search or an ablation works on: model, layers, images with ground truth, split.

``--data``: ``default`` (the built-in benchmark: hand-boxed real photos + composites, needs
``sycam data fetch``), ``fallback`` (6 boxed photos shipped with scikit-image/matplotlib),
``toy`` (a tiny random CNN and squares on noise, for smoke tests; implies ``--model toy``)
or an annotated image folder (VOC XML, COCO JSON, simple JSON/CSV; see ``sycam.data``).
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError
from .common import load_bundle

if TYPE_CHECKING:        # torch only for annotations: the parsers that use this module start without it
    from torch import nn

    from ..data.batch import Batch

DATA = ("default", "fallback", "toy")


def add_data_args(p: argparse.ArgumentParser, held_out: bool = True) -> None:
    p.add_argument("--data", default="default",
                   help="default (the built-in benchmark: real photos + composites, needs `sycam data fetch`), "
                        "fallback (6 boxed photos shipped with scikit-image/matplotlib), toy (random CNN, "
                        "squares on noise; with --model toy) or an annotated image folder (VOC XML, COCO JSON, "
                        "simple JSON/CSV)")
    p.add_argument("--size", type=int, default=64, help="rows of the default benchmark (or of toy data)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the composites / toy images")
    if held_out:
        p.add_argument("--held-out", type=float, default=0.25,
                       help="fraction of images kept out of the search and used only for the report")
        p.add_argument("--split-seed", type=int, default=0, help="seed of the working / held-out split")


@dataclass
class Problem:
    model: nn.Module
    model_name: str
    layers: list[str]
    batch: Batch
    data: dict = field(default_factory=dict)      # how the images were made (stored with a study)
    classes: list[str] = field(default_factory=list)
    input_size: int = 224


def names_digest(batch: Batch) -> str:
    return hashlib.sha1("\n".join(batch.names).encode()).hexdigest()[:16]


def check_data_arg(args) -> None:
    """Cheap checks before any model work."""
    if args.data not in DATA and not Path(args.data).is_dir():
        raise DataError(f"--data {args.data!r} is neither one of {', '.join(DATA)} nor a folder")
    if getattr(args, "size", 2) < 2:
        raise DataError(f"--size must be at least 2, not {args.size}")
    held = getattr(args, "held_out", None)
    if held is not None and not 0 < held < 1:
        raise DataError(f"--held-out must be between 0 and 1, not {held}")


def read_data(args):
    """The annotated folder of ``--data`` as an ImageSet (None for the built-in sets): user images
    are read before any model work, so a bad folder fails fast."""
    if args.data in DATA:
        return None
    from ..data import load_folder  # deferred: keeps start-up torch-free (sycam.data loads torch)

    return load_folder(args.data)


def load_problem(args, log=print, images=None) -> Problem:
    """Model, layers and images from the parsed arguments (see :func:`add_data_args`);
    ``images``: the folder already read by :func:`read_data`."""
    if args.data == "toy" or args.model == "toy":
        from ..search.toy import toy_problem  # deferred: keeps start-up torch-free

        if args.data != "toy" or args.model != "toy":
            raise DataError("the toy model only explains toy data: use --model toy --data toy")
        model, batch, layer = toy_problem(args.size, seed=args.data_seed)
        model.to(args.device)
        data = {"kind": "toy", "size": args.size, "seed": args.data_seed, "images": len(batch),
                "names": names_digest(batch)}
        return Problem(model, "toy", args.layers or [layer], batch.to(args.device), data,
                       [str(i) for i in range(5)], batch.size[0])
    if images is None:
        images = read_data(args)
    bundle = load_bundle(args)
    if args.data == "default":
        from ..data import default_benchmark  # deferred: keeps start-up torch-free

        batch = default_benchmark(args.size, bundle=bundle, seed=args.data_seed, log=log)
        data = {"kind": "default", "size": args.size, "seed": args.data_seed}
    elif args.data == "fallback":
        from ..data import fallback_benchmark  # deferred: keeps start-up torch-free

        batch = fallback_benchmark(bundle)
        data = {"kind": "fallback"}
    else:
        from ..data import to_batch  # deferred: keeps start-up torch-free

        batch = to_batch(images.items(), bundle.preprocess)
        data = {"kind": "folder", "path": str(Path(args.data).resolve())}
    data["images"] = len(batch)
    data["names"] = names_digest(batch)
    return Problem(bundle.model, args.model, args.layers or [bundle.default_layer], batch.to(args.device),
                   data, bundle.classes, bundle.input_size)
