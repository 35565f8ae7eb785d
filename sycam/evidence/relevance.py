"""LRP relevance at a layer: the terminal ``R`` (Relevance-CAM, Lee et al., CVPR 2021).

``R`` (axes b k h w) is the layer-wise relevance of the target score that arrives at the
layer's output when it is propagated down from the model's output with LRP rules. The
Relevance-CAM seed reads it as channel weights w_k = sum_hw R_k.

How it is computed (one forward + one modified backward)
--------------------------------------------------------
The backward carries *gradients* g, and relevance is read as ``R = activation * g`` at any
tensor (the "gradient x input" form of LRP). Every operation that autograd differentiates
as-is then implements LRP's proportional z-rule exactly, without any rule of its own:
sums such as residual additions (``R_a = a g``, ``R_b = b g``, so R splits in proportion
a : b), average pooling, max pooling (all R to the winner), padding, flatten, concat, and
ReLU (``relu(x) g = x g 1[x > 0]``: relevance passes through). Only three kinds of modules
get a custom backward (a ``torch.autograd.Function`` installed by temporarily replacing the
module's ``forward``; the forward values are unchanged):

* affine layers (``nn.Linear``, ``nn.Conv1d/2d/3d``, including grouped/depthwise and
  subclasses such as EfficientNet's ``Conv2dStaticSamePadding``, whose own ``forward``
  is reused with modified parameters): R_out = y g is redistributed to the input by
  - **z+** (alpha1-beta0 with signed inputs, zennit's ``ZPlus``): only the positive
    contributions count, z_i = sum_j (x_j w_ij)^+ (+ b_i^+), R_j = sum_i (x_j w_ij)^+ R_i / z_i;
  - **epsilon**: R_j = sum_i x_j w_ij R_i / (z_i + eps sign z_i), z the layer's output
    (bias included, so relevance is conserved exactly only for zero biases and eps -> 0);
* ``BatchNorm`` in eval mode that directly follows an affine layer is **merged** into it
  (canonisation: the rule sees the affine map W' = s W, b' = s b + t of conv + BN); a
  BatchNorm that follows anything else passes relevance through unchanged (R_in = R_out);
* element-wise activations other than ReLU (``ReLU6``, ``Hardtanh``, ``SiLU``, ``GELU``, ...)
  pass relevance through (R_in = R_out, zennit's ``Pass``), i.e. g_in = g_out f(x) / x.
  (ReLU's own gradient already does this; ReLU6's would drop the relevance of x > 6.)
  Activations called as functions (``F.relu6``) are not seen and keep their gradient.

Not handled: multiplicative gates (squeeze-excitation, attention): autograd gives *both*
factors of ``x * s`` the full relevance, so a layer below such a gate receives it twice (zennit
needs a canonizer there too). EfficientNet-Lite, ResNet and VGG have none.

The relevance enters at the model's output as r = z * dS/dz (z: logits, S: the target), i.e.
y_c on the explained class for the logit target, so with the z-rule / epsilon -> 0 and zero
biases ``sum(R) = S`` at every layer (conservation; tested). ``lrp_contrast="clrp"``
(contrastive LRP, Gu et al. 2018, used by the official Relevance-CAM code) subtracts the
relevance of the "dual": the target's total relevance spread evenly (1/C each) over the classes
the target does not read, r'_j = r_j - sum(r)/C. Rules, epsilon and contrast are
:class:`~sycam.evidence.options.EvidenceOptions` (``lrp_rule``, ``lrp_epsilon``,
``lrp_contrast``); the defaults follow the official code (z+ everywhere, CLRP). Only the layers
*above* the explained layer matter, so no input-layer rule (z^B, flat) is needed. The official
code starts from a one-hot relevance (1, not y_c) for the class: for y_c > 0 that is a positive
rescaling of R, which Relevance-CAM's normalised map does not see.

Why not zennit (the well-kept PyTorch LRP library)
--------------------------------------------------
zennit 0.5.1 (last release 2023) installs and runs under torch 2.14 here and is the
reference these rules were checked against: with the same rules the relevance at
intermediate layers agrees to <= 1e-4 of the largest value for z+ / epsilon_plus (<= 2e-3 for
the epsilon rule, whose small denominators amplify rounding) on torchvision VGG-11, VGG-11-BN,
ResNet-18 and EfficientNet-Lite0 (float64); a ResNet test runs when zennit is installed. It is
not a dependency because: (1) zennit carries relevance
itself through the backward, so every operation without a rule that is not the identity on
relevance must be rewritten by a canonizer: a residual addition (``x + inputs`` inside
EfficientNet's ``MBConvBlock.forward``) would *copy* relevance into both branches (ResNet-18
without its Sum rule: 4x the relevance at layer3). zennit ships canonizers for torchvision's
ResNet/VGG but none for the default EfficientNet-Lite0; the parity check above needed a
hand-written block canonizer (Sum module), named BatchNorm pairs (its convolutions, which hold
a padding sub-module, are not leaves, so the sequential merge misses them) and a fix: zennit's
merge leaves the BatchNorm's eps in the identity it leaves behind, x / sqrt(1 + eps), which
with EfficientNet's eps = 1e-3 changes the forward itself (logits by up to 0.2 % of the largest,
relevance at ``head`` by ~1 %).
In the gradient x input form used here sums, pooling and concatenation are already correct
and the forward is never modified, so torchvision CNNs and EfficientNet-Lite0 (ReLU6,
depthwise convs, BN, residuals) work with no per-architecture code. (2) It would add an
LGPL-3.0 package (plus ``click``) to an Apache-2.0 project for ~250 lines of rules. (3)
Relevance-CAM needs relevance at one intermediate layer, which zennit only exposes through a
tensor hook under its composite anyway.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import EvidenceError, SycamError
from .forward import aliased, frozen_parameters, recording
from .layers import LayerRef
from .options import EvidenceOptions
from .targets import select_output

RULES = ("zplus", "epsilon", "epsilon_plus")   # epsilon_plus: z+ on convolutions, epsilon on Linear
CONTRASTS = ("none", "clrp")

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: element-wise activations with f(0) = 0 that get the pass rule (ReLU's gradient already is one)
ACTIVATIONS = (nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish, nn.Tanh)


def stabilise(z: Tensor, eps: float) -> Tensor:
    """z + eps * sign(z), with sign(0) = +1 (zennit's stabiliser)."""
    return z + torch.where(z >= 0, eps, -eps)


@contextlib.contextmanager
def _swapped(module: nn.Module, **params: Tensor | None) -> Iterator[None]:
    """Parameters of ``module`` replaced by plain tensors (or None) inside the block."""
    saved = {k: module._parameters[k] for k in params}
    try:
        for k, v in params.items():
            module._parameters[k] = v    # type: ignore[assignment]
        yield
    finally:
        for k, v in saved.items():
            module._parameters[k] = v


def _bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as y = s x + t, per channel."""
    var, mean = bn.running_var, bn.running_mean
    s = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    t = -mean * s
    if bn.bias is not None:
        t = t + bn.bias
    return s, t


@dataclass(eq=False)
class _Affine:
    """An affine module (optionally followed by an eval BatchNorm merged into it) and its rule."""

    module: nn.Module
    forward: object          # the module's own (unpatched) forward
    norm: nn.Module | None
    norm_forward: object | None
    rule: str                # "zplus" | "epsilon"
    eps: float

    def value(self, x: Tensor) -> Tensor:
        y = self.forward(x)
        return self.norm_forward(y) if self.norm is not None else y

    def _merged(self) -> tuple[Tensor, Tensor | None]:
        w, b = self.module.weight, self.module.bias
        if self.norm is None:
            return w, b
        s, t = _bn_affine(self.norm)
        shape = (-1,) + (1,) * (w.dim() - 1)
        return w * s.view(shape), (t if b is None else b * s + t)

    def responses(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(original output y, detached; rule response z, differentiable in x)."""
        if self.rule == "epsilon":
            z = self.value(x)
            return z.detach(), z
        with torch.no_grad():
            y = self.value(x)
        w, b = self._merged()
        with _swapped(self.module, weight=w.clamp(min=0), bias=None if b is None else b.clamp(min=0)):
            z = self.forward(x.clamp(min=0))
        with _swapped(self.module, weight=w.clamp(max=0), bias=None):
            z = z + self.forward(x.clamp(max=0))
        return y, z


class _AffineRule(torch.autograd.Function):
    """Forward: the layer's own output. Backward: the LRP rule, g_x = J_z^T (y g / z)."""

    @staticmethod
    def forward(ctx, x: Tensor, pre: Tensor | None, layer: _Affine) -> Tensor:   # type: ignore[override]
        ctx.layer = layer
        ctx.save_for_backward(x)
        if pre is not None:          # the affine output, already computed: only the norm is left
            return layer.norm_forward(pre)
        return layer.value(x)

    @staticmethod
    def backward(ctx, g: Tensor):   # type: ignore[override]
        (x,) = ctx.saved_tensors
        layer: _Affine = ctx.layer
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            y, z = layer.responses(xx)
            s = (y * g) / stabilise(z.detach(), layer.eps)
            (gx,) = torch.autograd.grad(z, xx, s)
        return gx, None, None


class _PassRule(torch.autograd.Function):
    """Element-wise activation whose relevance passes through: g_x = g f(x) / x."""

    @staticmethod
    def forward(ctx, x: Tensor, act) -> Tensor:   # type: ignore[override]
        ctx.act = act
        ctx.save_for_backward(x)
        return act(x)

    @staticmethod
    def backward(ctx, g: Tensor):   # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * ctx.act(x) / stabilise(x, 1e-12), None


class _NormPass(torch.autograd.Function):
    """A BatchNorm not preceded by an affine layer: relevance passes through (R_in = R_out)."""

    @staticmethod
    def forward(ctx, x: Tensor, norm_forward) -> Tensor:   # type: ignore[override]
        y = norm_forward(x)
        ctx.save_for_backward(x, y)
        return y.clone()

    @staticmethod
    def backward(ctx, g: Tensor):   # type: ignore[override]
        x, y = ctx.saved_tensors
        return g * y / stabilise(x, 1e-12), None


def _out_of_place(module: nn.Module, forward):
    if getattr(module, "inplace", False):
        return lambda x: forward(x.clone())
    return forward


@contextlib.contextmanager
def lrp_mode(model: nn.Module, rule: str = "zplus", eps: float = 1e-6,
             barriers: Sequence[nn.Module] = ()) -> Iterator[None]:
    """Inside the block, backward passes through ``model`` follow the LRP rules.

    Forward values are unchanged. ``barriers``: modules whose outputs must stay in the graph
    (the explained layers), so no BatchNorm after them is merged into the layer before.
    """
    if rule not in RULES:
        raise SycamError(f"unknown LRP rule {rule!r}; choose from {', '.join(RULES)}")
    affine_out: dict[int, tuple[Tensor, _Affine, Tensor]] = {}   # id(output) -> (output, layer, input)
    patched: list[tuple[nn.Module, object]] = []

    def affine(module: nn.Module, forward):
        conv = not isinstance(module, nn.Linear)
        layer = _Affine(module, forward, None, None, "zplus" if rule == "zplus" or (rule == "epsilon_plus" and conv)
                        else "epsilon", eps)

        def wrapped(x, *args, **kwargs):
            if args or kwargs or not isinstance(x, Tensor) or not x.requires_grad:
                return forward(x, *args, **kwargs)
            y = _AffineRule.apply(x, None, layer)
            affine_out[id(y)] = (y, layer, x)
            return y
        return wrapped

    def norm(module: nn.Module, forward):
        def wrapped(x, *args, **kwargs):
            if args or kwargs or not isinstance(x, Tensor) or not x.requires_grad:
                return forward(x, *args, **kwargs)
            if module.training or module.running_var is None:
                return forward(x)    # batch statistics: not an affine map of x; plain gradient
            before = affine_out.pop(id(x), None)
            if before is not None and before[0] is x:
                _, prev, x_in = before
                layer = _Affine(prev.module, prev.forward, module, forward, prev.rule, prev.eps)
                return _AffineRule.apply(x_in, x.detach(), layer)
            return _NormPass.apply(x, forward)
        return wrapped

    def activation(module: nn.Module, forward):
        act = _out_of_place(module, forward)

        def wrapped(x, *args, **kwargs):
            if args or kwargs or not isinstance(x, Tensor) or not x.requires_grad:
                return forward(x, *args, **kwargs)
            return _PassRule.apply(x, act)
        return wrapped

    def barrier(_module, _inputs, out):
        if isinstance(out, Tensor):
            affine_out.pop(id(out), None)

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, AFFINE):
                make = affine
            elif isinstance(module, NORMS):
                make = norm
            elif isinstance(module, ACTIVATIONS):
                make = activation
            else:
                continue
            previous = module.__dict__.get("forward")
            patched.append((module, previous))
            module.forward = make(module, module.forward)   # type: ignore[method-assign]
        for module in {id(m): m for m in barriers}.values():
            handles.append(module.register_forward_hook(barrier))
        yield
    finally:
        for h in handles:
            h.remove()
        for module, previous in reversed(patched):
            if previous is None:
                del module.forward
            else:
                module.forward = previous   # type: ignore[method-assign]
        affine_out.clear()


def output_relevance(logits: Tensor, target_fn, contrast: str = "clrp", eps: float = 1e-6) -> Tensor:
    """The gradient to feed the logits so that their relevance is r = z * dS/dz (minus the dual
    for CLRP): ``(b, C)``. Returns g with z * g = r (no division where the target reads z)."""
    if contrast not in CONTRASTS:
        raise SycamError(f"unknown LRP contrast {contrast!r}; choose from {', '.join(CONTRASTS)}")
    z = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = target_fn(z)
        if scores.shape != (z.shape[0],):
            raise EvidenceError(f"the target returned shape {tuple(scores.shape)}; it must give one score per "
                                f"image, shape ({z.shape[0]},)")
        (ds,) = torch.autograd.grad(scores.sum(), z, allow_unused=True)
    if ds is None:
        raise EvidenceError("the target score does not depend on the model output")
    g = ds.detach()
    if contrast == "clrp":
        total = (z.detach() * g).sum(dim=1, keepdim=True)          # the target's relevance, sum(r)
        others = (g == 0)
        dual = total / z.shape[1]                                   # 1/C of it on each other class
        g = torch.where(others, -dual / stabilise(z.detach(), eps), g)
    return g


def relevance(model: nn.Module, x: Tensor, refs: Sequence[LayerRef], target_fn, output=None,
              options: EvidenceOptions | dict | None = None) -> dict[str, Tensor]:
    """LRP relevance ``(b, k, h, w)`` of the target score at the output of each layer in ``refs``.

    One forward under :func:`lrp_mode` and one backward from the logits.
    """
    opts = EvidenceOptions.make(options)
    if opts.lrp_contrast not in CONTRASTS:
        raise SycamError(f"unknown LRP contrast {opts.lrp_contrast!r}; choose from {', '.join(CONTRASTS)}")
    barriers = [r.module for r in refs]
    with frozen_parameters(model), torch.enable_grad():
        with lrp_mode(model, opts.lrp_rule, opts.lrp_epsilon, barriers), recording(refs, None) as rec:
            logits = select_output(model(x), output)
        if logits.dim() != 2:
            raise EvidenceError(f"LRP relevance (R) starts from (b, classes) logits; the model gave shape "
                                f"{tuple(logits.shape)} (for per-pixel scores use a gradient or perturbation method)")
        activations = []
        for ref in refs:
            calls = rec["outputs"].get(id(ref.module), [])
            if not -len(calls) <= ref.call < len(calls):
                raise EvidenceError(f"layer {ref.name} did not run (call {ref.call}) in the relevance pass")
            a, version = calls[ref.call]
            if a._version != version:
                raise EvidenceError(aliased(ref.name))
            ref.map(a)    # a layer that gives no (b, k, h, w) map fails here, before the backward
            activations.append(a)
        g_out = output_relevance(logits, target_fn, opts.lrp_contrast, opts.lrp_epsilon)
        if not logits.requires_grad:
            raise EvidenceError("the target score does not depend on the layer (no relevance path)")
        grads = torch.autograd.grad(logits, activations, g_out, allow_unused=True)
    out = {}
    for ref, a, g in zip(refs, activations, grads):
        if g is None:
            raise EvidenceError(f"the target score does not depend on layer {ref.name}")
        out[ref.name] = ref.map((a * g).detach())
    return out
