"""Guided backpropagation (Springenberg et al., Striving for Simplicity: The All Convolutional Net,
ICLR 2015 workshop, arXiv:1412.6806).

The gradient of the target score with respect to the input, where every ReLU passes back only
the positive gradients at its positive inputs: R_in = 1(z > 0) * relu(R_out), z the ReLU's input
(grad-cam's ``GuidedBackpropReLU``).

:func:`guided_relus` hooks the model's ``nn.ReLU`` modules for the duration of one pass (the
model is not modified, and the hooks are always removed): each output gets a tensor hook that,
while the yielded switch is on, replaces the gradient g arriving at it by relu(g); the ReLU's
own backward then applies 1(z > 0). With the switch off the backward is the plain one, so the
first pass (:func:`sycam.evidence.forward.single_pass`) takes G and the other gradients, then
GB, from one forward. ``torch.relu`` called inside a ``forward`` is not a module and is not
guided (as in grad-cam); a model with no ``nn.ReLU`` at all is refused.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import EvidenceError


@dataclass
class GuidedSwitch:
    """Whether the ReLUs' backward is guided (read when the backward runs, not at the forward)."""

    on: bool = False


@contextlib.contextmanager
def guided_relus(model: nn.Module, active: bool = True) -> Iterator[GuidedSwitch]:
    """Hooks that make the ReLU modules' backward guided while the yielded switch is on."""
    switch = GuidedSwitch()
    handles = []

    def positive(grad: Tensor) -> Tensor:
        return grad.clamp_min(0) if switch.on else grad

    def on_output(_module, _inputs, out):
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(positive)

    try:
        if active:
            relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
            if not relus:
                kinds = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
                raise EvidenceError(
                    f"guided backpropagation changes the backward pass of ReLU modules (nn.ReLU), and "
                    f"{type(model).__name__} has none (its layers: {', '.join(kinds[:12])}); use the plain "
                    "input gradient Gx, e.g. max(abs(Gx), k)")
            handles = [m.register_forward_hook(on_output) for m in relus]
        yield switch
    finally:
        for h in handles:
            h.remove()
