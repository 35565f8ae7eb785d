"""FullGrad's bias-gradients (Srinivas & Fleuret, Full-Gradient Representation for Neural Network
Visualization, NeurIPS 2019, arXiv:1905.00780).

For a ReLU network with eval-mode BatchNorm the target score splits exactly (completeness):

    S(x) = sum(dS/dx * x) + sum_l sum_{c,h,w} f_l,    f_l = b_l * dS/dz_l,

z_l the output of layer l and b_l its bias (a BatchNorm's effective bias,
beta - mu * gamma / sqrt(var + eps)). The FullGrad map is

    FullGrad = sum_k psi(|dS/dx * x|_k) + sum_l sum_c psi(|f_l|_c),    psi = Up o minmax_hw,

psi applied per channel and upsampled (bilinearly, half-pixel centres) to the input. The input
term is an expression of the language, ``sum(norm(abs(Gx * X), hw), k)``; the bias term is the
terminal ``FB``, made here from the first pass's backward (:func:`sycam.evidence.forward.single_pass`):

* :func:`bias_probes` hooks every ``Conv2d`` with a bias and every ``BatchNorm2d``: each call's
  output z goes on as z + delta, delta a zero tensor, so that the backward that gives dS/dx gives
  dS/d delta = dS/dz too (also where an in-place ReLU then overwrites z);
* :func:`bias_map` turns those gradients into FB at the input's size.

As in the authors' code and pytorch-grad-cam, only those (4-D) layers enter the map: a linear
layer's bias-gradient has no grid. The authors' code min-maxes each layer over all its channels
at once and upsamples with ``align_corners=True``; the paper's formula, which pytorch-grad-cam
and sycam follow, takes psi per channel.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import EvidenceError
from ..grammar.semantics import minmax
from ..kernels.postprocess import upsample


@dataclass
class BiasProbe:
    """One call of a layer with a bias: the zero ``delta`` added to its output (dS/d delta = dS/dz)
    and its (effective) ``bias``, (c,)."""

    delta: Tensor
    bias: Tensor


def effective_bias(module: nn.Module) -> Tensor | None:
    """The bias a layer adds to its output: a Conv2d's ``bias``; a BatchNorm2d's
    beta - mu * gamma / sqrt(var + eps) from its running statistics; None for other layers."""
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            raise EvidenceError(f"FullGrad needs BatchNorm running statistics; {module} has none "
                                "(track_running_stats=False), so its bias is not a constant")
        scale = (module.running_var + module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight
        bias = -module.running_mean * scale
        return (bias if module.bias is None else bias + module.bias).detach()
    if isinstance(module, nn.Conv2d) and module.bias is not None:
        return module.bias.detach()
    return None


@contextlib.contextmanager
def bias_probes(model: nn.Module, active: bool = True) -> Iterator[list[BiasProbe]]:
    """Inside the block, every call of a layer with a bias (:func:`effective_bias`) adds a probe
    to the yielded list; nothing when not ``active``. Hooks are always removed."""
    probes: list[BiasProbe] = []
    handles = []

    def probe(bias: Tensor):
        def on_output(_module, _inputs, out):
            if not (torch.is_grad_enabled() and isinstance(out, Tensor) and out.dim() == 4):
                return None
            delta = out.new_zeros((), requires_grad=True).expand(out.shape)   # one scalar, not a copy of z
            probes.append(BiasProbe(delta, bias.to(out.dtype)))
            return out + delta
        return on_output

    try:
        if active:
            for module in model.modules():
                bias = effective_bias(module)
                if bias is not None:
                    handles.append(module.register_forward_hook(probe(bias)))
        yield probes
    finally:
        for h in handles:
            h.remove()


def bias_map(probes: list[BiasProbe], grads: list[Tensor | None], x: Tensor) -> Tensor:
    """FB (b, H, W) for images ``x``: the sum over the probed calls of Up(sum_c minmax_hw |b_c dS/dz_c|).
    A layer that does not reach the target (gradient None) adds nothing; no probed layer gives zeros."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    total = x.new_zeros(x.shape[0], *size)
    for probe, g in zip(probes, grads):
        if g is not None:
            per_channel = minmax((g * probe.bias[:, None, None]).abs(), (-2, -1))
            total = total + upsample(per_channel.sum(dim=1), size)
    return total
