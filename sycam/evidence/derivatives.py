"""True higher-order terminals: diagonals of d2S/dA2 (``H2``) and d3S/dA3 (``H3``).

Grad-CAM++'s closed forms G2 = G^2, G3 = G^3 are exact only when the network after the
layer is piecewise linear and S = exp(y). For anything else (a softmax target, smooth
activations) the true diagonals come from autograd over the model's suffix S(A)
(:mod:`sycam.evidence.split`), many directions at once as rows of one batch (rows are
independent because the suffix runs in eval mode):

  exact:       H2_i = e_i^T H e_i and H3_i = T[e_i, e_i, e_i] for every element i of A;
               one suffix pass per element, refused above ``max_hessian_elements`` per image.
  hutchinson:  H2 ~ mean_j v_j * (H v_j) over ``hutchinson_n`` Rademacher vectors v_j, an
               unbiased estimate (H3 has no such estimator and is exact-only).
"""
from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import EvidenceError
from .options import EvidenceOptions
from .targets import fix_target, select_output, target_rows


def _hvp_rows(suffix, a_i: Tensor, image: int, V: Tensor, target: Any, output: Any,
              keep_graph: bool) -> tuple[Tensor, Tensor]:
    """(H v_r for each row r of V, the rows' input): Hessian-vector products at image ``image``
    (``target`` fixed on the clean output: :func:`~sycam.evidence.targets.fix_target`)."""
    m = V.shape[0]
    a = a_i.detach().expand(m, *a_i.shape[1:]).clone().requires_grad_(True)
    index = torch.full((m,), image, dtype=torch.long)
    rows_target = target_rows(target, index)
    with torch.enable_grad():
        scores = rows_target(select_output(suffix(a, index), output))
        (g,) = torch.autograd.grad(scores.sum(), a, create_graph=True)
        hv = torch.autograd.grad((g * V).sum(), a, create_graph=keep_graph, allow_unused=True)[0]
    return (torch.zeros_like(a) if hv is None else hv), a


def _one_hots(n: int, shape: torch.Size, step: int, like: Tensor) -> Iterator[Tensor]:
    for start in range(0, n, step):
        idx = torch.arange(start, min(start + step, n), device=like.device)
        V = torch.zeros(idx.numel(), n, dtype=like.dtype, device=like.device)
        V[torch.arange(idx.numel()), idx] = 1
        yield V.reshape(-1, *shape)


def true_derivatives(suffix, A: Tensor, target: Any, logits: Tensor, output: Any, options: EvidenceOptions,
                     wanted: Collection[str]) -> dict[str, Tensor]:
    """H2 and/or H3 (b,k,h,w) for the activations A of a split model."""
    target = fix_target(target, logits)
    n, shape = A[0].numel(), A.shape[1:]
    third = "H3" in wanted
    exact = options.derivatives == "exact" or third
    if exact and n > options.max_hessian_elements:
        raise EvidenceError(
            f"exact diagonal derivatives need one pass per element of the layer ({n} per image, more than "
            f"max_hessian_elements={options.max_hessian_elements}); use a smaller layer, raise the limit, or "
            "options={'derivatives': 'hutchinson'} for an H2 estimate")
    step = max(options.suffix_rows(), 1)
    H2, H3 = torch.zeros_like(A), torch.zeros_like(A)
    gen = torch.Generator(device=A.device).manual_seed(options.seed)
    for i in range(A.shape[0]):
        if exact:
            offset = 0
            for V in _one_hots(n, shape, step, A):
                hv, a = _hvp_rows(suffix, A[i:i + 1], i, V, target, output, keep_graph=third)
                h2 = (hv * V).flatten(1).sum(1)
                H2[i].view(-1)[offset:offset + V.shape[0]] = h2.detach()
                if third and h2.requires_grad:   # else the suffix is at most quadratic: T = 0
                    (t,) = torch.autograd.grad(h2.sum(), a, allow_unused=True)
                    if t is not None:
                        H3[i].view(-1)[offset:offset + V.shape[0]] = (t * V).flatten(1).sum(1)
                offset += V.shape[0]
        else:
            for start in range(0, options.hutchinson_n, step):
                m = min(step, options.hutchinson_n - start)
                V = torch.randint(0, 2, (m, *shape), generator=gen, device=A.device).to(A.dtype) * 2 - 1
                hv, _ = _hvp_rows(suffix, A[i:i + 1], i, V, target, output, keep_graph=False)
                H2[i] += (V * hv).sum(0) / options.hutchinson_n
    out = {"H2": H2} if "H2" in wanted else {}
    if third:
        out["H3"] = H3
    return out
