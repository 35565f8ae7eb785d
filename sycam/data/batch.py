"""A batch of images in model-input space together with their ground truth.

Everything downstream of the data layer (evidence capture, heatmaps, metrics) works on a
:class:`Batch`: images already resized/cropped to the model's input geometry, with the
annotations transformed by the same geometry, so that a heatmap pixel and a mask pixel
refer to the same place.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass
class Batch:
    x: Tensor                      # (b,3,S,S) normalised model input
    images: Tensor                 # (b,3,S,S) float in [0,1], same geometry as x (for pictures)
    labels: Tensor                 # (b,) int64: the class to explain in each image
    masks: Tensor | None = None    # (b,S,S) bool: exact mask of the explained object, else its filled box
    boxes: list[Tensor] = field(default_factory=list)  # per image (n_i,4) x0,y0,x1,y1 of the explained object
    other_masks: Tensor | None = None  # (b,S,S) bool: other annotated objects (class discrimination)
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    @property
    def box_masks(self) -> Tensor | None:
        """(b,S,S) bool: union of the explained object's boxes (None without boxes)."""
        if not self.boxes:
            return None
        h, w = self.size
        out = torch.zeros(len(self), h, w, dtype=torch.bool, device=self.x.device)
        for i, bx in enumerate(self.boxes):
            for x0, y0, x1, y1 in bx.round().long().tolist():
                out[i, max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = True
        return out

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, x=move(self.x), images=move(self.images), labels=move(self.labels),
                       masks=move(self.masks), other_masks=move(self.other_masks),
                       boxes=[b.to(device) for b in self.boxes])

    def __getitem__(self, index: slice | Tensor | list[int]) -> "Batch":
        """A sub-batch (slice or index list), keeping every field aligned."""
        idx = list(range(len(self)))[index] if isinstance(index, slice) else [int(i) for i in index]
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Batch(self.x[idx], self.images[idx], self.labels[idx], pick(self.masks),
                     [self.boxes[i] for i in idx] if self.boxes else [], pick(self.other_masks),
                     [self.names[i] for i in idx] if self.names else [])
