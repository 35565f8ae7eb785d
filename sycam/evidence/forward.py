"""The first pass of a capture: one forward and the backward(s) read from its graph.

:func:`single_pass` records the layers' activations A and the target score S = target(output);
when asked, one backward gives the gradients G = dS/dA (``torch.autograd.grad`` with respect to the
hooked tensors only: parameters are frozen for the duration of the pass, so their gradients are
never computed), W = dS/dz at the input z of the classifier's last linear layer (the CAM weights
of a GAP + linear head), and at the input's resolution Gx = dS/dx and FullGrad's bias term FB
(:mod:`sycam.evidence.fullgrad`). From the same graph: HA = H A, the Hessian of S with respect to
A times A (ShapleyCAM; that backward then keeps its graph, and each layer costs one
Hessian-vector product more), and GB, the guided-backpropagation input gradient (one more
backward through guided ReLUs, :mod:`sycam.evidence.guided`). Hooks exist only inside the call,
in context managers, and are always removed. A hook keeps the layer's output and hands the rest of
the network a copy, so an in-place op after the layer (vgg's ``ReLU(inplace=True)``) changes the
copy, not the recorded value; a token layer's output and gradients become (b, k, h, w) maps
through its reshape (:meth:`~sycam.evidence.layers.LayerRef.map`). :mod:`sycam.evidence.capture` runs it first; the
scale and noise passes (:mod:`sycam.evidence.axes`) run it on resized and noisy images, LRP
(:mod:`sycam.evidence.relevance`) reuses its hooks.

A target marked ``reads_raw_output`` (see :mod:`sycam.evidence.targets`; e.g. an object
detector's :class:`~sycam.evidence.detection.DetectionTarget`) is given the model's raw output
instead of the logits; ``Evidence.logits`` is then None. A dense target (a segmentation
model's, ``dense_output``) reads per-pixel scores (b, classes, H, W), kept as ``Evidence.logits``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import EvidenceError
from ..kernels.layout import to_layout
from .fullgrad import bias_map, bias_probes
from .guided import guided_relus
from .layers import LayerRef
from .targets import Target, reads_dense_output, reads_raw_output, select_output


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


def check_output(logits: Tensor, target_fn) -> None:
    """EvidenceError unless the model's scores are what the target reads: (b, classes) logits, or
    per-pixel scores (b, classes, H, W) for a dense target (:class:`~sycam.evidence.targets.SegmentationTarget`)."""
    if reads_dense_output(target_fn):
        if logits.dim() != 4:
            raise EvidenceError(f"{type(target_fn).__name__} reads per-pixel scores (b, classes, H, W); the model "
                                f"gave shape {tuple(logits.shape)}: use it with a segmentation model")
    elif logits.dim() == 4:
        raise EvidenceError(f"the model gives per-pixel scores of shape {tuple(logits.shape)}, which "
                            f"{type(target_fn).__name__} does not read: say which pixels to explain with "
                            "SegmentationTarget(class, mask) (--segment on the command line)")
    elif logits.dim() != 2:
        raise EvidenceError(f"expected (b, classes) scores from the model, got shape {tuple(logits.shape)}")


#: the terminals of the first pass read from a backward, and those computed at the input's resolution
BACKWARD_TERMS = frozenset({"G", "W", "HA", "Gx", "FB", "GB"})
INPUT_TERMS = {"Gx": "bkhw", "FB": "bhw", "GB": "bkhw"}


def single_pass(model: nn.Module, x: Tensor, refs: list[LayerRef], target_fn, needs: Collection[str],
                output=None) -> Evidence:
    """A and S of every layer on ``x``; with G, W, HA, Gx, FB and GB when ``needs`` holds them (then
    one backward, one Hessian-vector product per layer for HA, and one guided backward for GB)."""
    want_grad = bool({"G", "HA"} & set(needs))
    second_order = "HA" in needs
    raw = reads_raw_output(target_fn)
    head = classifier_head(model) if "W" in needs else None
    if "W" in needs and head is None:
        raise EvidenceError("W (classifier weights) needs a model that ends in a linear layer")
    x_in = x.detach().requires_grad_(True) if {"Gx", "GB"} & set(needs) else x

    differentiate = bool(BACKWARD_TERMS & set(needs))
    with frozen_parameters(model), torch.set_grad_enabled(differentiate), \
            bias_probes(model, "FB" in needs) as probes, guided_relus(model, "GB" in needs) as guided:
        with recording(refs, head) as rec:
            out = model(x_in)
        if raw:   # the target reads the output as it is (list of detections, ...)
            logits, scores = None, target_fn(out)
        else:
            logits = select_output(out, output)
            check_output(logits, target_fn)
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
    layer_grads = outputs if want_grad else []    # as the layers give them (tokens too); mapped below
    head_grad = [z] if z is not None else []
    input_grad = [x_in] if "Gx" in needs else []
    wrt = layer_grads + head_grad + input_grad + [p.delta for p in probes]
    grads: list[Tensor | None] = []
    if differentiate and not scores.requires_grad:   # the layer does not feed the target
        raise EvidenceError("the target score does not depend on the layer (no gradient path)")
    with torch.enable_grad():   # the caller may be inside torch.no_grad()
        if wrt:
            grads = list(torch.autograd.grad(scores.sum(), wrt, allow_unused=True, create_graph=second_order,
                                             retain_graph=second_order or "GB" in needs))
        hessian_a = [hessian_times(g, o) for g, o in zip(grads, outputs)] if second_order else []
        if "GB" in needs:
            guided.on = True
            (guided_gx,) = torch.autograd.grad(scores.sum(), x_in)

    shared: dict[str, Tensor] = {}         # input-resolution terms, one tensor for every layer
    if input_grad:
        gx = grads[len(layer_grads) + len(head_grad)]
        if gx is None:
            raise EvidenceError("the target score does not depend on the input (no gradient path to x)")
        shared["Gx"] = gx.detach()
    if "FB" in needs:
        shared["FB"] = bias_map(probes, grads[len(wrt) - len(probes):], x).detach()
    if "GB" in needs:
        shared["GB"] = guided_gx.detach()

    layers_ev: dict[str, LayerEvidence] = {}
    for i, (ref, a) in enumerate(zip(refs, activations)):
        ev = LayerEvidence(ref.name, {"A": (a.detach(), "bkhw")})
        if want_grad:
            g = grads[i]
            if g is None:
                raise EvidenceError(f"the target score does not depend on layer {ref.name}")
            ev.terms["G"] = (ref.map(g.detach()), "bkhw")
        if second_order:
            ev.terms["HA"] = (ref.map(hessian_a[i]), "bkhw")
        if "W" in needs:
            w = grads[len(layer_grads)]
            if w is None or w.dim() != 2 or w.shape[1] != a.shape[1]:
                raise EvidenceError(
                    f"W needs a GAP + linear head reading the layer's {a.shape[1]} channels; the last linear "
                    f"layer reads {None if z is None else z.shape[1]} features (use a gradient method instead)")
            ev.terms["W"] = (w.detach(), "bk")
        ev.terms["S"] = (scores.detach(), "b")
        for name, value in shared.items():
            ev.terms[name] = (value, INPUT_TERMS[name])
        layers_ev[ref.name] = ev
    frame = target_fn.input_frame(model, x) if raw and hasattr(target_fn, "input_frame") else None
    return Evidence(x.detach(), None if logits is None else logits.detach(), scores.detach(), layers_ev, target_fn,
                    frame)


def hessian_times(g: Tensor | None, a: Tensor) -> Tensor:
    """H a = d(g . a)/da with a held fixed in the product, for g = dS/da computed with its graph: one
    Hessian-vector product (a double backward). A gradient that does not depend on a (the model
    after the layer is piecewise linear in it) gives H a = 0 exactly."""
    if g is None or not g.requires_grad:
        return torch.zeros_like(a).detach()
    (hv,) = torch.autograd.grad((g * a.detach()).sum(), a, retain_graph=True, allow_unused=True)
    return torch.zeros_like(a).detach() if hv is None else hv.detach()
