"""Ablation: which terms of a CAM expression carry its score?

For every sub-term of the expression's heatmap form (channel weights w become
relu(sum(w * A, k))) the variants are:

* **removed**: a wrapper operator dropped, ``relu(x) -> x``, ``mean(x, hw) -> x`` (when the
  result still types as a heatmap);
* **neutral**: an operand of ``+ - * / ^`` replaced by the operator's neutral element
  (``x * y -> x * 1``, ``x + y -> 0 + y``), which removes that term from the formula;
* **swapped**: each terminal replaced by each of its siblings (terminals with the same axes,
  ``G -> G2``), each constant by the other constants of the expression or 1 and 2.

All variants are scored on the same images from one evidence capture per image batch; each
is reported with the change of the metric against the original (paired over images, 95 %
bootstrap interval, signed so that a negative change means the term mattered). A variant whose
map is constant on every image (``G - G``: identically 0) carries no spatial information: it
is reported as such, not scored.

A term is *dead* when removing it leaves the maps as they were: the variant's min-max normalised
map equals the original's within ``SAME_MAP_TOLERANCE`` (max absolute difference) on every image
scored. That a removal changes no image's score is a separate, weaker statement: a hit/miss
metric (pointing game) on a few images often keeps every score while the map moves.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..batching import model_rows
from ..data.batch import Batch
from ..errors import ExpressionTypeError, SycamError, UnknownNameError
from ..evidence.terminals import TERMINALS
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.checker import HEATMAP, as_heatmap, check
from ..grammar.ops import OPS
from ..grammar.printer import number_text, to_text
from ..methods.cam import CAM, explain_many
from ..methods.seeds import Seed, resolve_method
from ..metrics.base import Metric
from .heldout import Interval, interval

Path_ = tuple[int, ...]
SIBLING_TERMINALS = ("A", "G", "G2", "G3")
#: two maps are the same when their min-max normalised values differ by less than this everywhere
SAME_MAP_TOLERANCE = 1e-4


@dataclass
class Variant:
    kind: str            # "original", "removed", "neutral", "swapped"
    path: Path_          # position of the changed node (child indices from the root)
    term: str            # the sub-term that was changed
    change: str          # what was done, e.g. "relu(x) -> x", "G -> G2"
    expr: Expr           # the full heatmap expression of the variant
    at: str = ""         # where: the smallest enclosing sub-expression that locates it, the term in [ ]

    @property
    def text(self) -> str:
        return to_text(self.expr)

    @property
    def label(self) -> str:
        """The change and where (the enclosing sub-expression, the changed term in brackets)."""
        if self.kind == "original":
            return "original"
        return f"{self.change} at {self.at or '.'.join(map(str, self.path)) or 'root'}"


@dataclass
class Row:
    variant: Variant
    score: Interval
    delta: Interval                # variant minus original, signed: positive = variant is better
    per_image: Tensor = field(repr=False, default=None)
    constant: str | None = None    # "zero" / "constant": the map is flat on every image (not scored)
    same_map: bool = False         # its normalised map equals the original's on every image scored

    @property
    def scored(self) -> bool:
        return self.constant is None

    def same_scores(self, base: Tensor | None) -> bool:
        """Every image's score equals ``base`` (the original's)."""
        return self.per_image is not None and base is not None and bool(
            torch.isclose(self.per_image, base, rtol=0, atol=1e-9, equal_nan=True).all())


def _nodes(expr: Expr, path: Path_ = ()) -> Iterable[tuple[Path_, Expr]]:
    yield path, expr
    for i, child in enumerate(getattr(expr, "args", ())):
        yield from _nodes(child, path + (i,))


def _replace(expr: Expr, path: Path_, new: Expr) -> Expr:
    if not path:
        return new
    args = list(expr.args)
    args[path[0]] = _replace(args[path[0]], path[1:], new)
    return Call(expr.op, tuple(args), expr.axes)


def _get(expr: Expr, path: Path_) -> Expr:
    for i in path:
        expr = expr.args[i]
    return expr


def context(expr: Expr, path: Path_) -> str:
    """The text of the smallest sub-expression around the node at ``path`` that occurs once in
    ``expr`` (at least the node's parent), with that node in brackets: ``mean([G], hw) * A``."""
    node = _get(expr, path)
    marked = _replace(expr, path, Var(f"[{to_text(node)}]"))
    full = to_text(expr)
    ctx = path[:-1]
    while ctx and full.count(to_text(_get(expr, ctx))) > 1:
        ctx = ctx[:-1]
    return to_text(_get(marked, ctx))


def _is_heatmap(expr: Expr, terminals) -> bool:
    try:
        return check(expr, terminals) == HEATMAP
    except (ExpressionTypeError, UnknownNameError):
        return False


def variants(expr: Expr, terminals: Mapping = TERMINALS,
             siblings: Sequence[str] = SIBLING_TERMINALS) -> list[Variant]:
    """The original heatmap expression first, then every well-typed, distinct ablation variant."""
    heat = as_heatmap(expr, terminals)
    out = [Variant("original", (), to_text(heat), "", heat)]
    seen = {heat}
    env = {k: (v.axes if hasattr(v, "axes") else v) for k, v in terminals.items()}
    constants = sorted({n.value for _, n in _nodes(heat) if isinstance(n, Num)} | {1.0, 2.0})

    def add(kind: str, path: Path_, node: Expr, change: str, new: Expr) -> None:
        v = _replace(heat, path, new)
        if v not in seen and _is_heatmap(v, terminals):
            seen.add(v)
            out.append(Variant(kind, path, to_text(node), change, v, context(heat, path)))

    for path, node in _nodes(heat):
        if isinstance(node, Call):
            op = OPS[node.op]
            if op.arity == 1 and path:
                arg = node.args[0]
                name = f"{node.op}(x, {node.axes})" if node.axes else f"{node.op}(x)"
                add("removed", path, node, f"{name} -> x", arg)
            if op.neutral is not None:
                neutral = Num(op.neutral)
                for i, child in enumerate(node.args):
                    if isinstance(child, Num) and child.value == op.neutral:
                        continue
                    if i == 1 or op.commutative:       # x op neutral == x; neutral op x too if it commutes
                        add("neutral", path + (i,), child, f"{to_text(child)} -> {number_text(op.neutral)}", neutral)
        elif isinstance(node, Var) and node.name in env:
            for other in siblings:
                if other != node.name and other in env and env[other] == env[node.name]:
                    add("swapped", path, node, f"{node.name} -> {other}", Var(other))
        elif isinstance(node, Num):
            for c in constants:
                if c != node.value:
                    add("swapped", path, node, f"{number_text(node.value)} -> {number_text(c)}", Num(c))
    return out


@dataclass
class Ablation:
    expression: str
    metric: str
    higher_is_better: bool
    rows: list[Row]                  # the original first, then variants sorted by delta (most harmful first),
    images: int                      # then the constant (unscored) variants
    maps: dict[int, Tensor] = field(default_factory=dict, repr=False)   # row index -> (b, H, W), shown images
    names: list[str] = field(default_factory=list)                      # the images scored

    @property
    def original(self) -> Row:
        return self.rows[0]

    @property
    def dead(self) -> list[Row]:
        """Removals (a wrapper dropped, an operand neutralised) that leave every image's normalised map
        as it was (within ``SAME_MAP_TOLERANCE``)."""
        return [r for r in self.rows[1:] if r.variant.kind in ("removed", "neutral") and r.scored and r.same_map]

    @property
    def unchanged_scores(self) -> list[Row]:
        """Removals that change the maps but no image's score (weaker than dead: the metric did not
        tell the maps apart on these images)."""
        base = self.rows[0].per_image
        return [r for r in self.rows[1:] if r.variant.kind in ("removed", "neutral") and r.scored
                and not r.same_map and r.same_scores(base)]

    @staticmethod
    def _items(rows: list[Row]) -> str:
        return "; ".join(f"{r.variant.term} ({r.variant.change} at {r.variant.at})" for r in rows) or "none"

    def dead_line(self) -> str:
        """One line: ``dead terms (removing them leaves every map unchanged): ...``."""
        return f"dead terms (removing them leaves every map unchanged): {self._items(self.dead)}"

    def unchanged_line(self) -> str:
        """One line: the removals that change the maps but no image's score."""
        return (f"Removals that change the maps but no image's {self.metric} "
                f"(not dead: the metric does not tell them apart on these {self.images} images): "
                f"{self._items(self.unchanged_scores)}")


def _flat(layer_maps: Mapping[str, Tensor]) -> tuple[bool, bool]:
    """(every layer's raw map is constant over space on every image, ... and that constant is 0)."""
    constant = zero = True
    for raw in layer_maps.values():
        flat = raw.detach().flatten(-2)
        span = flat.amax(-1) - flat.amin(-1)
        constant = constant and bool((span == 0).all())
        zero = zero and bool((flat == 0).all())
    return constant, constant and zero


def score_variants(vs: Sequence[Variant], model: nn.Module, batch: Batch, layers, metric: Metric, *,
                   seed: Seed | None = None, chunk: int | None = None, keep_maps: int = 0,
                   resources: Mapping | None = None, flat: list[str | None] | None = None,
                   same: list[bool] | None = None) -> tuple[Tensor, dict[int, Tensor]]:
    """Per-image metric values (n variants, b images) from one capture per chunk of images;
    also the maps of the first ``keep_maps`` images of every variant. ``flat``, a list, receives
    per variant ``"zero"`` / ``"constant"`` where its raw map is flat on every image, else None;
    ``same``, a list, receives per variant whether its min-max normalised map equals the first
    variant's (the original's) within ``SAME_MAP_TOLERANCE`` on every image."""
    fuse = seed.fuse if seed is not None else None
    cams = {str(i): CAM(v.expr, model, layers, fuse=fuse) for i, v in enumerate(vs)}
    values, kept = [], {}
    constant, zero, equal = [True] * len(vs), [True] * len(vs), [True] * len(vs)
    chunk = model_rows(batch.x.device, chunk)
    for start in range(0, len(batch), chunk):
        sub = batch[start:start + chunk]
        res = explain_many(cams, sub.x, sub.labels)
        maps = torch.stack([res[str(i)].maps for i in range(len(vs))])            # (n, b, H, W)
        valid = torch.stack([res[str(i)].valid for i in range(len(vs))])
        norm = maps.detach().float()                   # a CAM's maps are min-max normalised already (invalid: 0)
        gap = (norm - norm[:1]).abs().flatten(1).amax(1)                          # (n,): worst pixel of any image
        equal = [e and bool(g < SAME_MAP_TOLERANCE) for e, g in zip(equal, gap.tolist())]
        for i in range(len(vs)):
            c, z = _flat(res[str(i)].layer_maps)
            constant[i], zero[i] = constant[i] and c, zero[i] and z
        v = metric(maps, sub, batch_size=chunk, **dict(resources or {})).float()
        values.append(torch.where(valid, v, torch.full_like(v, float("nan"))))
        if start < keep_maps:
            for i in range(len(vs)):
                kept.setdefault(i, []).append(maps[i, : keep_maps - start].cpu())
    if flat is not None:
        flat[:] = ["zero" if z else "constant" if c else None for c, z in zip(constant, zero)]
    if same is not None:
        same[:] = equal
    return torch.cat(values, 1), {i: torch.cat(m) for i, m in kept.items()}


def ablate(expression: str | Expr, model: nn.Module, batch: Batch, layers, metric: Metric, *,
           keep_maps: int = 0, resources: Mapping | None = None, chunk: int | None = None) -> Ablation:
    """Score every variant of ``expression`` (seed name or text) with ``metric`` on ``batch``."""
    if isinstance(expression, str):
        tree, seed = resolve_method(expression)
    else:
        tree, seed = expression, None
    vs = variants(tree)
    if len(vs) < 2:
        raise SycamError(f"`{to_text(tree)}` has no term to ablate")
    flat: list[str | None] = []
    same: list[bool] = []
    values, kept = score_variants(vs, model, batch, layers, metric, seed=seed, chunk=chunk, keep_maps=keep_maps,
                                  resources=resources, flat=flat, same=same)
    sign = metric.direction.sign
    rows = []
    nan = Interval(float("nan"), float("nan"), float("nan"), 0)
    for i, v in enumerate(vs):
        if i and flat[i]:                  # a flat map: nothing to score (reported as such)
            rows.append(Row(v, nan, nan, None, flat[i]))
            continue
        delta = interval(sign * (values[i] - values[0]))
        rows.append(Row(v, interval(values[i]), delta, values[i], same_map=bool(i and same[i])))
    if flat and flat[0]:
        rows[0].constant = flat[0]
    first = rows[0]
    rest = sorted((r for r in rows[1:] if r.scored), key=lambda r: (r.delta.mean if r.delta.mean == r.delta.mean
                                                                     else float("inf")))
    ordered = [first, *rest, *(r for r in rows[1:] if not r.scored)]
    index = {id(v): i for i, v in enumerate(vs)}
    maps = {j: kept[index[id(r.variant)]] for j, r in enumerate(ordered)} if keep_maps else {}
    return Ablation(to_text(vs[0].expr), metric.name, sign > 0, ordered, len(batch), maps, list(batch.names))
