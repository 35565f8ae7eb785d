"""XGrad-CAM's axioms as errors (Fu et al., BMVC 2020, https://arxiv.org/abs/2008.02312).

These score a CAM's channel weights, not its pixels, so they take an :class:`AxiomInput`
instead of maps (call ``metric(None, batch, axioms=AxiomInput(...))``):

* conservation  E_cons = |S - sum_k sum_hw W_k A_k| / |S|  (free);
* sensitivity   E_sens = sum_k |S - S(A with A_k = 0) - sum_hw W_k A_k| / |S|  (K head
  evaluations per image, shared by all candidates).

S is the target score as a function of the target layer's activations A (``head``), W_k the
candidate's weight for channel k, a scalar or a spatial map. Both errors are normalised by |S|
(XGrad-CAM states them unnormalised). Lower is better.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.batch import Batch
from .base import Cost, Direction, Metric, MetricError, Resources

Head = Callable[[Tensor, Tensor], Tensor]


@dataclass
class AxiomInput:
    """What the axiom errors need about the target layer.

    activations: ``(b,K,h,w)`` A at the target layer.
    weights: per-channel weights of the candidate(s): ``(b,K)``, ``(n,b,K)`` or spatial
        ``(b,K,h,w)``, ``(n,b,K,h,w)`` (the CAM before ReLU is ``sum_k W_k * A_k``).
    head: ``head(A (m,K,h,w), labels (m,)) -> S (m,)``, the rest of the network from the target
        layer to the target score (e.g. the logit). Needed for sensitivity, and for the score
        when ``score`` is not given.
    score: ``(b,)`` S(A); computed with ``head`` when None.
    drops: ``(b,K)`` S(A) - S(A with channel k zeroed), when known (they do not depend on the
        candidate: the search captures them once per image); computed with ``head`` when None.
    """

    activations: Tensor
    weights: Tensor
    head: Head | None = None
    score: Tensor | None = None
    drops: Tensor | None = None

    def candidate_weights(self) -> tuple[Tensor, bool]:
        """Weights as ``(n,b,K,h,w)`` (broadcastable) and whether a candidate axis was given."""
        a, w = self.activations, self.weights
        if a.dim() != 4:
            raise MetricError(f"activations must be (b,K,h,w), got {tuple(a.shape)}")
        b, k = a.shape[:2]
        if w.dim() in (2, 4) and w.shape[:2] == (b, k):
            w, single = w[None], True
        elif w.dim() in (3, 5) and w.shape[1:3] == (b, k):
            single = False
        else:
            raise MetricError(f"weights must be (b,K), (n,b,K), (b,K,h,w) or (n,b,K,h,w) with b={b}, K={k}; "
                              f"got {tuple(w.shape)}")
        if w.dim() == 3:
            w = w[..., None, None]
        return w, single

    def target_score(self, labels: Tensor) -> Tensor:
        if self.score is not None:
            return self.score.float()
        if self.head is None:
            raise MetricError("AxiomInput needs score= or head= to know S(A)")
        with torch.no_grad():
            return self.head(self.activations, labels).float()


class _AxiomError(Metric):
    direction = Direction.LOWER
    needs = frozenset({"axioms"})
    uses_maps = False

    def contributions(self, ax: AxiomInput) -> tuple[Tensor, bool]:
        """sum_hw W_k A_k: ``(n,b,K)``."""
        w, single = ax.candidate_weights()
        return (w * ax.activations[None]).sum((-2, -1)), single


class ConservationError(_AxiomError):
    """E_cons = |S - sum_k sum_hw W_k A_k| / |S|. Cost: nothing."""

    name = "xgrad_conservation"

    def compute(self, maps: Tensor | None, batch: Batch, res: Resources) -> Tensor:
        ax: AxiomInput = res.axioms
        contrib, single = self.contributions(ax)
        s = ax.target_score(batch.labels.to(ax.activations.device))
        err = (s - contrib.sum(-1)).abs() / s.abs().clamp_min(1e-12)
        return err[0] if single else err


class SensitivityError(_AxiomError):
    """E_sens = sum_k |S - S(A_{-k}) - sum_hw W_k A_k| / |S|; S(A_{-k}) from ``head`` with
    channel k zeroed (batched, ``batch_size`` ablations per call). Cost: K head calls per image."""

    name = "xgrad_sensitivity"
    cost = Cost(note="K head evaluations per image (K = channels), shared by all candidates")

    def ablation_drops(self, ax: AxiomInput, labels: Tensor, batch_size: int) -> Tensor:
        """S - S(A_{-k}) for every channel: ``(b,K)``."""
        if ax.drops is not None:
            return ax.drops.float()
        if ax.head is None:
            raise MetricError("xgrad_sensitivity needs AxiomInput.head to re-score ablated activations")
        a = ax.activations
        b, k = a.shape[:2]
        s = ax.target_score(labels)
        jobs = b * k
        out = []
        with torch.no_grad():
            for start in range(0, jobs, batch_size):
                j = torch.arange(start, min(start + batch_size, jobs), device=a.device)
                img, ch = j // k, j % k
                ablated = a[img].clone()
                ablated[torch.arange(j.numel(), device=a.device), ch] = 0
                out.append(ax.head(ablated, labels[img]).float())
        return s[:, None] - torch.cat(out).view(b, k)

    def compute(self, maps: Tensor | None, batch: Batch, res: Resources) -> Tensor:
        ax: AxiomInput = res.axioms
        labels = batch.labels.to(ax.activations.device)
        contrib, single = self.contributions(ax)
        drops = self.ablation_drops(ax, labels, res.batch_size)
        s = ax.target_score(labels)
        err = (drops[None] - contrib).abs().sum(-1) / s.abs().clamp_min(1e-12)
        return err[0] if single else err
