"""The built-in benchmarks and a deterministic train/held-out split.

:func:`default_benchmark` = the hand-boxed real photos the default model recognises
(label in its top-5) + composites (:mod:`sycam.data.composite`) up to ``size`` rows; it
needs ``sycam data fetch``. :func:`fallback_benchmark` = the few boxed photos shipped
inside scikit-image and matplotlib, usable with no fetch at all.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..batching import model_rows
from ..errors import DataError
from ..models import load_model
from .batch import Batch
from .cache import FETCH_HINT
from .composite import composite_set
from .geometry import to_batch
from .real import real_photos
from .sample import Sample

DEFAULT_SIZE = 64


def _bundle(bundle):
    if bundle is None:
        return load_model()
    return bundle


def _cat(a: Batch, b: Batch) -> Batch:
    return Batch(torch.cat([a.x, b.x]), torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]),
                 torch.cat([a.masks, b.masks]), a.boxes + b.boxes, torch.cat([a.other_masks, b.other_masks]),
                 a.names + b.names)


def recognised_rows(batch: Batch, bundle, k: int = 5, chunk: int | None = None) -> list[int]:
    """Indices of the rows whose label is in the model's top-``k``."""
    with torch.no_grad():
        chunk = model_rows(batch.x.device, chunk)
        logits = torch.cat([bundle.model(batch.x[i:i + chunk]) for i in range(0, len(batch), chunk)])
    top = logits.topk(k, dim=1).indices
    return [i for i in range(len(batch)) if int(batch.labels[i]) in top[i].tolist()]


def default_benchmark(size: int = DEFAULT_SIZE, *, bundle=None, seed: int = 0, root: str | Path | None = None,
                      cache: bool = True, log: Callable[[str], None] | None = None) -> Batch:
    """The default benchmark: ``size`` rows (one explained class of one image each).

    Real photos first (those whose label the model ranks in its top-5; at most a third of
    ``size``), then composites of ``seed`` kept by the model (see
    :func:`~sycam.data.composite.composite_set`). Deterministic for a given seed, model and
    fetched material; :class:`DataError` telling to run ``sycam data fetch`` if the
    material is missing (:func:`fallback_benchmark` needs none).
    """
    if size < 2:
        raise DataError(f"benchmark size must be at least 2, not {size}")
    bundle = _bundle(bundle)
    try:
        real = to_batch(real_photos("all", root).items(), bundle.preprocess)
        real = real[recognised_rows(real, bundle)[: size // 3]]
        comps = composite_set(size - len(real), bundle, seed=seed, root=root, cache=cache)
    except DataError as err:
        if FETCH_HINT in str(err):
            raise DataError(f"{err}; sycam.data.fallback_benchmark() works without it") from err
        raise
    synth = to_batch(comps.items(), bundle.preprocess)[: size - len(real)]
    if log is not None:
        log(f"default benchmark: {len(real)} real-photo items + {len(synth)} composite items; {comps}")
    return _cat(real, synth)


def fallback_benchmark(bundle=None) -> Batch:
    """The boxed photos inside installed scikit-image/matplotlib (coffee, chelsea, rocket,
    motorcycle, camera, grace_hopper): 6 rows, no fetch needed, no filtering."""
    bundle = _bundle(bundle)
    pre = getattr(bundle, "preprocess", bundle)
    return to_batch(real_photos("fallback").items(), pre)


def _group(x) -> str:
    if isinstance(x, Sample):
        return x.name
    if isinstance(x, tuple):
        return x[0].name
    return str(x).split("#")[0]


def split(data: Batch | Sequence, held_out: float = 0.25, seed: int = 0):
    """Deterministic (train, held_out) split by ``seed``; rows of one image stay together.

    ``data``: a :class:`Batch` (grouped by the image part of ``names``) or a list of
    samples / ``(sample, object)`` items. ``held_out`` is the wanted fraction of rows.
    """
    if not 0 < held_out < 1:
        raise DataError(f"held_out must be between 0 and 1, not {held_out}")
    keys = [_group(n) for n in data.names] if isinstance(data, Batch) else [_group(x) for x in data]
    if len(set(keys)) < 2:
        raise DataError("need at least two images to split")
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    want = max(1, round(held_out * len(keys)))
    held: list[int] = []
    for k in order[:-1]:                  # the last group always stays in train
        if len(held) >= want:
            break
        held += groups[k]
    held_set = set(held)
    train = [i for i in range(len(keys)) if i not in held_set]
    held = sorted(held)
    if isinstance(data, Batch):
        return data[train], data[held]
    return [data[i] for i in train], [data[i] for i in held]
