"""What every method bound to a model is: an :class:`Explainer`, and what it returns: an :class:`Explanation`.

:class:`~sycam.methods.cam.CAM` (a seed or expression) and the meta-methods
(:class:`~sycam.methods.gpnn_cam.GPNNCAM`, :class:`~sycam.methods.metacam.MetaCAM`) implement it;
whoever runs methods (:func:`~sycam.methods.cam.explain_many`, :func:`sycam.evaluation.evaluate`, the
commands) uses only this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from ..evidence.capture import Evidence


@dataclass
class Explanation:
    maps: Tensor                      # (b, H, W) in [0, 1] at the input size
    valid: Tensor                     # (b,) False where the expression gave NaN/inf
    layer_maps: dict[str, Tensor]     # raw maps at each layer's resolution, before post-processing
    evidence: Evidence

    @property
    def logits(self) -> Tensor | None:
        """The model's logits (None for a detector, whose target reads its raw output)."""
        return self.evidence.logits

    @property
    def scores(self) -> Tensor:
        return self.evidence.scores


@runtime_checkable
class Explainer(Protocol):
    """A method bound to a model: explains a batch of images, and rebinds to another model.

    ``model`` is what it explains, ``last`` its last :class:`Explanation`. Subclassing gives
    ``__call__``, a ``repr`` and the context manager: hooks live only inside each call, so leaving
    a ``with`` block releases nothing and ``last`` stays readable.
    """

    model: nn.Module
    last: Explanation | None

    @property
    def text(self) -> str:
        """The method: its expression, or the meta-method with its parameters."""
        ...

    def explain(self, x: Tensor, targets=None) -> Explanation:
        """The maps of images ``x`` and everything behind them, also kept as ``last``.
        ``targets``: class indices or names (one, or one per image), or None (each image's top-1)."""
        ...

    def with_model(self, model: nn.Module) -> Explainer:
        """The same method on another ``model`` (e.g. a randomised copy), at the layers of the same names."""
        ...

    def __call__(self, x: Tensor, targets=None) -> Tensor:
        """(b, H, W) maps in [0, 1] at the input size (see :meth:`explain`)."""
        return self.explain(x, targets).maps

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text})"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None
