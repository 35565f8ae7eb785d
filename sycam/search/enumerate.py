"""Bottom-up, typed enumeration by size, pruned by the equivalence oracle.

The **bank** holds one representative per class of equivalent terms, by size and type (a
type is the set of axes). Level n is grown from smaller levels only:

    unary / reduction / normalisation / pc1 of a size n-1 term, when it types;
    binary x op y with size(x) + size(y) = n - 1 (commutative ops once per unordered pair;
    ``^`` only to a constant exponent; never two constants).

A new term is *generated* only if it can still become (part of) a candidate within
``max_size`` (:meth:`SearchSpace.useful`) and its depth is within ``max_depth``. It then meets
the oracles in turn (counts per size in :class:`LevelCounts`):

1. **sympy**: its canonical form (one sympy op on its children's forms) is new;
2. **observational**: its value on the probe images (one operator on its children's
   memoised values) is finite, not a constant, and not equal to a bank term's value.
   Survivors join the bank; since sizes only grow, the kept representative is the smallest.

A term of the result type is also a **candidate**: it must further have a new candidate form
(sympy, up to a positive factor) and a new normalised probe heatmap (:class:`MapIndex`).
Distinct candidates are yielded in chunks for the correctness oracle. Seeds can be
registered first (:meth:`Enumerator.register`): an enumerated candidate equal to a seed is
not yielded again, and the smaller of the two is recorded (:attr:`Enumerator.equivalent`).

Memory: sub-term values live in a :class:`ValueCache` under a byte budget (evicted values are
recomputed from their children); the bank's bookkeeping and the map index are counted against
the same budget and enumeration stops (``stop_reason = "memory"``) when they fill it.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import sympy
import torch

from ..errors import SycamError
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.ops import COMMUTATIVE
from ..grammar.printer import to_text
from .equivalence import CONSTANT, INVALID, MapIndex, candidate_form, observe, sympy_apply, sympy_leaf
from .evaluate import MiB, EvidenceSet, Memo, ValueCache, maps_from_values
from .space import OpSpec, SearchSpace

Axes = frozenset[str]
TERM_OVERHEAD = 1024      # bytes of bookkeeping per bank term (node, sympy form, keys), an estimate


@dataclass(slots=True)
class Term:
    expr: Expr
    axes: Axes
    form: sympy.Expr | None


@dataclass
class LevelCounts:
    """Terms and candidates of one size before and after each oracle (monotone left to right).

    terms:      generated -> new sympy form -> valid (finite, not constant) -> new value (bank)
    candidates: generated -> new sympy form (term and candidate) -> new value and new heatmap
    """

    size: int
    generated: int = 0
    sympy: int = 0
    valid: int = 0
    observational: int = 0
    candidates: int = 0
    candidates_sympy: int = 0
    candidates_observational: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rep:
    """The representative of a class of equivalent candidates (smallest expression seen)."""

    expr: Expr
    seed: str | None = None


@dataclass
class Progress:
    """What the enumerator reports to an optional callback."""

    kind: str                    # "level" (a size starts), "level_done", "chunk"
    size: int
    counts: LevelCounts
    bank: int
    memory_bytes: int
    message: str = ""


class Enumerator:
    """Enumerates the distinct candidates of ``space`` by size on the ``probe`` images.

    ``for chunk in enum.candidates(): ...`` yields lists of candidate expressions (distinct
    under the equivalence oracle), smallest sizes first. ``counts`` holds one
    :class:`LevelCounts` per size; ``stop_reason`` says why it ended ("max_size", "memory",
    "closed").
    """

    def __init__(self, space: SearchSpace, probe: EvidenceSet, *, memory_bytes: int = 512 * MiB,
                 sympy: str = "before", atol: float = 1e-3, chunk: int = 256, fusion: str = "mean",
                 progress: Callable[[Progress], None] | None = None):
        probe.require(space.evidence_terms)
        self.space = space
        self.probe = probe
        self.memory_bytes = int(memory_bytes)
        self.cache = ValueCache(int(self.memory_bytes * 0.75))
        self.memo = Memo(probe, self.cache)
        if sympy not in ("before", "after", "off"):
            raise SycamError(f"sympy must be 'before' (the observational oracle), 'after' or 'off', not {sympy!r}")
        self.sympy = sympy
        self.index = MapIndex(atol)
        self.chunk = int(chunk)
        self.fusion = fusion
        self.progress = progress
        self.bank: list[dict[Axes, list[Term]]] = [{}, {}]   # by size (index 0 unused)
        self.n_terms = 0
        self.forms: set = set()
        self.candidate_forms: set = set()
        self.keys: set = set()
        self.counts: dict[int, LevelCounts] = {}
        self.equivalent: dict[str, Expr] = {}     # seed name -> smaller equivalent candidate found
        self.seed_reps: dict[str, Rep] = {}
        self.stop_reason = ""
        self._leaves()

    # ------------------------------------------------------------------ bank
    def _leaves(self) -> None:
        level = LevelCounts(1)
        t0 = time.perf_counter()
        leaves: list[Term] = []
        for name, axes in self.space.terminals:
            leaves.append(Term(Var(name), frozenset(axes), sympy_leaf(Var(name)) if self.sympy != 'off' else None))
        for c in self.space.constants:
            leaves.append(Term(Num(c), frozenset(), sympy_leaf(Num(c)) if self.sympy != 'off' else None))
        self._pending: list[Term] = []
        for t in leaves:
            level.generated += 1
            is_cand = t.axes in self.space.result_axes
            level.candidates += is_cand
            if t.form is not None:
                if t.form in self.forms:
                    continue
                self.forms.add(t.form)
            level.sympy += 1
            if isinstance(t.expr, Var):
                key = observe(self.memo(t.expr))
                if key in (INVALID, CONSTANT) or key in self.keys:
                    continue
                self.keys.add(key)
            level.valid += 1
            level.observational += 1
            self._add(1, t)
            if is_cand and self._new_candidate_form(t):
                level.candidates_sympy += 1
                self._pending.append(t)
        level.seconds = time.perf_counter() - t0
        self.counts[1] = level

    def _add(self, size: int, term: Term) -> None:
        while len(self.bank) <= size:
            self.bank.append({})
        self.bank[size].setdefault(term.axes, []).append(term)
        self.n_terms += 1

    def _new_candidate_form(self, term: Term) -> bool:
        if term.form is None:
            return True
        cform = candidate_form(term.form, self.space.result)
        if cform in self.candidate_forms:
            return False
        self.candidate_forms.add(cform)
        return True

    @property
    def bookkeeping_bytes(self) -> int:
        return self.n_terms * TERM_OVERHEAD + self.index.nbytes

    @property
    def memory_used(self) -> int:
        return self.cache.stats.bytes + self.bookkeeping_bytes

    def terms(self, size: int | None = None) -> list[Term]:
        levels = self.bank[1:] if size is None else [self.bank[size]] if size < len(self.bank) else []
        return [t for level in levels for ts in level.values() for t in ts]

    # ------------------------------------------------------------------ seeds
    def register(self, name: str, candidate: Expr) -> bool:
        """Register a seed candidate (already scored elsewhere): enumerated candidates with the same
        heatmap on the probe are not yielded again. False if it equals an earlier seed."""
        values = self.memo(candidate)
        maps = maps_from_values([values], [self._axes_of(candidate)], self.probe, self.space, self.fusion)
        idx, new = self.index.find_or_add(maps.normalised()[0], Rep(candidate, name))
        if not new:
            rep = self.index.ids[idx]
            if rep.seed and candidate.size < rep.expr.size:
                rep.expr = candidate
            return False
        self.seed_reps[name] = self.index.ids[idx]
        return True

    def _axes_of(self, expr: Expr) -> Axes:
        from .evaluate import candidate_axes
        return candidate_axes(expr, self.space)

    # ------------------------------------------------------------------ enumeration
    def candidates(self, deadline: float | None = None) -> Iterator[list[Expr]]:
        """Distinct candidates in chunks, by increasing size, until max_size, the memory budget or
        the ``deadline`` (a ``time.perf_counter()`` value)."""
        try:
            yield from self._flush(self.counts[1])
            for size in range(2, self.space.max_size + 1):
                level = self.counts[size] = LevelCounts(size)
                self._report("level", level)
                t0 = time.perf_counter()
                for term_args in self._generate(size, level):
                    if term_args is None:
                        continue
                    node, children, axes = term_args
                    self._consider(size, node, children, axes, level)
                    if len(self._pending) >= self.chunk:
                        level.seconds += time.perf_counter() - t0
                        yield from self._flush(level)
                        t0 = time.perf_counter()
                    if level.generated % 256 == 0:
                        if self.memory_used > self.memory_bytes:
                            self.stop_reason = "memory"
                            break
                        if deadline is not None and time.perf_counter() > deadline:
                            self.stop_reason = "time"
                            break
                level.seconds += time.perf_counter() - t0
                yield from self._flush(level)
                self._report("level_done", level)
                if self.stop_reason:
                    return
            self.stop_reason = "max_size"
        except GeneratorExit:
            self.stop_reason = self.stop_reason or "closed"
            raise

    def _report(self, kind: str, level: LevelCounts, message: str = "") -> None:
        if self.progress is not None:
            self.progress(Progress(kind, level.size, level, self.n_terms, self.memory_used, message))

    def _generate(self, size: int, level: LevelCounts):
        """Well-typed, useful, depth-bounded (node, children, axes) of this size."""
        space = self.space
        max_depth = space.max_depth
        prev = self.bank[size - 1] if size - 1 < len(self.bank) else {}
        for op in space.unary_ops:
            for t_axes, terms in prev.items():
                if not t_axes:
                    continue                       # no operator on a bare constant
                r = op.result_axes(t_axes)
                if r is None or not space.useful(r, size):
                    continue
                for t in terms:
                    if t.expr.depth + 1 > max_depth:
                        continue
                    yield Call(op.name, (t.expr,), op.axes), (t,), r
        for op in space.binary_ops:
            yield from self._binary(op, size)

    def _binary(self, op: OpSpec, size: int):
        space = self.space
        max_depth = space.max_depth
        commutative = op.name in COMMUTATIVE
        for s1 in range(1, size - 1):
            s2 = size - 1 - s1
            if commutative and s1 > s2:
                continue
            if s1 >= len(self.bank) or s2 >= len(self.bank):
                continue
            left, right = self.bank[s1], self.bank[s2]
            type_pairs = [(a, b) for a in left for b in right]
            if op.name == "pow":
                type_pairs = [(a, b) for a, b in type_pairs if not b and a]
            for ta, tb in type_pairs:
                if not ta and not tb:
                    continue
                if commutative and s1 == s2 and sorted(ta) > sorted(tb):
                    continue                        # the unordered pair is built from (tb, ta)
                r = op.result_axes(ta, tb)
                if r is None or not space.useful(r, size):
                    continue
                xs, ys = left[ta], right[tb]
                same = commutative and s1 == s2 and ta == tb
                for i, x in enumerate(xs):
                    dx = x.expr.depth
                    for y in (ys[i:] if same else ys):
                        if max(dx, y.expr.depth) + 1 > max_depth:
                            continue
                        yield Call(op.name, (x.expr, y.expr)), (x, y), r

    def _consider(self, size: int, node: Call, children: Sequence[Term], axes: Axes, level: LevelCounts) -> None:
        level.generated += 1
        is_cand = axes in self.space.result_axes
        level.candidates += is_cand
        term = Term(node, axes, None)
        if self.sympy == "before" and not self._sympy_new(term, children):
            return
        if self.sympy == "before":
            level.sympy += 1
        values = self.memo.compute(node, [self.memo(c.expr) for c in children])
        key = observe(values)
        if key is INVALID or key is CONSTANT:
            return
        level.valid += 1
        if key in self.keys:
            return
        self.keys.add(key)
        level.observational += 1
        if self.sympy == "after" and not self._sympy_new(term, children):
            return
        if self.sympy != "before":
            level.sympy += 1
        self._add(size, term)
        if is_cand and self._new_candidate_form(term):
            level.candidates_sympy += 1
            self._pending.append(term)

    def _sympy_new(self, term: Term, children: Sequence[Term]) -> bool:
        """Set the term's sympy form; False if it is a number or an earlier term's form."""
        if self.sympy == "off":
            return True
        form = term.form = sympy_apply(term.expr, [c.form for c in children])
        if form.is_number or form in self.forms:
            return False
        self.forms.add(form)
        return True

    def _flush(self, level: LevelCounts) -> Iterator[list[Expr]]:
        pending, self._pending = self._pending, []
        if not pending:
            return
        t0 = time.perf_counter()
        values = [self.memo(t.expr) for t in pending]
        maps = maps_from_values(values, [t.axes for t in pending], self.probe, self.space, self.fusion)
        normalised = maps.normalised()
        feats = self.index.features_of(normalised)
        valid = maps.valid.all(-1).tolist()
        out = []
        for i, t in enumerate(pending):
            if not valid[i]:
                continue
            idx, new = self.index.find_or_add(normalised[i], Rep(t.expr), feats[i])
            if new:
                out.append(t.expr)
            else:
                rep = self.index.ids[idx]
                if rep.seed is not None and t.expr.size < rep.expr.size:
                    self.equivalent[rep.seed] = t.expr
                    rep.expr = t.expr
        level.candidates_observational += len(out)
        level.seconds += time.perf_counter() - t0
        self._report("chunk", level)
        if out:
            yield out

    # ------------------------------------------------------------------ reporting
    def count_table(self) -> list[dict]:
        return [c.as_dict() for _, c in sorted(self.counts.items())]

    def describe_equivalences(self) -> dict[str, str]:
        return {name: to_text(e) for name, e in self.equivalent.items()}


def candidate_classes(space: SearchSpace, evidence: EvidenceSet, candidates: Sequence[Expr], *,
                      atol: float = 1e-3, fusion: str = "mean") -> list[int]:
    """The equivalence class (0, 1, ...) of each candidate under the observational oracle on the
    evidence's images: candidates with the same normalised heatmaps (within ``atol``) share one."""
    from .evaluate import candidate_axes

    memo = Memo(evidence, ValueCache(64 * MiB))
    values = [memo(c) for c in candidates]
    maps = maps_from_values(values, [candidate_axes(c, space) for c in candidates], evidence, space, fusion)
    index = MapIndex(atol)
    return [index.find_or_add(m)[0] for m in maps.normalised()]
