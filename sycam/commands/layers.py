"""``sycam layers``: every module of a model with its output shape, to choose a layer."""
from __future__ import annotations

from rich.table import Table

from .common import add_model_args, console, load_bundle


def add(sub) -> None:
    p = sub.add_parser("layers", help="list a model's layers with their output shapes",
                       description="Run the model once on a blank image and list every module with a spatial "
                                   "output (k, h, w): the names to give --layer.")
    add_model_args(p, layers=False)
    p.add_argument("--all", action="store_true", help="also list layers without a spatial output")
    p.set_defaults(run=run)


def run(args) -> int:
    # deferred: keeps start-up torch-free (`sycam layers --help` starts without torch)
    import torch

    from ..evidence.layers import list_layers

    bundle = load_bundle(args)
    size = bundle.input_size
    infos = list_layers(bundle.model, torch.zeros(1, 3, size, size, device=args.device))
    table = Table(title=f"{args.model} at {size}x{size} (default layer: {bundle.default_layer})")
    for col in ("layer", "module", "output (k, h, w)", "calls"):
        table.add_column(col)
    for info in infos:
        spatial = info.shape is not None and len(info.shape) == 3
        if spatial or args.all:
            table.add_row(info.name, info.kind, str(info.shape), str(info.calls))
    console.print(table)
    return 0
