"""``sycam layers``: every module of a model with its output shape, to choose a layer."""
from __future__ import annotations

from rich.table import Table

from .common import add_model_args, add_reshape_arg, check_reshape, console, load_bundle


def add(sub) -> None:
    p = sub.add_parser("layers", help="list a model's layers with their output shapes",
                       description="Run the model once on a blank image and list every module with a spatial "
                                   "output (k, h, w): the names to give --layer. A transformer's token layers are "
                                   "listed with the (k, h, w) map they become (see --reshape).")
    add_model_args(p, layers=False)
    add_reshape_arg(p)
    p.add_argument("--all", action="store_true", help="also list layers without a spatial output")
    p.set_defaults(run=run)


def run(args) -> int:
    # deferred: keeps start-up torch-free (`sycam layers --help` starts without torch)
    import torch

    from ..evidence.layers import list_layers

    check_reshape(args.reshape)
    bundle = load_bundle(args)
    size = bundle.input_size
    infos = list_layers(bundle.model, torch.zeros(1, 3, size, size, device=args.device), args.reshape)
    table = Table(title=f"{args.model} at {size}x{size} (default layer: {bundle.default_layer})")
    tokens = any(info.tokens for info in infos)
    longest = max((len(info.name) for info in infos), default=5)
    table.add_column("layer", min_width=longest, overflow="fold")   # a transformer's names are long: never cut
    for col in ("module", "output (k, h, w)", *(["reshaped from"] if tokens else []), "calls"):
        table.add_column(col)
    for info in infos:
        spatial = info.shape is not None and len(info.shape) == 3
        if spatial or args.all:
            cells = [info.name, info.kind, str(info.shape)]
            if tokens:
                cells.append(str(info.tokens) if info.tokens else "")
            table.add_row(*cells, str(info.calls))
    console.print(table)
    return 0
