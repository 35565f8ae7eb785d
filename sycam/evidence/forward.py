"""The first pass of a capture: one forward (and at most one backward) on a batch.

:func:`single_pass` records the layers' activations A and the target score S = target(output);
when asked, the gradients G = dS/dA (``torch.autograd.grad`` with respect to the hooked tensors
only: parameters are frozen for the duration of the pass, so their gradients are never
computed) and W = dS/dz at the input z of the classifier's last linear layer (the CAM weights of
a GAP + linear head). Hooks exist only inside the call, in a context manager, and are always
removed. A hook keeps the layer's output and hands the rest of the network a copy, so an in-place
op after the layer (vgg's ``ReLU(inplace=True)``) changes the copy, not the recorded value; a token
layer's output and gradient become (b, k, h, w) maps through its reshape
(:meth:`~sycam.evidence.layers.LayerRef.map`). :mod:`sycam.evidence.capture` runs it first; the
scale and noise passes (:mod:`sycam.evidence.axes`) run it on resized and noisy images, LRP
(:mod:`sycam.evidence.relevance`) reuses its hooks.

A target marked ``reads_raw_output`` (see :mod:`sycam.evidence.targets`; e.g. an object
detector's :class:`~sycam.evidence.detection.DetectionTarget`) is given the model's raw output
instead of the logits; ``Evidence.logits`` is then None.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import EvidenceError
from ..kernels.layout import to_layout
from .layers import LayerRef
from .targets import Target, reads_raw_output, select_output


@dataclass
class LayerEvidence:
    """Tensors of one layer, each stored with its axes (in storage order)."""

    name: str
    terms: dict[str, tuple[Tensor, str]] = field(default_factory=dict)

    @property
    def A(self) -> Tensor:
        return self.terms["A"][0]

    def axes(self) -> dict[str, str]:
        return {k: axes for k, (_, axes) in self.terms.items()}

    def layout(self) -> dict[str, Tensor]:
        """Every term viewed in the compiler's 6-D layout."""
        return {k: to_layout(t, axes) for k, (t, axes) in self.terms.items()}


@dataclass
class Evidence:
    """What the model said about a batch: inputs, outputs, target scores and per-layer terms."""

    x: Tensor
    logits: Tensor | None             # None when the target reads the raw model output (detectors)
    scores: Tensor
    layers: dict[str, LayerEvidence]
    target: Target
    frame: Callable[[Tensor], Tensor] | None = None   # raw layer maps (b,h,w) -> input frame (b,H,W)

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    @property
    def predicted(self) -> Tensor:
        if self.logits is None:
            raise EvidenceError("no class prediction: the target read the raw model output (not logits)")
        return self.logits.argmax(dim=1)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients inside the block (restored after)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


@contextlib.contextmanager
def recording(refs: Sequence[LayerRef], head: nn.Module | None) -> Iterator[dict]:
    """Forward hooks that keep every call's output of the layers (and the head's input).

    The rest of the network gets a copy of each output: an in-place op after the layer (vgg's
    ``ReLU(inplace=True)``, a residual ``+=``) changes the copy, while the recorded output keeps the
    layer's value and its gradient flows through the copy."""
    record: dict = {"outputs": {}, "head_input": None}
    handles = []

    def on_output(module, _inputs, out):
        if not isinstance(out, Tensor):
            raise EvidenceError(f"layer {type(module).__name__} returns {type(out).__name__}, not a tensor; "
                                "choose a module whose output is a (b, k, h, w) tensor (or tokens)")
        if not out.requires_grad and torch.is_grad_enabled():
            # parameters are frozen, so nothing before made this output differentiable: record it as a leaf
            out = out.detach().requires_grad_(True)
        record["outputs"].setdefault(id(module), []).append((out, out._version))
        return out.clone()

    def on_head(_module, inputs):
        z = inputs[0]
        if not z.requires_grad and torch.is_grad_enabled():
            z.requires_grad_(True)
        record["head_input"] = z

    try:
        for module in {id(r.module): r.module for r in refs}.values():
            handles.append(module.register_forward_hook(on_output))
        if head is not None:
            handles.append(head.register_forward_pre_hook(on_head))
        yield record
    finally:
        for h in handles:
            h.remove()


def aliased(layer: str) -> str:
    """Why the recorded output of ``layer`` cannot be used: it changed after the layer returned it."""
    return (f"the output of layer {layer} is changed in place later in the forward pass: it shares memory with a "
            "tensor the model modifies afterwards (e.g. it returns its input, or a view of it), so its value and "
            "gradient are not the layer's; choose the module that computes the value (e.g. the one before)")


def classifier_head(model: nn.Module) -> nn.Linear | None:
    """The last linear layer registered in the model (the classifier of a GAP + linear head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def single_pass(model: nn.Module, x: Tensor, refs: list[LayerRef], target_fn, needs: Collection[str],
                output=None) -> Evidence:
    """A and S of every layer on ``x``, with G and W when ``needs`` holds them (then one backward)."""
    want_grad = "G" in needs
    raw = reads_raw_output(target_fn)
    head = classifier_head(model) if "W" in needs else None
    if "W" in needs and head is None:
        raise EvidenceError("W (classifier weights) needs a model that ends in a linear layer")

    differentiate = want_grad or head is not None
    with frozen_parameters(model), torch.set_grad_enabled(differentiate):
        with recording(refs, head) as rec:
            out = model(x)
        if raw:   # the target reads the output as it is (list of detections, ...)
            logits, scores = None, target_fn(out)
        else:
            logits = select_output(out, output)
            if logits.dim() != 2:
                raise EvidenceError(f"expected (b, classes) scores from the model, got shape {tuple(logits.shape)}")
            scores = target_fn(logits)
    if scores.shape != (x.shape[0],):
        raise EvidenceError(f"the target returned shape {tuple(scores.shape)}; it must give one score per "
                            f"image, shape ({x.shape[0]},)")

    outputs, activations = [], []     # as the layers give them; as (b, k, h, w) maps
    for ref in refs:
        calls = rec["outputs"].get(id(ref.module), [])
        if not calls:
            raise EvidenceError(f"layer {ref.name} did not run in the forward pass")
        if not -len(calls) <= ref.call < len(calls):
            raise EvidenceError(f"layer {ref.name} ran {len(calls)} time(s); call {ref.call} does not exist")
        out, version = calls[ref.call]
        if out._version != version:
            raise EvidenceError(aliased(ref.name))
        a = ref.map(out)
        if raw and a.shape[0] != x.shape[0]:
            raise EvidenceError(f"layer {ref.name} gives {a.shape[0]} rows for {x.shape[0]} images (not one map per "
                                "image, e.g. per-region features of a detector head); choose a backbone layer")
        outputs.append(out)
        activations.append(a)

    z = rec["head_input"]
    wrt = (outputs if want_grad else []) + ([z] if z is not None else [])
    grads: list[Tensor | None] = []
    if wrt:
        if not scores.requires_grad:   # the layer does not feed the target
            raise EvidenceError("the target score does not depend on the layer (no gradient path)")
        with torch.enable_grad():   # the caller may be inside torch.no_grad()
            grads = list(torch.autograd.grad(scores.sum(), wrt, allow_unused=True))

    layers_ev: dict[str, LayerEvidence] = {}
    for i, (ref, a) in enumerate(zip(refs, activations)):
        ev = LayerEvidence(ref.name, {"A": (a.detach(), "bkhw")})
        if want_grad:
            g = grads[i]
            if g is None:
                raise EvidenceError(f"the target score does not depend on layer {ref.name}")
            ev.terms["G"] = (ref.map(g.detach()), "bkhw")
        if "W" in needs:
            w = grads[-1]
            if w is None or w.dim() != 2 or w.shape[1] != a.shape[1]:
                raise EvidenceError(
                    f"W needs a GAP + linear head reading the layer's {a.shape[1]} channels; the last linear "
                    f"layer reads {None if z is None else z.shape[1]} features (use a gradient method instead)")
            ev.terms["W"] = (w.detach(), "bk")
        ev.terms["S"] = (scores.detach(), "b")
        layers_ev[ref.name] = ev
    frame = target_fn.input_frame(model, x) if raw and hasattr(target_fn, "input_frame") else None
    return Evidence(x.detach(), None if logits is None else logits.detach(), scores.detach(), layers_ev, target_fn,
                    frame)
