"""A grammar-shaped define-by-run space for Optuna: one categorical choice per tree node.

A candidate is grown top-down from its type (its set of axes). At the node with path ``p``
(``r`` the root, ``r0``/``r1`` its children, ...) and type ``T`` the trial suggests the
parameter ``"p:T"`` whose choices are the **productions** of ``T``: a terminal of axes T, a
constant (type {} only), an operator with the types of its arguments, e.g. ``relu``,
``sum:hw`` (argument T + {h, w}), ``mul(bkhw,bk)`` (a product of a {b,k,h,w} and a {b,k}
term). The root first suggests its type (``type``, when the space has several result
types) and a size budget (``size:T``, an integer), so TPE can learn which sizes pay off.

The choices of a parameter depend only on its name (its path fixes its depth), as TPE needs.
When a choice does not fit the remaining size budget, the smallest production that fits is
taken instead, so every trial yields a candidate of the space; a candidate maps back to
the parameters that produce it (:meth:`GrammarSpace.params`), which is how enumerated
candidates and seeds become ordinary trials of a study::

    grammar = GrammarSpace(space)
    expr = grammar.suggest(trial)               # inside an objective / after study.ask()
    params, dists = grammar.params(expr)        # an expression -> its trial parameters
    expr == grammar.decode(params)              # True
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from ..errors import SycamError
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.checker import infer
from ..grammar.ops import AXES, BATCH
from ..grammar.printer import number_text
from .space import OpSpec, SearchSpace

Axes = frozenset[str]
INF = 10 ** 9


class EncodingError(SycamError, ValueError):
    """An expression that the grammar space cannot produce (not a sentence of the space)."""


def type_text(axes: Axes) -> str:
    """``{b, k}`` -> ``"bk"``, constants -> ``"c"``."""
    return "".join(a for a in BATCH + AXES if a in axes) or "c"


@dataclass(frozen=True)
class Production:
    """One way to build a term of a type: a leaf (terminal or constant) or an operator node."""

    text: str                          # the categorical choice, e.g. "A", "#2", "sum:hw", "mul(bkhw,bk)"
    leaf: Expr | None = None
    op: OpSpec | None = None
    args: tuple[Axes, ...] = ()

    def build(self, children: list[Expr]) -> Expr:
        if self.leaf is not None:
            return self.leaf
        return Call(self.op.name, tuple(children), self.op.axes)


Chooser = Callable[[str, tuple[str, ...]], str]
IntChooser = Callable[[str, int, int], int]


class GrammarSpace:
    """The define-by-run encoding of a :class:`SearchSpace` (see the module docstring)."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.max_size = space.max_size
        self.max_depth = space.max_depth
        self.types = self._reachable()
        self.productions: dict[Axes, list[Production]] = {t: [] for t in self.types}
        self._collect()
        self._min = self._min_sizes()
        self.roots = tuple(t for t in space.result_axes if self.min_size(t, self.max_depth) <= self.max_size)
        if not self.roots:
            raise SycamError(f"the grammar of {space.describe()} has no candidate within its bounds")
        self._choices: dict[tuple[Axes, int], tuple[Production, ...]] = {}

    # ------------------------------------------------------------------ the grammar
    def _leaves(self) -> list[tuple[Expr, Axes]]:
        out: list[tuple[Expr, Axes]] = [(Var(n), frozenset(a)) for n, a in self.space.terminals]
        out += [(Num(c), frozenset()) for c in self.space.constants]
        return out

    def _reachable(self) -> list[Axes]:
        types = {t for _, t in self._leaves()}
        changed = True
        while changed:
            changed = False
            for t in list(types):
                for op in self.space.unary_ops:
                    r = op.result_axes(t) if t else None
                    if r is not None and r not in types:
                        types.add(r)
                        changed = True
                for op in self.space.binary_ops:
                    for u in list(types):
                        if (not t and not u) or (op.op.constant_operand and (u or not t)):
                            continue
                        r = op.result_axes(t, u)
                        if r is not None and r not in types:
                            types.add(r)
                            changed = True
        return sorted(types, key=lambda t: (len(t), type_text(t)))

    def _collect(self) -> None:
        for leaf, t in self._leaves():
            text = f"#{number_text(leaf.value)}" if isinstance(leaf, Num) else leaf.name
            self.productions[t].append(Production(text, leaf=leaf))
        for op in self.space.unary_ops:
            for t in self.types:
                r = op.result_axes(t) if t else None
                if r is not None and r in self.productions:
                    self.productions[r].append(Production(str(op), op=op, args=(t,)))
        for op in self.space.binary_ops:
            for t in self.types:
                for u in self.types:
                    if (not t and not u) or (op.op.constant_operand and (u or not t)):
                        continue
                    r = op.result_axes(t, u)
                    if r is not None and r in self.productions:
                        text = f"{op}({type_text(t)},{type_text(u)})"
                        self.productions[r].append(Production(text, op=op, args=(t, u)))

    def _min_sizes(self) -> dict[Axes, list[int]]:
        """m[T][d]: the fewest nodes of a term of type T and depth <= d (INF if none)."""
        m = {t: [INF] * (self.max_depth + 1) for t in self.types}
        for d in range(1, self.max_depth + 1):
            for t, prods in self.productions.items():
                best = m[t][d - 1]
                for p in prods:
                    best = min(best, self._prod_min(p, d, m))
                m[t][d] = best
        return m

    def _prod_min(self, p: Production, depth: int, m: Mapping[Axes, list[int]] | None = None) -> int:
        m = self._min if m is None else m
        if p.leaf is not None:
            return 1 if depth >= 1 else INF
        if depth < 2:
            return INF
        return 1 + sum(m[a][depth - 1] for a in p.args)

    def min_size(self, axes: Axes, depth: int) -> int:
        return self._min[axes][max(0, min(depth, self.max_depth))] if axes in self._min else INF

    def choices(self, axes: Axes, depth: int) -> tuple[Production, ...]:
        """Productions of ``axes`` that fit a subtree of depth <= ``depth`` within max_size."""
        key = (axes, depth)
        hit = self._choices.get(key)
        if hit is None:
            hit = tuple(p for p in self.productions[axes] if self._prod_min(p, depth) <= self.max_size)
            self._choices[key] = hit
        return hit

    # ------------------------------------------------------------------ decode
    def decode_with(self, choose: Chooser, choose_int: IntChooser) -> tuple[Expr, dict[str, BaseDistribution]]:
        """The candidate the choosers pick, and the distribution of every parameter asked."""
        dists: dict[str, BaseDistribution] = {}

        def cat(name: str, options: tuple[str, ...]) -> str:
            dists[name] = CategoricalDistribution(options)
            return choose(name, options)

        if len(self.roots) > 1:
            root = self._root_by_text(cat("type", tuple(type_text(t) for t in self.roots)))
        else:
            root = self.roots[0]
        lo = self.min_size(root, self.max_depth)
        name = f"size:{type_text(root)}"
        if lo < self.max_size:
            dists[name] = IntDistribution(lo, self.max_size)
            budget = int(choose_int(name, lo, self.max_size))
        else:
            budget = self.max_size
        return self._node("r", root, budget, self.max_depth, cat), dists

    def _root_by_text(self, text: str) -> Axes:
        for t in self.roots:
            if type_text(t) == text:
                return t
        raise EncodingError(f"no result type {text!r}")

    def _node(self, path: str, axes: Axes, size: int, depth: int, cat) -> Expr:
        options = self.choices(axes, self.max_depth - len(path) + 1)
        if len(options) == 1:
            prod = options[0]
        else:
            text = cat(f"{path}:{type_text(axes)}", tuple(p.text for p in options))
            prod = next((p for p in options if p.text == text), None)
            if prod is None:
                raise EncodingError(f"{text!r} is not a production of {path}:{type_text(axes)}")
        if self._prod_min(prod, depth) > size:
            prod = min((p for p in options if self._prod_min(p, depth) <= size),
                       key=lambda p: self._prod_min(p, depth))
        if prod.leaf is not None:
            return prod.leaf
        if len(prod.args) == 1:
            return prod.build([self._node(path + "0", prod.args[0], size - 1, depth - 1, cat)])
        left_t, right_t = prod.args
        left = self._node(path + "0", left_t, size - 1 - self.min_size(right_t, depth - 1), depth - 1, cat)
        right = self._node(path + "1", right_t, size - 1 - left.size, depth - 1, cat)
        return prod.build([left, right])

    def suggest(self, trial) -> Expr:
        """The candidate of an Optuna trial (define-by-run: suggests only the parameters it uses)."""
        expr, _ = self.decode_with(trial.suggest_categorical, trial.suggest_int)
        return expr

    def decode(self, params: Mapping[str, Any]) -> Expr:
        """The candidate a parameter dict produces (missing parameters: EncodingError)."""
        def pick(name, *_):
            try:
                return params[name]
            except KeyError:
                raise EncodingError(f"parameter {name!r} is missing") from None

        return self.decode_with(pick, pick)[0]

    def mutate(self, candidate: Expr, rng) -> Expr:
        """The candidate with one random subtree grown again at random (its size budget too,
        half the time): a neighbour in the grammar, used when the sampler repeats itself."""
        params, _ = self.params(candidate)
        paths = [k for k in params if k.startswith("r")]
        keep = dict(params)
        if paths:
            cut = rng.choice(paths).split(":")[0]
            keep = {k: v for k, v in params.items() if not k.startswith(cut)}
        if rng.random() < 0.5:
            keep = {k: v for k, v in keep.items() if not k.startswith("size:")}

        def pick(name, options):
            return keep[name] if name in keep and keep[name] in options else rng.choice(options)

        def pick_int(name, lo, hi):
            return keep[name] if name in keep and lo <= keep[name] <= hi else rng.randint(lo, hi)

        return self.decode_with(pick, pick_int)[0]

    # ------------------------------------------------------------------ encode
    def params(self, candidate: Expr) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
        """The parameters (and their distributions) under which :meth:`decode` gives ``candidate``."""
        why = self.space.why_not(candidate)
        if why is not None:
            raise EncodingError(f"not a candidate of the space: {why}")
        types = infer(candidate, self.space.terminal_axes)
        wanted: dict[str, Any] = {}
        root = types[candidate]
        if len(self.roots) > 1:
            wanted["type"] = type_text(root)
        wanted[f"size:{type_text(root)}"] = candidate.size
        self._encode("r", candidate, types, wanted)

        def pick(name, *_):
            return wanted[name]

        expr, dists = self.decode_with(pick, pick)
        if expr != candidate:
            raise EncodingError("the grammar space does not reproduce this candidate")   # a bug if it happens
        return {k: wanted[k] for k in dists}, dists

    def _encode(self, path: str, node: Expr, types: Mapping[Expr, Axes], out: dict[str, Any]) -> None:
        axes = types[node]
        if isinstance(node, Var):
            text = node.name
        elif isinstance(node, Num):
            text = f"#{number_text(node.value)}"
        else:
            spec = str(OpSpec(node.op, node.axes))
            if len(node.args) == 2:
                text = f"{spec}({type_text(types[node.args[0]])},{type_text(types[node.args[1]])})"
            else:
                text = spec
        out[f"{path}:{type_text(axes)}"] = text
        for i, child in enumerate(getattr(node, "args", ())):
            self._encode(path + str(i), child, types, out)
