"""MetaCAM (Kaczmarek et al., "MetaCAM: Ensemble-Based Class Activation Map", arXiv:2307.16863):
an ensemble of component CAMs by consensus of their top-k % pixels, adaptive thresholding chosen
by ROAD, and the Cumulative Residual Effect (CRE) summary over ensembles.

The paper's method section was not available (only its abstract: "combining multiple existing CAM
methods based on the consensus of the top-k% most highly activated pixels across component CAMs",
"adaptive thresholding ... applied to individual CAMs to improve their performance, measured using
... ROAD", "CRE ... to summarize large-scale ensemble-based experiments"). The definitions below are
therefore ours, chosen to be the simplest reading of that description; they are exact and tested.

Definitions, per image, for component maps L_1..L_n (each already post-processed: at the input
size, min-max normalised to [0, 1]) and a fraction k in (0, 1]:

* **top-k set** T_i(k): the ceil(k H W) highest pixels of L_i (exact count, ties broken by
  ``torch.topk``), restricted to L_i > 0 (a pixel a component gives nothing is no vote).
* **thresholded map** L_i^k = L_i * 1[T_i(k)]. *Adaptive thresholding of a single CAM* is this
  map with k chosen per image (below); the paper reports that this alone improves a CAM's ROAD.
* **votes** v(p) = sum_i 1[p in T_i(k)].
* **MetaCAM_k(p)** = 1[v(p) >= m] * (1/n) sum_i L_i^k(p), then min-max. With the default
  ``min_votes`` m = 1 this is the mean of the thresholded components: a pixel is kept when it is
  in some component's top-k % and its value grows with the number of components that agree on it
  (consensus) and with their values; pixels in no top-k % are 0. m = n keeps only the pixels every
  component agrees on (strict intersection). Why not a hard majority by default: the paper speaks of
  "consensus", not of a vote threshold, and m = 1 never empties the map of an image on which the
  components disagree.
* **adaptive thresholding**: for every image, k* = argmax over ``grid`` (default 10 %, 20 %, ...,
  90 %) of the ROAD-combined score (:class:`~sycam.metrics.road.ROAD`, higher is better) of
  MetaCAM_k on that image, the class explained being the image's target. Cost: len(grid) x 18
  forwards (+1) per image, plus the imputations. Any registered metric can replace ROAD
  (``metric=``); its direction is respected. Note that ROAD of an adaptive method is then
  optimised in-sample (as in the paper): compare it with adaptive components (``adaptivegradcam``).
* **Cumulative Residual Effect**: for an ensemble E (a non-empty subset of the components) let
  s(E) be the metric of MetaCAM_E, averaged over the images, signed so that higher is better. The
  residual effect of adding component c to an ensemble S (c not in S, S non-empty) is
  d(c, S) = s(S u {c}) - s(S); CRE(c) = sum of d(c, S) over the ensembles S considered, i.e. the
  accumulated change in score when c joins. "Considered": every non-empty S not containing c
  (exhaustive, 2^(n-1) - 1 pairs per component, 2^n - 1 ensembles scored) when n <= 10, else
  ``samples`` random S (each component in with probability 1/2; empty and full sets redrawn),
  each paired with every c it lacks. The table also gives the mean effect (CRE / pairs; a
  Banzhaf-style value without the empty ensemble), the share of additions that helped and each
  component's score alone.

The components share their evidence: one :func:`~sycam.methods.cam.explain_many` call captures A, G, ...
once for all of them (one forward + one backward for the gradient seeds, one LRP pass for
Relevance-CAM).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..errors import SycamError
from ..evidence.targets import select_output
from ..kernels.postprocess import minmax
from ..metrics.base import top_fraction_mask
from ..metrics.registry import get_metric
from .cam import CAM, explain_many, resolve_targets
from .explainer import Explainer, Explanation

DEFAULT_COMPONENTS = ("gradcam", "gradcampp", "xgradcam", "layercam", "eigencam", "relevancecam")
DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_EXHAUSTIVE = 10


# ---------------------------------------------------------------------- maps
def top_k_sets(maps: Tensor, k: float) -> Tensor:
    """T(k): bool ``(..., H, W)``, the ceil(k H W) highest pixels of each map that are > 0."""
    _check_fraction(k)
    return top_fraction_mask(maps, k) & (maps > 0)


def threshold(maps: Tensor, k: float) -> Tensor:
    """L^k = L * 1[top-k %]: the thresholded maps (any leading shape)."""
    return maps * top_k_sets(maps, k)


def consensus(maps: Tensor, k: float, min_votes: int = 1, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """MetaCAM_k before normalisation and the votes: ``maps (n, b, H, W)`` -> ``((b, H, W), (b, H, W))``.

    ``valid (n, b)``: components whose map is not finite for an image give no votes there.
    """
    if maps.dim() != 4:
        raise SycamError(f"component maps must be (n, b, H, W), got shape {tuple(maps.shape)}")
    n = maps.shape[0]
    if not 1 <= min_votes <= n:
        raise SycamError(f"min_votes must be in [1, {n}] for {n} components, got {min_votes}")
    sets = top_k_sets(maps, k)
    if valid is not None:
        sets = sets & valid.to(sets.device)[..., None, None]
    votes = sets.sum(0)
    mean = (maps * sets).sum(0) / n
    return torch.where(votes >= min_votes, mean, torch.zeros_like(mean)), votes


def _check_fraction(k: float) -> None:
    if not 0 < k <= 1:
        raise SycamError(f"k is the kept fraction of pixels, in (0, 1] (0.2 = the top 20 %), got {k}")


# ---------------------------------------------------------------------- adaptive thresholding
def _scorer(metric, metric_params, model_fn, x: Tensor, labels: Tensor, batch_size: int | None):
    """``candidates (m, b, H, W) -> scores (m, b)`` signed so that higher is better."""
    m = get_metric(metric, **(metric_params or {})) if isinstance(metric, str) else metric
    batch = Batch(x=x.detach(), images=x.detach(), labels=labels.to(x.device))   # images: unused by ROAD
    sign = m.direction.sign

    def score(candidates: Tensor) -> Tensor:
        return sign * m(candidates, batch, model_fn=model_fn, batch_size=batch_size)
    return score, m


def adaptive_threshold(maps: Tensor, x: Tensor, labels: Tensor, model_fn: Callable[[Tensor], Tensor], *,
                       grid: Sequence[float] = DEFAULT_GRID, metric="road_combined", metric_params=None,
                       batch_size: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Adaptive thresholding of one CAM: per image, the k of ``grid`` whose thresholded map scores best.

    ``maps (b, H, W)`` in [0, 1] at the input size; ``x`` the model input, ``labels (b,)`` the
    explained classes, ``model_fn(x) -> logits``. Returns (thresholded maps at the chosen k, min-max
    normalised, (b, H, W); chosen k (b,); scores (len(grid), b), higher is better).
    """
    return _adaptive(maps[None], x, labels, model_fn, grid, 1, metric, metric_params, batch_size)[:3]


def _adaptive(maps: Tensor, x, labels, model_fn, grid, min_votes, metric, metric_params, batch_size,
              valid: Tensor | None = None):
    grid = tuple(float(k) for k in grid)
    if not grid:
        raise SycamError("the threshold grid is empty")
    for k in grid:
        _check_fraction(k)
    cands, votes = zip(*(consensus(maps, k, min_votes, valid) for k in grid))
    stack = minmax(torch.stack(cands))                               # (G, b, H, W)
    score, _ = _scorer(metric, metric_params, model_fn, x, labels, batch_size)
    scores = score(stack)                                             # (G, b), higher is better
    best = torch.nan_to_num(scores, nan=-torch.inf).argmax(0)         # first best k on ties
    idx = torch.arange(stack.shape[1], device=stack.device)
    chosen_k = torch.tensor(grid, device=stack.device)[best]
    return stack[best, idx], chosen_k, scores, torch.stack(votes)[best, idx]


# ---------------------------------------------------------------------- explanation
@dataclass
class MetaExplanation(Explanation):
    """What :meth:`MetaCAM.explain` returns: an :class:`~sycam.methods.explainer.Explanation` (``maps``, ``valid``,
    ``layer_maps`` (empty), ``evidence`` of the components' capture) plus MetaCAM's diagnostics."""

    components: dict[str, Tensor]          # name -> (b, H, W) component map in [0, 1]
    k: Tensor                              # (b,) the kept fraction used per image
    votes: Tensor                          # (b, H, W) number of components whose top-k % hold the pixel
    labels: Tensor | None = None           # (b,) classes scored by the adaptive metric
    grid: tuple[float, ...] = ()
    grid_scores: Tensor | None = None      # (len(grid), b) metric of MetaCAM_k (higher is better)


@dataclass
class CRETable:
    """Cumulative Residual Effect of every component (see the module docstring)."""

    components: list[str]
    cre: Tensor                  # (n,) sum of d(c, S) over the pairs
    mean: Tensor                 # (n,) CRE / pairs
    improved: Tensor             # (n,) share of pairs with d > 0
    pairs: Tensor                # (n,) number of pairs
    alone: Tensor                # (n,) s({c})
    ensembles: dict[tuple[str, ...], float] = field(default_factory=dict)   # scored ensembles -> s(E)
    exhaustive: bool = True
    metric: str = ""

    @property
    def best(self) -> tuple[str, ...]:
        """The best-scoring ensemble among those scored."""
        return max(self.ensembles, key=lambda e: self.ensembles[e])

    def rows(self) -> list[dict[str, Any]]:
        order = torch.argsort(self.cre, descending=True, stable=True).tolist()
        return [{"component": self.components[i], "cre": float(self.cre[i]), "mean_effect": float(self.mean[i]),
                 "improved": float(self.improved[i]), "pairs": int(self.pairs[i]), "alone": float(self.alone[i])}
                for i in order]

    def __str__(self) -> str:
        how = "all ensembles" if self.exhaustive else "sampled ensembles"
        lines = [f"Cumulative Residual Effect ({self.metric}, higher is better; {how}, {len(self.ensembles)} scored)",
                 f"{'component':<20}{'CRE':>10}{'mean':>10}{'improved':>10}{'pairs':>7}{'alone':>10}"]
        for r in self.rows():
            lines.append(f"{r['component']:<20}{r['cre']:>10.4f}{r['mean_effect']:>10.4f}{r['improved']:>10.2f}"
                         f"{r['pairs']:>7d}{r['alone']:>10.4f}")
        lines.append(f"best ensemble: {' + '.join(self.best)} ({self.ensembles[self.best]:.4f})")
        return "\n".join(lines)


def ensemble_pairs(n: int, *, exhaustive: bool | None = None, samples: int = 64,
                   seed: int = 0) -> tuple[list[tuple[int, frozenset[int]]], bool]:
    """The (component, ensemble S without it) pairs of the CRE, and whether they are exhaustive."""
    if n < 2:
        raise SycamError("the Cumulative Residual Effect needs at least 2 components")
    exhaustive = n <= MAX_EXHAUSTIVE if exhaustive is None else exhaustive
    if exhaustive:
        bases = [frozenset(s) for r in range(1, n) for s in itertools.combinations(range(n), r)]
    else:
        gen = torch.Generator().manual_seed(seed)
        bases = []
        while len(bases) < samples:
            inside = torch.rand(n, generator=gen) < 0.5
            if 0 < int(inside.sum()) < n:
                bases.append(frozenset(int(i) for i in torch.nonzero(inside).flatten()))
    return [(c, s) for s in bases for c in range(n) if c not in s], exhaustive


def cumulative_residual_effect(components: Sequence[str], score: Callable[[list[frozenset[int]]], Tensor], *,
                               exhaustive: bool | None = None, samples: int = 64, seed: int = 0,
                               metric: str = "") -> CRETable:
    """CRE of ``components`` given ``score(ensembles) -> (E,)`` (higher is better) for a list of
    ensembles (frozensets of component indices)."""
    n = len(components)
    pairs, exhaustive = ensemble_pairs(n, exhaustive=exhaustive, samples=samples, seed=seed)
    needed = sorted({s for _, s in pairs} | {s | {c} for c, s in pairs} | {frozenset([c]) for c in range(n)},
                    key=lambda s: (len(s), sorted(s)))
    values = score(needed)
    s = {e: float(v) for e, v in zip(needed, values.tolist())}
    cre, count, better = torch.zeros(n, dtype=torch.float64), torch.zeros(n), torch.zeros(n)
    for c, base in pairs:
        d = s[base | {c}] - s[base]
        cre[c] += d
        count[c] += 1
        better[c] += d > 0
    names = list(components)
    return CRETable(names, cre, cre / count.clamp_min(1), better / count.clamp_min(1), count.long(),
                    torch.tensor([s[frozenset([c])] for c in range(n)], dtype=torch.float64),
                    {tuple(names[i] for i in sorted(e)): v for e, v in s.items()}, exhaustive, metric)


# ---------------------------------------------------------------------- the method
class MetaCAM(Explainer):
    """MetaCAM of ``components`` (seed names, expressions or :class:`~sycam.methods.cam.CAM` objects) bound to
    ``model`` and ``layers``.

    ``k``: kept fraction when not adaptive; ``adaptive``: choose k per image from ``grid`` by
    ``metric`` (default ROAD combined, ``metric_params`` passed to it); ``min_votes``: see the
    module docstring. ``target``/``options``/``fuse``/``output``/``classes`` (class names, so that
    targets can name classes), ``eigen_smooth`` and ``reshape`` (token layers, as for :class:`CAM`) go to every
    component given by name or expression.
    ``MetaCAM(["gradcam"], model, adaptive=True)`` is adaptive thresholding of Grad-CAM.
    """

    def __init__(self, components: Sequence[Any] = DEFAULT_COMPONENTS, model: nn.Module | None = None,
                 layers=None, *, k: float = 0.2, adaptive: bool = False, grid: Sequence[float] = DEFAULT_GRID,
                 min_votes: int = 1, metric="road_combined", metric_params: dict | None = None,
                 batch_size: int | None = None, target=None, output=None, fuse: str | None = None, options=None,
                 preprocess=None, classes=None, eigen_smooth: bool = False, reshape=None):
        if model is None:
            raise SycamError("MetaCAM needs a model")
        if not components:
            raise SycamError("MetaCAM needs at least one component")
        _check_fraction(k)
        for g in grid:
            _check_fraction(g)
        self.cams: dict[str, CAM] = {}
        for c in components:
            cam = c if isinstance(c, CAM) else CAM(c, model, layers, target=target, output=output, fuse=fuse,
                                                   options=options, classes=classes, eigen_smooth=eigen_smooth,
                                                   reshape=reshape)
            name = c if isinstance(c, str) else cam.text
            if name in self.cams:
                raise SycamError(f"component {name!r} is given twice")
            self.cams[name] = cam
        if not 1 <= min_votes <= len(self.cams):
            raise SycamError(f"min_votes must be in [1, {len(self.cams)}], got {min_votes}")
        self.component_specs = list(components)
        self.model, self.layer_spec, self.target, self.output = model, layers, target, output
        self.k, self.adaptive, self.grid, self.min_votes = float(k), bool(adaptive), tuple(grid), int(min_votes)
        self.metric, self.metric_params, self.batch_size = metric, dict(metric_params or {}), batch_size
        self.fuse, self.options, self.reshape = fuse, options, reshape
        self.classes = None if classes is None else list(classes)
        self.eigen_smooth = bool(eigen_smooth)
        self.last: MetaExplanation | None = None

    @property
    def layers(self):
        return next(iter(self.cams.values())).layers

    @property
    def text(self) -> str:
        metric = self.metric if isinstance(self.metric, str) else getattr(self.metric, "name", "metric")
        k = (f"k adaptive in {self.grid[0]:g}..{self.grid[-1]:g} by {metric}" if self.adaptive
             else f"k={self.k:g}")
        return f"metacam({', '.join(self.cams)}; {k}, min_votes={self.min_votes})"

    def with_model(self, model: nn.Module) -> "MetaCAM":
        """The same method on another model (same layer names), e.g. for the sanity checks."""
        layers = [r.name for r in self.layers] if self.layers else self.layer_spec
        specs = [c if isinstance(c, str) else c.expression for c in self.component_specs]
        return MetaCAM(specs, model, layers, k=self.k, adaptive=self.adaptive, grid=self.grid,
                       min_votes=self.min_votes, metric=self.metric, metric_params=self.metric_params,
                       batch_size=self.batch_size, target=self.target, output=self.output, fuse=self.fuse,
                       options=self.options, classes=self.classes, eigen_smooth=self.eigen_smooth,
                       reshape=self.reshape)

    # ------------------------------------------------------------------------------------------
    def model_fn(self, x: Tensor) -> Tensor:
        return select_output(self.model(x), self.output)

    def labels(self, targets, evidence) -> Tensor:
        """The class explained in each image (what ROAD scores): ``targets``, else each image's top-1."""
        spec = targets if targets is not None else self.target
        spec = getattr(spec, "classes", spec)
        b = len(evidence)
        if spec is None:
            return evidence.predicted
        if callable(spec):
            raise SycamError("adaptive thresholding and the CRE score a class with ROAD: give class indices "
                             "as targets (one, or one per image), not a callable")
        c = torch.as_tensor(spec, dtype=torch.long, device=evidence.x.device).reshape(-1)
        return c.expand(b).clone() if c.numel() == 1 else c

    def components(self, x: Tensor, targets=None) -> tuple[Tensor, Tensor, Any]:
        """Component maps ``(n, b, H, W)``, their validity ``(n, b)`` and the evidence, from one
        :func:`~sycam.methods.cam.explain_many` call (shared captures)."""
        res = explain_many(self.cams, x, targets)
        maps = torch.stack([res[n].maps for n in self.cams])
        valid = torch.stack([res[n].valid for n in self.cams])
        return maps, valid, res[next(iter(self.cams))].evidence

    def explain(self, x: Tensor, targets=None) -> MetaExplanation:
        targets = resolve_targets(targets, self.classes)
        maps, valid, ev = self.components(x, targets)
        names = list(self.cams)
        labels = None
        if self.adaptive:
            labels = self.labels(targets, ev)
            final, ks, scores, votes = _adaptive(maps, x, labels, self.model_fn, self.grid, self.min_votes,
                                                 self.metric, self.metric_params, self.batch_size, valid)
        else:
            raw, votes = consensus(maps, self.k, self.min_votes, valid)
            final, scores = minmax(raw), None
            ks = torch.full((maps.shape[1],), self.k, device=maps.device)
        self.last = MetaExplanation(final.to(x.device), valid.any(0).to(x.device), {}, ev,
                                    dict(zip(names, maps.unbind(0))), ks, votes, labels,
                                    self.grid if self.adaptive else (self.k,), scores)
        return self.last

    def cre(self, x: Tensor, targets=None, *, exhaustive: bool | None = None, samples: int = 64, seed: int = 0,
            chunk: int = 8) -> CRETable:
        """Cumulative Residual Effect of the components on images ``x`` (see the module docstring).

        Every ensemble is scored as this MetaCAM scores itself: at the fixed k, or (``adaptive``) at
        its best k of the grid per image; s(E) is the mean over images. ``chunk`` ensembles per
        metric call. Cost: one capture for the components, then (2^n - 1) x len(grid) metric
        evaluations when exhaustive (ROAD: 18 forwards and imputations each, per image).
        """
        targets = resolve_targets(targets, self.classes)
        maps, valid, ev = self.components(x, targets)
        labels = self.labels(targets, ev)
        score, m = _scorer(self.metric, self.metric_params, self.model_fn, x, labels, self.batch_size)
        grid = self.grid if self.adaptive else (self.k,)

        def score_ensembles(ensembles: list[frozenset[int]]) -> Tensor:
            out = []
            for i in range(0, len(ensembles), chunk):
                part = ensembles[i:i + chunk]
                cands = []
                for e in part:
                    idx = torch.tensor(sorted(e), device=maps.device)
                    sub, ok = maps[idx], valid[idx]
                    mv = min(self.min_votes, len(e))
                    cands += [consensus(sub, k, mv, ok)[0] for k in grid]
                s = score(minmax(torch.stack(cands))).view(len(part), len(grid), -1)
                best = torch.nan_to_num(s, nan=-torch.inf).amax(1)           # best k per image
                out.append(torch.nanmean(torch.where(torch.isinf(best), torch.nan, best), dim=1))
            return torch.cat(out)

        names = list(self.cams)
        return cumulative_residual_effect(names, score_ensembles, exhaustive=exhaustive, samples=samples, seed=seed,
                                          metric=m.name)


def metacam(model: nn.Module, layers=None, **kwargs) -> MetaCAM:
    """MetaCAM as :func:`sycam.methods.build.make_cam` builds it: ``components`` a keyword."""
    components = kwargs.pop("components", DEFAULT_COMPONENTS)
    return MetaCAM(components, model, layers, **kwargs)
