"""Evidence capture: one forward (and at most one backward) gives everything the
expressions read.

For a batch of images, a target and one or more layers, :func:`capture` records the
layers' activations A, the target score S = target(output), the gradients G = dS/dA
taken with ``torch.autograd.grad`` with respect to the hooked tensors only (parameter
gradients are never computed: parameters are frozen for the duration of the pass), and
W = dS/dz at the input z of the classifier's last linear layer (the CAM weights of a
GAP + linear head). The Grad-CAM++ closed forms G2 = G^2 and G3 = G^3 are derived from
G. Hooks exist only inside the call, in a context manager, and are always removed.

A target marked ``reads_raw_output`` (see :mod:`sycam.evidence.targets`; e.g. an object
detector's :class:`~sycam.evidence.detection.DetectionTarget`) is given the model's raw output
instead of the logits; ``Evidence.logits`` is then None and only the single-pass terms
(A, G, G2, G3, S) are available.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import EvidenceError, SycamError
from ..kernels.layout import to_layout
from .layers import LayerRef, resolve_layers
from .targets import Target, as_target, reads_raw_output, select_output

#: terminals derived from G without another pass
CLOSED_FORMS = {"G2": 2, "G3": 3}
GRADIENT_TERMS = {"G", "G2", "G3"}
#: true diagonal derivatives, from autograd over the model's suffix (sycam.evidence.derivatives)
TRUE_DERIVATIVES = {"H2", "H3"}


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
    """Forward hooks that keep every call's output of the layers (and the head's input)."""
    record: dict = {"outputs": {}, "head_input": None}
    handles = []

    def on_output(module, _inputs, out):
        if not isinstance(out, Tensor):
            raise EvidenceError(f"layer {type(module).__name__} returns {type(out).__name__}, not a tensor; "
                                "choose a module whose output is a (b, k, h, w) tensor")
        if not out.requires_grad and torch.is_grad_enabled():
            # parameters are frozen, so nothing before made this map differentiable: hand the
            # rest of the network a differentiable copy (a copy, so that a later in-place op
            # on it is legal and shows up in its version counter)
            out = out.detach().requires_grad_(True).clone()
        record["outputs"].setdefault(id(module), []).append((out, out._version))
        return out

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


def classifier_head(model: nn.Module) -> nn.Linear | None:
    """The last linear layer registered in the model (the classifier of a GAP + linear head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _model_device(model: nn.Module, x: Tensor) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else x.device


def capture(model: nn.Module, x: Tensor, layers, target=None, *,
            needs: Iterable[str] = ("A", "G"), output=None, options=None) -> Evidence:
    """Collect the terminals in ``needs`` for every layer of ``layers`` on images ``x``.

    One forward (and one backward when gradients are needed) gives A, G, G2, G3, S, W;
    channel scores (``score``, ``ablation``, ...), scale terms (``As``, ``Gs``, ``keep``) and
    noise terms (``Av``, ``Gv``, ...) add the passes they need, set by ``options``
    (:class:`~sycam.evidence.options.EvidenceOptions` or a dict).
    ``target``: see :func:`sycam.evidence.targets.as_target` (None = top-1 logit).
    ``output``: how to find the scores in a non-tensor model output (key, index or callable).
    """
    from . import axes
    from .options import EvidenceOptions
    from .providers import Context, PROVIDERS

    refs = resolve_layers(model, layers)
    needs = set(needs) | {"A"}
    known = ({"A", "S", "W", "R"} | GRADIENT_TERMS | TRUE_DERIVATIVES | set(PROVIDERS) | axes.SCALE_TERMS
             | axes.NOISE_TERMS)
    unknown = needs - known
    if unknown:
        raise SycamError(f"capture cannot provide {sorted(unknown)} (it knows {', '.join(sorted(known))})")
    if model.training:
        warnings.warn("the model is in training mode (dropout, batch statistics): call model.eval() "
                      "for deterministic explanations", stacklevel=2)
    if x.dim() != 4:
        raise SycamError(f"images must be a (b, 3, H, W) batch, got shape {tuple(x.shape)}")
    opts = EvidenceOptions.make(options)
    x = x.to(_model_device(model, x))
    target_fn = as_target(target)
    if reads_raw_output(target_fn):
        extra = needs - ({"A", "S", "W"} | GRADIENT_TERMS)   # W: refused with its own message below
        if extra:
            raise EvidenceError(f"{sorted(extra)} need a classifier's logits, but the target reads the raw "
                                "model output (e.g. a detector's); use a gradient method (A, G, G2, G3, S)")
    ev = single_pass(model, x, refs, target_fn, needs & ({"A", "S", "W"} | GRADIENT_TERMS), output)
    for name in sorted(needs & set(PROVIDERS)):
        for ref in refs:
            ctx = Context(model, x, ref, ev.layers[ref.name].A, target_fn, output, opts)
            ev.layers[ref.name].terms[name] = (PROVIDERS[name](ctx).to(x.device), "bk")
    if "R" in needs:   # LRP relevance: its own forward and modified backward (sycam.evidence.relevance)
        from .relevance import relevance

        for layer, r in relevance(model, x, refs, target_fn, output, opts).items():
            ev.layers[layer].terms["R"] = (r, "bkhw")
    if needs & TRUE_DERIVATIVES:
        from .derivatives import true_derivatives
        from .split import split_model

        for ref in refs:
            suffix = split_model(model, ref.name, x, check=False)
            ev.layers[ref.name].terms.update(true_derivatives(
                suffix, ev.layers[ref.name].A, target_fn, ev.logits, output, opts, needs & TRUE_DERIVATIVES))
    for group, build in ((axes.SCALE_TERMS, axes.scale_terms), (axes.NOISE_TERMS, axes.noise_terms)):
        if needs & group:
            extra = build(single_pass, model, x, refs, target_fn, ev.logits, output, opts)
            for layer, terms in extra.items():
                ev.layers[layer].terms.update(terms)
    return ev


def single_pass(model: nn.Module, x: Tensor, refs: list[LayerRef], target_fn, needs: set[str],
                output=None) -> Evidence:
    """One forward (+ one backward if gradients or W are needed) on ``x``."""
    needs = set(needs) | {"A"}
    want_grad = bool(needs & GRADIENT_TERMS)
    raw = reads_raw_output(target_fn)
    if raw and "W" in needs:
        raise EvidenceError("W (classifier weights) needs a classification model, but the target reads the raw "
                            "model output (e.g. a detector's); use a gradient method such as gradcam")
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

    activations = []
    for ref in refs:
        calls = rec["outputs"].get(id(ref.module), [])
        if not calls:
            raise EvidenceError(f"layer {ref.name} did not run in the forward pass")
        if not -len(calls) <= ref.call < len(calls):
            raise EvidenceError(f"layer {ref.name} ran {len(calls)} time(s); call {ref.call} does not exist")
        a, version = calls[ref.call]
        if a._version != version:
            raise EvidenceError(
                f"the output of layer {ref.name} is modified in place later in the forward pass "
                "(e.g. by `+=` or an inplace ReLU), so its value and gradient are not the layer's; "
                "choose the module that produces the final value (e.g. the enclosing block)")
        if a.dim() != 4:
            raise EvidenceError(f"layer {ref.name} gives shape {tuple(a.shape)}; a CAM layer must give (b, k, h, w)")
        if raw and a.shape[0] != x.shape[0]:
            raise EvidenceError(f"layer {ref.name} gives {a.shape[0]} rows for {x.shape[0]} images (not one map per "
                                "image, e.g. per-region features of a detector head); choose a backbone layer")
        activations.append(a)

    z = rec["head_input"]
    wrt = (activations if want_grad else []) + ([z] if z is not None else [])
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
            g = g.detach()
            ev.terms["G"] = (g, "bkhw")
            for name, power in CLOSED_FORMS.items():
                if name in needs:
                    ev.terms[name] = (g.pow(power), "bkhw")
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


def needed_terms(names: Iterable[str]) -> set[str]:
    """Capture terms for a set of terminal names (closed forms need G)."""
    names = set(names)
    return names | ({"G"} if names & GRADIENT_TERMS else set())
