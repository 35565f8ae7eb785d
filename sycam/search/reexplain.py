"""Candidates re-run on other inputs or another model, from evidence captured once: what lets the
search optimise metrics that re-explain (noise robustness, equivariance, ADCC, the cascading
sanity check) and XGrad-CAM's axiom errors.

In the search, a candidate's explanation of inputs x' by a model f' is the candidate expression
evaluated on the evidence of (f', x'), post-processed as :class:`sycam.CAM` does it (upsample,
min-max per layer, fusion; :func:`sycam.kernels.memo.maps_from_values`). The evidence is captured
once per (model weights, inputs, labels), found again by a content fingerprint
(:mod:`sycam.kernels.fingerprint`), and every chunk of candidates is evaluated on it through a
:class:`~sycam.kernels.memo.Memo`. The metric's transforms, noise samples and randomised models
are seeded by its parameters, so they are re-created identically on every chunk: only the first
chunk (the seeds) captures (``captures`` counts them), the others only evaluate.

:class:`Reexplainer` is given to :class:`~sycam.search.evaluate.Evaluator` as the resource
``reexplainer=``; for each chunk of candidates it hands the metric

* ``explainer(x, labels) -> (n,m,H,W)`` (and ``lowres(x, labels) -> (n,m,h,w)``, the raw maps at
  feature resolution, for metrics exact there), ``explainer(x, labels, candidates=idx)`` (row j
  by candidate idx[j]: ADCC's x * L_i, captured per call and batched over the chunk);
* ``explainer_factory(model)``: the same on another model (a randomised copy);
* ``model_fn``: the model's logits memoised by input fingerprint, so a metric's shared forwards
  (original and noisy predictions) run once per image set, not once per chunk;
* ``axioms``: an :class:`~sycam.metrics.axioms.AxiomInput` of the candidates' channel weights,
  the activations A, the score S and the per-channel ablation drops S - S(A without channel k)
  (Ablation-CAM's terminal times S), which do not depend on the candidate: captured once per image.
"""
from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..evidence.capture import capture
from ..evidence.sets import EvidenceSet
from ..grammar.ast import Expr
from ..kernels.fingerprint import fingerprint, module_fingerprint
from ..kernels.memo import HEATMAP, WEIGHT_MAP, WEIGHTS, CandidateMaps, Memo, MiB, ValueCache, maps_from_values
from ..metrics.axioms import AxiomInput
from ..metrics.base import Metric
from ..metrics.robustness import Equivariance, NoiseRobustness
from ..metrics.sanity import CascadingRandomisation
from ..metrics.target import TargetPearson

#: what a metric needs that makes it re-explain (the Reexplainer gives it per chunk of candidates)
REEXPLAINS = frozenset({"explainer", "explainer_factory", "axioms"})
#: the resources a Reexplainer provides to metrics
REEXPLAINED = REEXPLAINS | {"model_fn", "model"}


def unsearchable(metric: Metric, result_axes: Iterable[frozenset[str]] | None = None,
                 layers: Sequence[str] | None = None) -> str | None:
    """Why ``metric`` cannot be a search objective (for candidates of ``result_axes`` at ``layers``,
    where known), or None. Checked before any model work."""
    name = metric.name
    if metric.uses_maps is False and "axioms" not in metric.needs:
        return (f"metric {name!r} does not score maps (uses_maps=False) and reads no channel weights "
                "(axioms): the search scores candidates' maps or, for axiom metrics, their channel weights")
    if "axioms" in metric.needs:
        if result_axes is not None and HEATMAP in set(result_axes):
            return (f"metric {name!r} scores channel weights; this space's candidates may be heatmaps, which "
                    "have none: search --result weights or weight_maps")
        if layers is not None and len(layers) != 1:
            return f"metric {name!r} scores the channel weights of one layer; the search has {len(layers)} layers"
    if getattr(metric, "reads_detections", False):
        return (f"metric {name!r} scores a detector's re-matched detections; the search explains a "
                "classifier's class scores (use det_pointing_box / det_energy_box, or deletion)")
    if isinstance(metric, TargetPearson) and metric.reference is None:
        return (f"metric {name!r} needs reference maps, which the command line cannot give: in Python, "
                "get_metric('target_pearson', reference=maps, images=x, labels=classes) with maps from "
                "sycam.search.reference_maps(method, model, x, layer, classes)")
    return None


def transform_digest(metric: Metric, batch: Any, model: nn.Module | None = None) -> str | None:
    """A fingerprint of the inputs (or models) ``metric`` re-explains on ``batch``: the noisy copies,
    the transformed images, the randomised models' weights; None for a metric that re-explains
    nothing. Stored with a study, so a resume checks it re-creates the same ones."""
    if isinstance(metric, NoiseRobustness):
        return fingerprint(metric.noisy_inputs(batch))
    if isinstance(metric, Equivariance):
        return fingerprint(metric.apply(batch.x))
    if isinstance(metric, CascadingRandomisation) and model is not None:
        return hashlib.blake2b("".join(module_fingerprint(m) for m in metric.randomised(model)).encode(),
                               digest_size=16).hexdigest()
    return None


class Reexplainer:
    """Evidence of re-explained inputs, captured once and cached, and the candidates' maps on it.

    ``model``: the searched model; ``layers``: the searched layer names; ``needs``: the terminals
    the candidates read (``space.evidence_terms``); ``relu`` and ``fusion`` as the search's
    post-processing. ``evidence_bytes`` bounds the cached evidence (least recently used sets are
    dropped and captured again if needed), ``memo_bytes`` the sub-term values on it.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], needs: Iterable[str], *, relu: bool = True,
                 fusion: str = "mean", options: Any = None, evidence_bytes: int = 1024 * MiB,
                 memo_bytes: int = 256 * MiB, logits: int = 256):
        self.model = model
        self.layers = [str(layer) for layer in layers]
        self.needs = frozenset(needs) | {"A"}
        self.relu, self.fusion, self.options = relu, fusion, options
        self.evidence_bytes = int(evidence_bytes)
        self.cache = ValueCache(memo_bytes)
        self._sets: OrderedDict[tuple[str, str], tuple[EvidenceSet, Memo]] = OrderedDict()
        self._logits: OrderedDict[str, Tensor] = OrderedDict()
        self._axioms: dict[str, tuple[Tensor, Tensor]] = {}
        self._max_logits = int(logits)
        self._model_key = module_fingerprint(model)
        self.captures = 0          # evidence captures (cache misses), per call of capture
        self.per_candidate = 0     # captures of inputs that belong to one candidate (ADCC's x * L_i)
        self.forwards = 0          # model_fn calls that ran the model
        self.hits = 0              # evidence or logits found in the cache

    # ------------------------------------------------------------------ shared model work
    def model_fn(self, x: Tensor) -> Tensor:
        """The model's logits of ``x``, memoised by the inputs' fingerprint (least recently used
        entries beyond ``logits`` are dropped)."""
        key = fingerprint(x)
        hit = self._logits.get(key)
        if hit is not None:
            self._logits.move_to_end(key)
            self.hits += 1
            return hit
        self.forwards += 1
        with torch.no_grad():
            out = self.model(x).detach()
        self._logits[key] = out
        while len(self._logits) > self._max_logits:
            self._logits.popitem(last=False)
        return out

    def _key(self, model: nn.Module) -> str:
        return self._model_key if model is self.model else module_fingerprint(model)

    def _capture(self, model: nn.Module, x: Tensor, labels: Tensor, needs: Iterable[str]) -> EvidenceSet:
        with torch.enable_grad():
            ev = capture(model, x, self.layers, labels, needs=needs, options=self.options)
        return EvidenceSet.from_evidence(ev)

    def evidence(self, model: nn.Module, x: Tensor, labels: Tensor) -> tuple[EvidenceSet, Memo]:
        """The evidence of ``model`` on ``x`` explaining ``labels`` and its memo (captured on a miss)."""
        key = (self._key(model), fingerprint(x, labels))
        hit = self._sets.get(key)
        if hit is not None:
            self._sets.move_to_end(key)
            self.hits += 1
            return hit
        self.captures += 1
        ev = self._capture(model, x, labels, self.needs)
        entry = self._sets[key] = (ev, Memo(ev, self.cache))
        total = sum(e.nbytes for e, _ in self._sets.values())
        while total > self.evidence_bytes and len(self._sets) > 1:
            _, (old, memo) = self._sets.popitem(last=False)
            memo.forget()
            total -= old.nbytes
        return entry

    def maps(self, model: nn.Module, x: Tensor, labels: Tensor, candidates: Sequence[Expr],
             axes: Sequence[frozenset[str]]) -> CandidateMaps:
        """The candidates' raw maps (per layer) on ``x`` by ``model``."""
        ev, memo = self.evidence(model, x, labels)
        return maps_from_values([memo(c) for c in candidates], axes, ev, self.relu, self.fusion)

    def each(self, model: nn.Module, x: Tensor, labels: Tensor, candidates: Sequence[Expr],
             axes: Sequence[frozenset[str]], index: Tensor) -> Tensor:
        """Row j's map by candidate ``index[j]`` ``(m,H,W)``: one capture of all rows (inputs that
        belong to one candidate are not cached), then each candidate on its own rows."""
        self.per_candidate += 1
        ev = self._capture(model, x, labels, self.needs)
        out = torch.zeros((x.shape[0], *ev.input_size), dtype=torch.float32, device=x.device)
        cache = ValueCache(64 * MiB)
        for i in index.unique().tolist():
            rows = (index == i).nonzero()[:, 0]
            sub = ev.rows(rows.tolist())
            cm = maps_from_values([Memo(sub, cache)(candidates[i])], [axes[i]], sub, self.relu, self.fusion)
            out[rows] = cm.full()[0].to(out.device).float()
        return out

    # ------------------------------------------------------------------ axioms
    def axiom_terms(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``S (b,)`` and the ablation drops ``S - S(A without channel k)`` ``(b,K)`` at the (one)
        layer, captured once per image set (K passes of the layers after the target layer)."""
        key = fingerprint(x, labels)
        hit = self._axioms.get(key)
        if hit is None:
            self.captures += 1
            ev = self._capture(self.model, x, labels, {"A", "ablation"})
            terms = next(iter(ev.layers.values()))
            s = terms["S"].reshape(-1).float()
            hit = self._axioms[key] = (s, terms["ablation"].flatten(1).float() * s[:, None])
        else:
            self.hits += 1
        return hit

    def axiom_input(self, memo: Memo, candidates: Sequence[Expr], axes: Sequence[frozenset[str]]) -> AxiomInput:
        """The candidates' channel weights (``(n,b,K,h,w)``; h = w = 1 for plain weights) with A, S and
        the ablation drops of the memo's images."""
        ev = memo.evidence
        (terms,) = ev.layers.values()
        A = terms["A"]
        b, k, h, w = A.shape[0], A.shape[3], A.shape[4], A.shape[5]
        spatial = any(t == WEIGHT_MAP for t in axes)
        shape = (b, 1, 1, k, h, w) if spatial else (b, 1, 1, k, 1, 1)
        weights = []
        values = Memo(ev, memo.cache)      # the candidates' own values (the blocked memo gives maps only)
        for c, t in zip(candidates, axes):
            if t not in (WEIGHTS, WEIGHT_MAP):
                raise ValueError(f"candidate with axes {sorted(t)} has no channel weights")
            v = values(c)[0]
            v = v if isinstance(v, Tensor) else torch.tensor(float(v), device=A.device)
            weights.append(v.expand(shape).reshape(b, k, *shape[-2:]))
        s, drops = self.axiom_terms(ev.batch.x, ev.batch.labels)
        return AxiomInput(A.reshape(b, k, h, w).float(), torch.stack(weights).float(), score=s, drops=drops)

    # ------------------------------------------------------------------ what a metric is given
    def resources(self, metric: Metric, candidates: Sequence[Expr], axes: Sequence[frozenset[str]],
                  memo: Memo | None = None) -> dict[str, Any]:
        """The callables ``metric`` needs for this chunk of candidates (``memo``: the search's memo
        of the scored images, for the axioms)."""
        out: dict[str, Any] = {}
        if metric.needs & REEXPLAINS:
            out.update(model_fn=self.model_fn, model=self.model)
            out["explainer"] = CandidateExplainer(self, candidates, axes, self.model)
            out["explainer_factory"] = lambda model: CandidateExplainer(self, candidates, axes, model)
        if "axioms" in metric.needs and memo is not None:
            out["axioms"] = self.axiom_input(memo, candidates, axes)
        return out

    def cold(self) -> "Reexplainer":
        """A copy that shares the captured evidence and logits but starts with an empty memo (what a
        benchmark times as the per-candidate cost)."""
        new = copy.copy(self)
        new.cache = ValueCache(self.cache.budget)
        new._sets = OrderedDict((k, (ev, Memo(ev, new.cache))) for k, (ev, _) in self._sets.items())
        new._logits = OrderedDict(self._logits)
        return new

    def stats(self) -> Mapping[str, int]:
        return {"captures": self.captures, "per_candidate": self.per_candidate, "forwards": self.forwards,
                "hits": self.hits, "evidence_sets": len(self._sets)}


class CandidateExplainer:
    """``explainer(x, labels) -> (n,m,H,W)``: a chunk of candidates explaining inputs with a model,
    from the :class:`Reexplainer`'s cached evidence (``candidates=idx``: row j by candidate idx[j])."""

    def __init__(self, owner: Reexplainer, candidates: Sequence[Expr], axes: Sequence[frozenset[str]],
                 model: nn.Module):
        self.owner, self.candidates, self.axes, self.model = owner, list(candidates), list(axes), model

    def __call__(self, x: Tensor, labels: Tensor, candidates: Tensor | None = None) -> Tensor:
        if candidates is not None:
            return self.owner.each(self.model, x, labels, self.candidates, self.axes, candidates)
        return self.owner.maps(self.model, x, labels, self.candidates, self.axes).full()

    def lowres(self, x: Tensor, labels: Tensor) -> Tensor | None:
        """The raw maps at feature resolution ``(n,m,h,w)`` (one layer), or None with several layers."""
        if len(self.owner.layers) != 1:
            return None
        return self.owner.maps(self.model, x, labels, self.candidates, self.axes).raw[0]
