"""Evidence capture: the terminals an expression reads, for a batch of images, a target and layers.

:func:`capture` runs the first pass (:func:`~sycam.evidence.forward.single_pass`: one forward
for the activations A and the target score S, and the backward(s) of the gradient terminals
wanted: G, W, HA, Gx, FB, GB), then
computes every other wanted terminal of the registry (:mod:`sycam.evidence.terminals`) at
every layer, each after the terminals it needs. A target marked ``reads_raw_output`` (an
object detector's) gets only the terminals that need no logits (A, G, G2, G3, S).
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..errors import EvidenceError, SycamError
from .forward import Evidence, single_pass
from .layers import resolve_layers
from .options import EvidenceOptions
from .targets import as_target, reads_raw_output
from .terminals import TERMINALS, Context, needed_terms


def _model_device(model: nn.Module, x: Tensor) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else x.device


def capture(model: nn.Module, x: Tensor, layers, target=None, *,
            needs: Iterable[str] = ("A", "G"), output=None, options=None, reshape=None) -> Evidence:
    """Collect the terminals in ``needs`` (and those they need, and A and S) for every layer of
    ``layers`` on images ``x``.

    The first pass gives A, S, G, W; the others add the passes their records list as cost
    (``sycam check`` shows them), set by ``options``
    (:class:`~sycam.evidence.options.EvidenceOptions` or a dict).
    ``target``: see :func:`sycam.evidence.targets.as_target` (None = top-1 logit).
    ``output``: how to find the scores in a non-tensor model output (key, index or callable).
    ``reshape``: how token layers become (b, k, h, w) maps (:mod:`sycam.evidence.tokens`; None: automatic).
    """
    refs = resolve_layers(model, layers, reshape)
    wanted = needed_terms({*needs, "A", "S"})
    unknown = wanted - set(TERMINALS)
    if unknown:
        raise SycamError(f"capture cannot provide {sorted(unknown)} (it knows {', '.join(sorted(TERMINALS))})")
    if model.training:
        warnings.warn("the model is in training mode (dropout, batch statistics): call model.eval() "
                      "for deterministic explanations", stacklevel=2)
    if x.dim() != 4:
        raise SycamError(f"images must be a (b, 3, H, W) batch, got shape {tuple(x.shape)}")
    opts = EvidenceOptions.make(options)
    x = x.to(_model_device(model, x))
    target_fn = as_target(target)
    if reads_raw_output(target_fn):
        refused = sorted(n for n in wanted if TERMINALS[n].needs_logits)
        if refused:
            raise EvidenceError(f"{refused} need a classification model's logits, but the target reads the raw "
                                "model output (e.g. a detector's); use a gradient method "
                                f"({', '.join(n for n, t in TERMINALS.items() if not t.needs_logits)})")
    ev = single_pass(model, x, refs, target_fn, wanted, output)
    context = Context(model, x, refs, refs[0], target_fn, output, opts, ev, frozenset(wanted))
    for name in [n for n in TERMINALS if n in wanted]:   # registration order: needs first
        terminal = TERMINALS[name]
        for ref in refs:
            value = terminal.compute(dataclasses.replace(context, layer=ref))
            if value.dim() != len(terminal.axes):
                raise EvidenceError(f"terminal {name} gave shape {tuple(value.shape)} at layer {ref.name}, "
                                    f"not one dimension per axis of {terminal.axes}")
            ev.layers[ref.name].terms[name] = (value.to(x.device), terminal.axes)
    return ev
