"""Bottom-up, typed enumeration by size, pruned by the equivalence oracle.

The **bank** holds one representative per class of equivalent terms, by size and type (a
type is the set of axes), with its values on the probe images. Level n is grown from smaller
levels only:

    unary / reduction / normalisation / pc1 of a size n-1 term, when it types;
    binary x op y with size(x) + size(y) = n - 1 (commutative ops once per unordered pair;
    ``^`` only to a constant exponent; never two constants).

A term is *generated* only if it can still become (part of) a candidate within ``max_size``
(:meth:`SearchSpace.useful`) and its depth is within ``max_depth``. It then meets the oracles
(counts per size in :class:`LevelCounts`):

1. **sympy** (``sympy="before"``, the default): its canonical form, one sympy operation on its
   children's forms, is new (``"after"``: checked after the observational test, on fewer
   terms; ``"off"``: not used);
2. **observational**: its probe value is finite, not a constant, and differs from every bank
   term's value (an exact hash of the float values). Survivors join the bank; sizes only
   grow, so the kept representative of a class is a smallest one.

A term of the result type is also a **candidate**: it must further have a new candidate form
(sympy, up to a positive factor) and a new normalised probe heatmap (:class:`MapIndex`).
Distinct candidates are yielded in chunks for the correctness oracle. Seeds can be
registered first (:meth:`Enumerator.register`): an enumerated candidate equal to a seed is
not yielded again, and a smaller equivalent is recorded (:attr:`Enumerator.equivalent`).

Each new term costs one operator on stored values, and the operators are batched: a level's
terms that share an operator and a stored operand are computed in one tensor call against
the stacked values of all the other operands of one (size, type) group; their validity,
constancy and exact value hashes come from that batch too. Memory: the bank's values, the
map index and the bookkeeping are counted against ``memory_bytes``. When they fill it, the
current level is finished without storing new values (its terms are still checked and its
candidates scored; they just cannot become children) and enumeration stops
(``stop_reason = "memory"``). Terms of the last level (``max_size``) are never stored.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import sympy
import torch
from torch import Tensor

from ..errors import SycamError
from ..evidence.sets import EvidenceSet
from ..grammar.ast import Call, Expr, Num, Var
from ..grammar.ops import OPS
from ..grammar.printer import to_text
from ..kernels.compiler import apply_op
from ..kernels.memo import CandidateMaps, Memo, MiB, ValueCache, maps_from_values
from .equivalence import MapIndex, candidate_form, sympy_apply, sympy_leaf
from .evaluate import candidate_axes
from .space import OpSpec, SearchSpace

Axes = frozenset[str]
TERM_OVERHEAD = 512       # bytes of bookkeeping per bank term (node, keys; sympy forms extra), an estimate
# largest batch of results computed in one call (below glibc's mmap threshold: reused, not page-faulted)
BATCH_BYTES = 8 * MiB


@dataclass(slots=True)
class Term:
    expr: Expr
    axes: Axes
    form: sympy.Expr | None


@dataclass
class LevelCounts:
    """Terms and candidates of one size before and after each oracle (non-increasing left to right).

    terms:      generated -> new sympy form -> valid (finite, not constant) -> new value (bank)
                (with ``sympy="after"`` the sympy column is counted last: generated >= valid >=
                observational >= sympy)
    candidates: generated -> also a new term and a new candidate form -> a new heatmap
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
class _Group:
    """Bank terms of one (size, type): their values stacked (n, b, s, v, k, h, w) per layer once
    the level is complete (``parts`` collects them while it grows)."""

    terms: list[Term] = field(default_factory=list)
    stacks: list[Tensor] | None = None
    parts: list[list[Tensor]] = field(default_factory=list)
    shallow: list[int] | None = None         # indices of the terms that may still get a parent
    shallow_stacks: list[Tensor] | None = None

    @property
    def nbytes(self) -> int:
        ts = (self.stacks or []) + [p for layer in self.parts for p in layer]
        return sum(t.numel() * t.element_size() for t in ts)

    def close(self) -> None:
        if self.stacks is None:
            self.stacks = [torch.cat(layer) for layer in self.parts]
            self.parts = []


def _apply_batched(node: Call, args: Sequence[Tensor | float]) -> Tensor | float:
    """``apply_op`` on stacked (n, b, s, v, k, h, w) arguments: element-wise operators broadcast
    as they are; reductions, normalisations and pc1 see the stack folded into the image axis."""
    if OPS[node.op].rule.elementwise:
        return apply_op(node, args)
    (x,) = args
    n, b = x.shape[:2]
    out = apply_op(node, [x.reshape(n * b, *x.shape[2:])])
    return out.reshape(n, b, *out.shape[1:])



def _with_fixed(name: str, fixed: Term, fixed_values: Sequence, terms: Sequence[Term], batch: Sequence[Tensor],
                fixed_left: bool) -> tuple[list[Expr], list[Tensor], list[tuple[Term, Term]]]:
    """``fixed op t`` (or ``t op fixed``) for every t in ``terms``: the new nodes, their values per
    layer from the stacked ``batch`` (one op per layer for all of them) and their children."""
    if fixed_left:
        nodes = [Call(name, (fixed.expr, t.expr)) for t in terms]
        values = [apply_op(nodes[0], [f, x]) for f, x in zip(fixed_values, batch)]
        return nodes, values, [(fixed, t) for t in terms]
    nodes = [Call(name, (t.expr, fixed.expr)) for t in terms]
    values = [apply_op(nodes[0], [x, f]) for f, x in zip(fixed_values, batch)]
    return nodes, values, [(t, fixed) for t in terms]

class Enumerator:
    """Enumerates the distinct candidates of ``space`` by size on the ``probe`` images.

    ``for chunk in enum.candidates(): ...`` yields lists of candidate expressions (distinct
    under the equivalence oracle), smallest sizes first. ``counts`` holds one
    :class:`LevelCounts` per size; ``stop_reason`` says why it ended ("max_size", "memory",
    "time", "closed").
    """

    def __init__(self, space: SearchSpace, probe: EvidenceSet, *, memory_bytes: int = 512 * MiB,
                 sympy: str = "before", atol: float = 1e-3, chunk: int = 256, fusion: str = "mean"):
        probe.require(space.evidence_terms)
        if sympy not in ("before", "after", "off"):
            raise SycamError(f"sympy must be 'before' (the observational oracle), 'after' or 'off', not {sympy!r}")
        self.space = space
        self.probe = probe
        self.memory_bytes = int(memory_bytes)
        self.cache = ValueCache(min(64 * MiB, self.memory_bytes // 8))   # seeds and ad-hoc lookups only
        self.memo = Memo(probe, self.cache)
        self.sympy = sympy
        self.index = MapIndex(atol)
        self.chunk = int(chunk)
        self.fusion = fusion
        self.bank: list[dict[Axes, _Group]] = [{}, {}]   # by size (index 0 unused)
        self.constants: list[Term] = []
        self.n_terms = 0
        self.forms: set = set()
        self.candidate_forms: set = set()
        self.keys: set = set()
        self.counts: dict[int, LevelCounts] = {}
        self.equivalent: dict[str, Expr] = {}     # seed name -> smaller equivalent candidate found
        self.seed_reps: dict[str, Rep] = {}
        self.stop_reason = ""
        self.frozen = False        # memory full: terms are still checked, no longer stored
        self._layers = [terms for terms in probe.layers.values()]
        self._A = [terms["A"] if "A" in terms else None for terms in self._layers]
        self._pending: list[tuple[Term, list[Tensor]]] = []
        self._bank_bytes = 0
        self.last_maps: CandidateMaps | None = None   # probe maps of the last yielded chunk
        self._leaves()

    # ------------------------------------------------------------------ bank
    def _leaves(self) -> None:
        level = self.counts[1] = LevelCounts(1)
        t0 = time.perf_counter()
        for c in self.space.constants:
            level.generated += 1
            form = sympy_leaf(Num(c)) if self.sympy != "off" else None
            if form is not None and form in self.forms:
                continue
            if form is not None:
                self.forms.add(form)
            level.sympy += 1
            level.valid += 1
            level.observational += 1
            self.constants.append(Term(Num(c), frozenset(), form))
        for name, axes in self.space.terminals:
            term = Term(Var(name), frozenset(axes), sympy_leaf(Var(name)) if self.sympy != "off" else None)
            if term.form is not None:
                self.forms.add(term.form)
            values = [terms[name][None] for terms in self._layers]
            self._process(1, [term.expr], [(term,)], term.axes, values, level, forms=[term.form])
        self._close_level(1)
        level.seconds = time.perf_counter() - t0

    def _group(self, size: int, axes: Axes) -> _Group:
        while len(self.bank) <= size:
            self.bank.append({})
        g = self.bank[size].get(axes)
        if g is None:
            g = self.bank[size][axes] = _Group(parts=[[] for _ in self._layers])
        return g

    def _close_level(self, size: int) -> None:
        max_depth = self.space.max_depth
        if size >= len(self.bank):
            return
        for g in self.bank[size].values():
            g.close()
            g.shallow = [i for i, t in enumerate(g.terms) if t.expr.depth < max_depth]
            if len(g.shallow) == len(g.terms):
                g.shallow_stacks = g.stacks
            else:
                idx = torch.tensor(g.shallow, dtype=torch.long, device=g.stacks[0].device)
                g.shallow_stacks = [s.index_select(0, idx) for s in g.stacks]
                self._bank_bytes += sum(s.numel() * s.element_size() for s in g.shallow_stacks)

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
        """Bytes held: bank values, pending candidates, map index, bookkeeping (estimated)."""
        return self._bank_bytes + self.cache.stats.bytes + self.bookkeeping_bytes

    def terms(self, size: int | None = None) -> list[Term]:
        """Bank terms with stored values (terms of the last level, or found after the memory
        filled, are checked but not stored)."""
        levels = self.bank[1:] if size is None else [self.bank[size]] if size < len(self.bank) else []
        return [t for level in levels for g in level.values() for t in g.terms]

    # ------------------------------------------------------------------ seeds
    def register(self, name: str, candidate: Expr) -> bool:
        """Register a seed candidate (already scored elsewhere): enumerated candidates with the same
        heatmap on the probe are not yielded again. False if it equals an earlier seed."""
        values = self.memo(candidate)
        maps = maps_from_values([values], [candidate_axes(candidate, self.space)], self.probe, self.space.relu,
                                self.fusion)
        idx, new = self.index.find_or_add(maps.normalised()[0], Rep(candidate, name))
        if not new:                          # equal on the probe to an earlier seed: keep the smaller
            rep = self.index.ids[idx]
            self.seed_reps[name] = rep
            if candidate.size < rep.expr.size:
                rep.expr = candidate
                for other, r in self.seed_reps.items():     # every larger seed of this class
                    if r is rep and other != name:
                        self.equivalent[other] = candidate
            elif rep.expr.size < candidate.size:
                self.equivalent[name] = rep.expr
            return False
        self.seed_reps[name] = self.index.ids[idx]
        return True

    # ------------------------------------------------------------------ enumeration
    def candidates(self, deadline: float | None = None) -> Iterator[list[Expr]]:
        """Distinct candidates in chunks, by increasing size, until max_size, the memory budget or
        the ``deadline`` (a ``time.perf_counter()`` value)."""
        self._deadline = deadline
        try:
            yield from self._flush(self.counts[1])
            for size in range(2, self.space.max_size + 1):
                level = self.counts[size] = LevelCounts(size)
                t0 = time.perf_counter()
                for _ in self._grow(size, level):
                    level.seconds += time.perf_counter() - t0
                    yield from self._flush(level)
                    t0 = time.perf_counter()
                    if self.stop_reason:
                        break
                level.seconds += time.perf_counter() - t0
                yield from self._flush(level)
                self._close_level(size)
                if self.frozen and not self.stop_reason:
                    self.stop_reason = "memory"
                if self.stop_reason:
                    return
            self.stop_reason = "max_size"
        except GeneratorExit:
            self.stop_reason = self.stop_reason or "closed"
            raise

    def _check_limits(self) -> bool:
        used = self.memory_used
        if used > self.memory_bytes and not self.frozen:
            self.frozen = True          # finish this level without storing values, then stop
        if used > 1.25 * self.memory_bytes:
            self.stop_reason = "memory"
        elif self._deadline is not None and time.perf_counter() > self._deadline:
            self.stop_reason = "time"
        return bool(self.stop_reason)

    def _grow(self, size: int, level: LevelCounts) -> Iterator[None]:
        """Generate level ``size`` in batches; yields when candidates are pending (or limits hit)."""
        space = self.space
        for op in space.unary_ops:
            for t_axes, g in list(self.bank[size - 1].items()):
                r = op.result_axes(t_axes)
                if r is None or not t_axes or not space.useful(r, size) or not g.shallow:
                    continue
                node0 = lambda t, op=op: Call(op.name, (t.expr,), op.axes)  # noqa: E731
                terms = [g.terms[i] for i in g.shallow]
                for lo, hi in self._slices(len(terms), g.shallow_stacks):
                    batch = [s[lo:hi] for s in g.shallow_stacks]
                    nodes = [node0(t) for t in terms[lo:hi]]
                    values = [_apply_batched(nodes[0], [x]) for x in batch]
                    self._process(size, nodes, [(t,) for t in terms[lo:hi]], r, values, level)
                    if self._due():
                        yield
                        if self.stop_reason:
                            return
        for op in space.binary_ops:
            for _ in self._binary(op, size, level):
                yield
                if self.stop_reason:
                    return

    def _due(self) -> bool:
        return len(self._pending) >= self.chunk or self._check_limits()

    @property
    def stored_terms(self) -> int:
        return sum(len(g.terms) for level in self.bank for g in level.values())

    def _slices(self, n: int, stacks: Sequence[Tensor]) -> list[tuple[int, int]]:
        per = max(1, sum(s[:1].numel() * s.element_size() for s in stacks))
        step = max(1, min(BATCH_BYTES, max(MiB, self.memory_bytes // 16)) // per)
        return [(i, min(n, i + step)) for i in range(0, n, step)]

    def _binary(self, op: OpSpec, size: int, level: LevelCounts) -> Iterator[None]:
        space = self.space
        commutative = op.op.commutative
        const = self.constants
        for s1 in range(1, size - 1):
            s2 = size - 1 - s1
            if s1 >= len(self.bank) or s2 >= len(self.bank):
                continue
            left = dict(self.bank[s1])
            right = dict(self.bank[s2])
            if s1 == 1 and const:
                left[frozenset()] = None        # the constants, as a pseudo-group
            if s2 == 1 and const:
                right[frozenset()] = None
            for ta, ga in left.items():
                for tb, gb in right.items():
                    if not ta and not tb:
                        continue                # no operator on two constants
                    if op.op.constant_operand and (tb or not ta):
                        continue                # x ^ constant only
                    if commutative and (s1 > s2 or (s1 == s2 and sorted(ta) > sorted(tb))):
                        continue                # the unordered pair is built from the other side
                    r = op.result_axes(ta, tb)
                    if r is None or not space.useful(r, size):
                        continue
                    yield from self._pair(op, size, level, r, ga, gb, commutative and s1 == s2 and ta == tb)

    def _pair(self, op: OpSpec, size: int, level: LevelCounts, r: Axes, ga: _Group | None, gb: _Group | None,
              same: bool) -> Iterator[None]:
        """x op y for x in ga, y in gb (None: the constants), batched over the larger side."""
        name = op.name
        if ga is None or gb is None:                  # constant op group, or group op constant
            g = gb if ga is None else ga
            if not g.shallow:
                return
            terms = [g.terms[i] for i in g.shallow]
            for c in self.constants:
                cval = c.expr.value
                for lo, hi in self._slices(len(terms), g.shallow_stacks):
                    batch = [s[lo:hi] for s in g.shallow_stacks]
                    nodes, values, children = _with_fixed(name, c, [cval] * len(batch), terms[lo:hi], batch,
                                                          fixed_left=ga is None)
                    self._process(size, nodes, children, r, values, level)
                    if self._due():
                        yield
                        if self.stop_reason:
                            return
            return
        if not ga.shallow or not gb.shallow:
            return
        xs = [ga.terms[i] for i in ga.shallow]
        ys = [gb.terms[i] for i in gb.shallow]
        loop_left = same or len(xs) <= len(ys)         # loop over one side, batch the other
        outer, inner = (xs, ys) if loop_left else (ys, xs)
        inner_stacks = gb.shallow_stacks if loop_left else ga.shallow_stacks
        outer_stacks = ga.shallow_stacks if loop_left else gb.shallow_stacks
        for i, o in enumerate(outer):
            start = i if same else 0
            o_vals = [s[i:i + 1] for s in outer_stacks]
            for lo, hi in self._slices(len(inner) - start, inner_stacks):
                lo, hi = lo + start, hi + start
                batch = [s[lo:hi] for s in inner_stacks]
                nodes, values, children = _with_fixed(name, o, o_vals, inner[lo:hi], batch, fixed_left=loop_left)
                self._process(size, nodes, children, r, values, level)
                if self._due():
                    yield
                    if self.stop_reason:
                        return

    def _process(self, size: int, nodes: Sequence[Expr], children: Sequence[tuple[Term, ...]], axes: Axes,
                 values: Sequence[Tensor], level: LevelCounts, forms: Sequence | None = None) -> None:
        """Run the oracles over a batch of new terms (one type), whose stacked probe values are
        ``values`` (per layer, (n, b, s, v, k, h, w)); keep the survivors."""
        n = len(nodes)
        is_cand = axes in self.space.result_axes
        level.generated += n
        level.candidates += n if is_cand else 0
        values = [v.expand(n, *v.shape[1:]) if v.shape[0] != n else v for v in values]
        # validity and constancy of every row, in one pass per layer
        ok = torch.ones(n, dtype=torch.bool)
        varies = torch.zeros(n, dtype=torch.bool)
        arrays = []
        for v in values:
            flat = v.reshape(n, -1)
            lo, hi = flat.amin(1), flat.amax(1)      # (aminmax along a dim is ~6x slower on CPU)
            lo, hi = lo.cpu(), hi.cpu()
            ok &= torch.isfinite(lo) & torch.isfinite(hi)
            varies |= hi != lo
            arrays.append(flat)
        ok = (ok & varies).tolist()
        host = [a.contiguous().cpu().numpy() for a in arrays]
        shapes = [tuple(v.shape[1:]) for v in values]
        keep: list[int] = []
        kept_terms: list[Term] = []
        before = self.sympy == "before"
        for i in range(n):
            term = Term(nodes[i], axes, None)
            if forms is not None:
                term.form = forms[i]
            if before and forms is None and not self._sympy_new(term, children[i]):
                continue
            if before:
                level.sympy += 1
            if not ok[i]:
                continue
            level.valid += 1
            key = tuple((s, hash(h[i].tobytes())) for s, h in zip(shapes, host))
            if key in self.keys:
                continue
            self.keys.add(key)
            level.observational += 1
            if self.sympy == "after" and forms is None and not self._sympy_new(term, children[i]):
                continue
            if not before:
                level.sympy += 1
            keep.append(i)
            kept_terms.append(term)
        if not keep:
            return
        idx = torch.tensor(keep, dtype=torch.long, device=values[0].device)
        kept = [v.index_select(0, idx) for v in values]
        self.n_terms += len(kept_terms)
        if size < self.space.max_size and not self.frozen:    # a term of the last level has no parent
            g = self._group(size, axes)
            for layer, k in zip(g.parts, kept):
                layer.append(k)
            self._bank_bytes += sum(k.numel() * k.element_size() for k in kept)
            g.terms.extend(kept_terms)
        if is_cand:
            for j, term in enumerate(kept_terms):
                if self._new_candidate_form(term):
                    level.candidates_sympy += 1
                    self._pending.append((term, [k[j] for k in kept]))   # views of the bank's values

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
        """Map the pending candidates on the probe, keep those with a new normalised heatmap and
        yield them (their probe maps are in :attr:`last_maps`, in the same order)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        t0 = time.perf_counter()
        maps = maps_from_values([v for _, v in pending], [t.axes for t, _ in pending], self.probe, self.space.relu,
                                self.fusion)
        normalised = maps.normalised()
        feats = self.index.features_of(normalised)
        ok = maps.valid.all(-1).tolist()
        keep = []
        for i, (t, _) in enumerate(pending):
            if not ok[i]:
                continue
            k, new = self.index.find_or_add(normalised[i], Rep(t.expr), feats[i])
            if new:
                keep.append(i)
            else:
                rep = self.index.ids[k]
                if rep.seed is not None and t.expr.size < rep.expr.size:
                    rep.expr = t.expr
                    for name, r in self.seed_reps.items():     # every seed of this class
                        if r is rep:
                            self.equivalent[name] = t.expr
        keep.sort(key=lambda i: pending[i][0].expr.size)
        level.candidates_observational += len(keep)
        level.seconds += time.perf_counter() - t0
        if keep:
            idx = torch.tensor(keep, dtype=torch.long, device=maps.valid.device)
            self.last_maps = CandidateMaps([r.index_select(0, idx) for r in maps.raw], maps.valid.index_select(0, idx),
                                           maps.size, maps.fusion)
            yield [pending[i][0].expr for i in keep]

    # ------------------------------------------------------------------ reporting
    def count_table(self) -> list[dict]:
        return [c.as_dict() for _, c in sorted(self.counts.items())]

    def describe_equivalences(self) -> dict[str, str]:
        return {name: to_text(e) for name, e in self.equivalent.items()}


def candidate_classes(space: SearchSpace, evidence: EvidenceSet, candidates: Sequence[Expr], *,
                      atol: float = 1e-3, fusion: str = "mean") -> list[int]:
    """The equivalence class (0, 1, ...) of each candidate under the observational oracle on the
    evidence's images: candidates with the same normalised heatmaps (within ``atol``) share one."""
    memo = Memo(evidence, ValueCache(64 * MiB))
    values = [memo(c) for c in candidates]
    maps = maps_from_values(values, [candidate_axes(c, space) for c in candidates], evidence, space.relu, fusion)
    index = MapIndex(atol)
    return [index.find_or_add(m)[0] for m in maps.normalised()]
