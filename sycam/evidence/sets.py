"""Evidence sets: the terminals of every layer for a set of images, captured once, in the
kernels' 6-D layout (b, s, v, k, h, w), with the images' ground truth; what a search evaluates
many candidate expressions on."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..batching import model_rows
from ..data.batch import Batch
from ..errors import EvidenceError
from ..kernels.layout import to_layout
from .capture import capture
from .terminals import needed_terms


@dataclass
class EvidenceSet:
    """Per layer, per terminal, a tensor in the 6-D layout whose first axis is the image.

    ``batch`` carries the images' ground truth for the metric (rows aligned with the evidence);
    ``input_size`` is the size maps are brought to.
    """

    layers: dict[str, dict[str, Tensor]]
    input_size: tuple[int, int]
    batch: Batch | None = None

    def __post_init__(self):
        if not self.layers:
            raise EvidenceError("an evidence set needs at least one layer")
        sizes = {t.shape[0] for terms in self.layers.values() for t in terms.values()}
        if len(sizes) != 1:
            raise EvidenceError(f"evidence tensors disagree on the number of images: {sorted(sizes)}")
        if self.batch is not None and len(self.batch) != sizes.pop():
            raise EvidenceError(f"the batch has {len(self.batch)} rows, the evidence {len(self)} images")

    @classmethod
    def capture(cls, model: torch.nn.Module, batch: Batch, layers, *, needs: Iterable[str] = ("A", "G"),
                target=None, chunk: int | None = None, output=None, options=None) -> "EvidenceSet":
        """Capture once: one forward + one backward per chunk of ``chunk`` images (default
        :func:`~sycam.batching.model_rows`; plus the passes that channel-score terminals need,
        set by ``options``).

        ``target`` None explains each row's label (``batch.labels``): what the metrics' ground
        truth is about.
        """
        needs = needed_terms(needs) | {"A"}
        chunk = model_rows(batch.x.device, chunk)
        parts: dict[str, dict[str, list[Tensor]]] = {}
        for i in range(0, len(batch), chunk):
            sub = batch[i:i + chunk]
            tgt = sub.labels if target is None else _slice_target(target, i, i + chunk)
            ev = capture(model, sub.x, layers, tgt, needs=needs, output=output, options=options)
            for name, lev in ev.layers.items():
                terms = parts.setdefault(name, {})
                for term, t in lev.layout().items():
                    if term in needs or term == "S":
                        terms.setdefault(term, []).append(t)
        return cls({name: {k: torch.cat(v) for k, v in terms.items()} for name, terms in parts.items()},
                   batch.size, batch)

    @classmethod
    def from_evidence(cls, evidence, batch: Batch | None = None) -> "EvidenceSet":
        """From a :class:`sycam.evidence.capture.Evidence` (one capture)."""
        return cls({name: lev.layout() for name, lev in evidence.layers.items()}, evidence.input_size, batch)

    @classmethod
    def from_tensors(cls, terms: Mapping[str, Mapping[str, tuple[Tensor, str]]], input_size: tuple[int, int],
                     batch: Batch | None = None) -> "EvidenceSet":
        """From plain tensors: ``{layer: {terminal: (tensor, axes)}}`` with axes in storage order."""
        return cls({layer: {k: to_layout(t, axes) for k, (t, axes) in ts.items()} for layer, ts in terms.items()},
                   tuple(input_size), batch)

    def __len__(self) -> int:
        return int(next(iter(next(iter(self.layers.values())).values())).shape[0])

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def device(self) -> torch.device:
        return next(iter(next(iter(self.layers.values())).values())).device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self.layers.values() for t in ts.values())

    def rows_per_block(self, block_bytes: int) -> int:
        """How many images fit in ``block_bytes`` per terminal tensor (at least 1)."""
        per_image = max(t[:1].numel() * t.element_size() for ts in self.layers.values() for t in ts.values())
        return max(1, block_bytes // per_image)

    def terminal_names(self) -> set[str]:
        return set.intersection(*(set(ts) for ts in self.layers.values()))

    def rows(self, rows: Sequence[int]) -> "EvidenceSet":
        """The evidence (and batch) of a subset of the images."""
        rows = [int(r) for r in rows]
        if rows and rows == list(range(rows[0], rows[0] + len(rows))):     # a block of rows: views, no copy
            layers = {name: {k: t[rows[0]:rows[0] + len(rows)] for k, t in ts.items()}
                      for name, ts in self.layers.items()}
        else:
            idx = torch.tensor(rows, dtype=torch.long, device=self.device)
            layers = {name: {k: t.index_select(0, idx) for k, t in ts.items()}
                      for name, ts in self.layers.items()}
        return EvidenceSet(layers, self.input_size, None if self.batch is None else self.batch[rows])

    def require(self, names: Iterable[str]) -> None:
        missing = sorted(set(names) - self.terminal_names())
        if missing:
            has = ", ".join(sorted(self.terminal_names()))
            raise EvidenceError(f"the evidence lacks {', '.join(missing)} (has {has}); "
                                "capture it with needs=space.evidence_terms")


def _slice_target(target, start: int, stop: int):
    if isinstance(target, Tensor) and target.dim() == 1:
        return target[start:stop]
    if isinstance(target, (list, tuple)):
        return list(target[start:stop])
    return target
