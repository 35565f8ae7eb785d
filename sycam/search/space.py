"""The search space: which expressions a synthesis run may build.

A :class:`SearchSpace` names the terminals (evidence tensors), the operators (reductions
and normalisations with the axes they act on, e.g. ``sum:hw``), the numeric constants,
the size / depth bounds of a candidate and the **result type** of a candidate:

``weights``      channel weights w, axes {b, k}; the map is relu(sum_k w_k A_k) (SyCAM's form:
                 Grad-CAM, Grad-CAM++, XGrad-CAM, CAM).
``weight_maps``  w as above or per-position weights W, axes {b, k, h, w}; the map is
                 relu(sum_k W_k * A_k) (adds HiResCAM, LayerCAM, SSGrad-CAM(++)). The default.
``heatmap``      the map itself, axes {b, h, w} (full spatial maps; no fixed wrapper).

Bounds apply to the candidate, not to the fixed wrapper: Grad-CAM is the candidate
``mean(G, hw)`` of size 2 in the weight spaces and ``relu(sum(mean(G, hw) * A, k))`` of
size 6 in the heatmap space.

A space is built from keyword arguments, from CLI-style strings or from a config file
(TOML or JSON), and is validated when built: an unknown operator or terminal is an
:class:`~sycam.errors.UnknownNameError` listing close matches, and bounds under which no
candidate of the result type exists are a :class:`SearchSpaceError`, before any work::

    space = SearchSpace(operators="+,*,/,relu,sum:hw", terminals="A,G", constants="2", max_size=9)
    space = load_space("space.toml")        # [space] table, or top-level keys
    space.contains(parse("sum(relu(G), hw)"))   # True
    space.why_not(expr)                     # None, or the reason it is outside

Operators are written ``name`` (``add``, ``relu``), as their infix symbol (``+ - * / ^``)
or, for reductions and normalisations, ``name:axes`` / ``name(axes)`` (``sum:hw``,
``softmax(k)``). ``where`` and comparisons are not enumerated. ``x ^ y`` is enumerated with
a constant exponent only.
"""
from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExpressionTypeError, SycamError, UnknownNameError
from ..evidence.terminals import TERMINALS, Terminal
from ..grammar.ast import Call, Expr, Num, Var, walk
from ..grammar.checker import HEATMAP, WEIGHTS, fmt_axes, infer
from ..grammar.ops import AXES, BINARY_SYMBOLS, OPS, AxesError, Op
from ..grammar.parser import MAX_DEPTH, MAX_SIZE
from ..grammar.printer import to_text
from ..methods.seeds import get_seed

Axes = frozenset[str]

#: axes of a per-position weight map W
WEIGHT_MAP: Axes = frozenset("bkhw")

#: result type -> the candidate axes it accepts
RESULTS: dict[str, tuple[Axes, ...]] = {
    "weights": (WEIGHTS,),
    "weight_maps": (WEIGHTS, WEIGHT_MAP),
    "heatmap": (HEATMAP,),
}
DEFAULT_OPERATORS = ("add", "sub", "mul", "div", "relu", "abs", "sum:hw", "mean:hw", "max:hw")
DEFAULT_TERMINAL_NAMES = ("A", "G", "G2", "G3")
DEFAULT_CONSTANTS = (1.0, 2.0)
DEFAULT_RESULT = "weight_maps"
DEFAULT_MAX_SIZE = 21     # SSGrad-CAM++'s weight map W has 21 nodes
DEFAULT_MAX_DEPTH = 12

#: the gradient seeds a default space must contain (``sycam.methods.seeds`` names)
GRADIENT_SEEDS = ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "ssgradcam", "ssgradcampp")
#: gradient seeds that are heatmaps, not relu(sum(W * A, k)): a heatmap space holding their operators
#: (sum:k, pc1) enqueues them too
HEATMAP_SEEDS = ("gradcamelementwise", "eigengradcam")

OPTIONS = ("terminals", "operators", "constants", "max_size", "max_depth", "result")


class SearchSpaceError(SycamError, ValueError):
    """A search space that cannot be searched (bad option, impossible bounds, ...)."""


@dataclass(frozen=True, order=True)
class OpSpec:
    """One operator of the space: an operator name plus, for reductions/normalisations, its axes."""

    name: str
    axes: str = ""

    @property
    def op(self) -> Op:
        return OPS[self.name]

    @property
    def arity(self) -> int:
        return OPS[self.name].arity

    def __str__(self) -> str:
        return f"{self.name}:{self.axes}" if self.axes else self.name

    def result_axes(self, *args: Axes) -> Axes | None:
        """Axes of this operator applied to arguments with these axes; None if ill-typed."""
        try:
            return self.op.rule.result(args, self.axes)
        except AxesError:
            return None


_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:[:_]\s*([A-Za-z]+)|\(\s*([A-Za-z]+)\s*\))?\s*$")


def parse_operator(text: str | OpSpec) -> OpSpec:
    """``"sum:hw"``, ``"sum(hw)"``, ``"relu"``, ``"+"`` -> :class:`OpSpec` (validated)."""
    if isinstance(text, OpSpec):
        return parse_operator(str(text))
    raw = str(text).strip()
    if raw in BINARY_SYMBOLS:
        return OpSpec(BINARY_SYMBOLS[raw])
    m = _SPEC.match(raw)
    if not m:
        raise SearchSpaceError(f"cannot read operator {raw!r}: write a name (relu), a symbol (+ - * / ^) "
                               "or a reduction with its axes (sum:hw, mean(hw))")
    name, axes = m.group(1), m.group(2) or m.group(3) or ""
    if name not in OPS and "_" in name and not axes:   # sum_hw
        head, _, tail = name.rpartition("_")
        if head in OPS:
            name, axes = head, tail
    if name not in OPS:
        known = sorted(set(OPS) | {f"{o}:hw" for o, op in OPS.items() if op.rule.takes_axes})
        raise UnknownNameError("operator", name, known, hint="see sycam.grammar.ops")
    op = OPS[name]
    if not op.enumerable:
        raise SearchSpaceError(f"operator {name!r} ({op.syntax}) is not enumerated by the search; "
                               f"choose among {', '.join(o for o, p in OPS.items() if p.enumerable)}")
    if op.rule.takes_axes:
        if not axes:
            raise SearchSpaceError(f"{name} needs the axes it acts on, e.g. {name}:hw or {name}:k")
        bad = sorted(set(axes) - set(AXES))
        if bad or len(set(axes)) != len(axes):
            raise SearchSpaceError(f"{raw!r}: axes must be distinct letters from {{{', '.join(AXES)}}}"
                                   + (f", not {', '.join(bad)}" if bad else ""))
        axes = "".join(a for a in AXES if a in axes)
    elif axes:
        raise SearchSpaceError(f"{name} acts element-wise and takes no axes (got {raw!r})")
    return OpSpec(name, axes)


def _split_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        # commas separate items; commas inside parentheses (none expected) are kept
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, Mapping):
        return list(value.items())
    return list(value)


def _parse_terminals(value: Any) -> tuple[tuple[str, str], ...]:
    """Names of TERMINALS, ``"name:axes"`` for custom evidence, or a mapping name -> axes."""
    out: dict[str, str] = {}
    for item in _split_list(value):
        if isinstance(item, Terminal):
            name, axes = item.name, item.axes
        elif isinstance(item, tuple):
            name, axes = item[0], item[1].axes if isinstance(item[1], Terminal) else str(item[1])
        else:
            name, _, axes = str(item).partition(":")
            name, axes = name.strip(), axes.strip()
        if not axes:
            if name not in TERMINALS:
                raise UnknownNameError("terminal", name, TERMINALS,
                                       hint="a custom terminal is written name:axes, e.g. score:bk")
            axes = TERMINALS[name].axes
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise SearchSpaceError(f"terminal names are identifiers, not {name!r}")
        if "b" not in axes or set(axes) - set("b" + AXES) or len(set(axes)) != len(axes):
            raise SearchSpaceError(f"terminal {name}: axes {axes!r} must include b and be distinct letters "
                                   f"from b{AXES}")
        out[name] = "".join(a for a in "b" + AXES if a in axes)
    return tuple(out.items())


def _parse_constants(value: Any) -> tuple[float, ...]:
    out: list[float] = []
    for item in _split_list(value):
        try:
            c = float(item)
        except (TypeError, ValueError):
            raise SearchSpaceError(f"constants are numbers, not {item!r}") from None
        if not math.isfinite(c):
            raise SearchSpaceError(f"constants must be finite, not {item!r}")
        c += 0.0
        if c not in out:
            out.append(c)
    return tuple(out)


def _parse_int(name: str, value: Any, lo: int, hi: int) -> int:
    try:
        n = int(value)
        if n != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise SearchSpaceError(f"{name} must be an integer, not {value!r}") from None
    if not lo <= n <= hi:
        raise SearchSpaceError(f"{name} must be between {lo} and {hi}, not {n}")
    return n


@dataclass(frozen=True)
class SearchSpace:
    """Terminals, operators, constants, bounds and result type of a synthesis run (validated).

    Every field accepts the forms a person writes: ``operators="+,*,sum:hw"`` or a list,
    ``terminals="A,G"`` or ``{"A": "bkhw", "score": "bk"}``, ``constants="1,2"``,
    ``max_size="9"``. The normalised values are stored (``operators`` as :class:`OpSpec`).
    """

    terminals: Any = DEFAULT_TERMINAL_NAMES
    operators: Any = DEFAULT_OPERATORS
    constants: Any = DEFAULT_CONSTANTS
    max_size: Any = DEFAULT_MAX_SIZE
    max_depth: Any = DEFAULT_MAX_DEPTH
    result: str = DEFAULT_RESULT
    _min_size: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _min_depth: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _ctx: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        result = str(self.result).strip().replace("-", "_")
        if result not in RESULTS:
            raise UnknownNameError("result type", result, RESULTS,
                                   hint="weights {b,k}, weight_maps {b,k} or {b,k,h,w}, heatmap {b,h,w}")
        ops: list[OpSpec] = []
        for item in _split_list(self.operators):
            spec = parse_operator(item)
            if spec not in ops:
                ops.append(spec)
        if not ops:
            raise SearchSpaceError("the space has no operators")
        terms = _parse_terminals(self.terminals)
        if not terms:
            raise SearchSpaceError("the space has no terminals")
        consts = _parse_constants(self.constants)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("result", result)
        set_("operators", tuple(ops))
        set_("terminals", terms)
        set_("constants", consts)
        set_("max_size", _parse_int("max_size", self.max_size, 1, MAX_SIZE))
        set_("max_depth", _parse_int("max_depth", self.max_depth, 1, MAX_DEPTH))
        self._type_tables()
        self._check_possible()

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(cls) -> "SearchSpace":
        """Terminals A G G2 G3; + - * / relu abs sum:hw mean:hw max:hw; constants 1 2; weight maps;
        size <= 21, depth <= 12: contains every gradient seed (see :data:`GRADIENT_SEEDS`)."""
        return cls()

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "SearchSpace":
        """From a mapping of options (unknown keys are an error). ``{"space": {...}}`` is unwrapped."""
        if set(options) == {"space"} and isinstance(options["space"], Mapping):
            options = options["space"]
        clean = {str(k).replace("-", "_"): v for k, v in options.items()}
        for key in clean:
            if key not in OPTIONS:
                raise UnknownNameError("search-space option", key, OPTIONS)
        return cls(**clean)

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        """From a ``.toml`` (``[space]`` table or top-level keys) or ``.json`` file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise SearchSpaceError(f"cannot read search space {path}: {err}") from None
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                data = tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as err:
            raise SearchSpaceError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: "
                                   f"{err}") from None
        if not isinstance(data, Mapping):
            raise SearchSpaceError(f"{path}: expected a table of options")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "SearchSpace":
        return SearchSpace.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain options (round-trips through :meth:`from_dict`, JSON and TOML)."""
        return {"result": self.result,
                "terminals": [n if n in TERMINALS and TERMINALS[n].axes == a else f"{n}:{a}"
                              for n, a in self.terminals],
                "operators": [str(o) for o in self.operators],
                "constants": list(self.constants),
                "max_size": self.max_size, "max_depth": self.max_depth}

    def describe(self) -> str:
        d = self.to_dict()
        return (f"{self.result} candidates of size <= {self.max_size}, depth <= {self.max_depth}; "
                f"terminals {', '.join(d['terminals'])}; operators {', '.join(d['operators'])}; "
                f"constants {', '.join(f'{c:g}' for c in self.constants) or 'none'}")

    # ------------------------------------------------------------------ types
    @property
    def terminal_axes(self) -> dict[str, str]:
        return dict(self.terminals)

    @property
    def result_axes(self) -> tuple[Axes, ...]:
        return RESULTS[self.result]

    @property
    def unary_ops(self) -> tuple[OpSpec, ...]:
        return tuple(o for o in self.operators if o.arity == 1)

    @property
    def binary_ops(self) -> tuple[OpSpec, ...]:
        return tuple(o for o in self.operators if o.arity == 2)

    @property
    def relu(self) -> bool:
        """Whether channel weights give relu(sum_k w A) (Grad-CAM's rectification) or the plain sum."""
        return self.result != "heatmap"

    @property
    def evidence_terms(self) -> set[str]:
        """Terminals the evidence must hold (the wrapper of weight spaces reads A)."""
        names = {n for n, _ in self.terminals}
        return names | ({"A"} if self.result != "heatmap" else set())

    def _type_tables(self) -> None:
        """Smallest size / depth of each reachable type, and the smallest context that turns a
        term of a type into a candidate (used to prune terms that can never be completed)."""
        size: dict[Axes, int] = {}
        depth: dict[Axes, int] = {}

        def relax(t: Axes, s: int, d: int) -> bool:
            changed = False
            if s < size.get(t, 10 ** 9):
                size[t], changed = s, True
            if d < depth.get(t, 10 ** 9):
                depth[t], changed = d, True
            return changed

        for _, axes in self.terminals:
            relax(frozenset(axes), 1, 1)
        if self.constants:
            relax(frozenset(), 1, 1)
        changed = True
        while changed:
            changed = False
            for t in list(size):
                for op in self.unary_ops:
                    r = op.result_axes(t)
                    if r is not None and t:
                        changed |= relax(r, size[t] + 1, depth[t] + 1)
                for op in self.binary_ops:
                    others = [frozenset()] if op.op.constant_operand else list(size)
                    for u in others:
                        if u not in size or (not t and not u):
                            continue
                        r = op.result_axes(t, u)
                        if r is not None and size[t] + size[u] + 1 <= MAX_SIZE:
                            changed |= relax(r, size[t] + size[u] + 1, max(depth[t], depth[u]) + 1)
        object.__setattr__(self, "_min_size", size)
        object.__setattr__(self, "_min_depth", depth)
        # context: extra nodes to turn a type-t term into a candidate
        ctx: dict[Axes, int] = {r: 0 for r in self.result_axes if r in size}
        changed = True
        while changed:
            changed = False
            for t in size:
                best = ctx.get(t, 10 ** 9)
                for op in self.unary_ops:
                    r = op.result_axes(t)
                    if r is not None and r in ctx and t:
                        best = min(best, 1 + ctx[r])
                for op in self.binary_ops:
                    for u in ([frozenset()] if op.op.constant_operand else size):
                        r = op.result_axes(t, u)
                        if r is not None and r in ctx and (t or u):
                            best = min(best, 1 + size[u] + ctx[r])
                if best < ctx.get(t, 10 ** 9):
                    ctx[t], changed = best, True
        object.__setattr__(self, "_ctx", ctx)

    def min_size(self, axes: Axes) -> int | None:
        """Size of the smallest term with these axes, None if none can be built."""
        return self._min_size.get(frozenset(axes))

    def completion(self, axes: Axes) -> int | None:
        """Fewest extra nodes that turn a term with these axes into a candidate (None: never)."""
        return self._ctx.get(frozenset(axes))

    def useful(self, axes: Axes, size: int) -> bool:
        """Can a term of this type and size still end up inside a candidate within max_size?"""
        extra = self._ctx.get(axes)
        return extra is not None and size + extra <= self.max_size

    def _check_possible(self) -> None:
        sizes = [(r, self._min_size[r]) for r in self.result_axes if r in self._min_size]
        want = " or ".join(fmt_axes(r) for r in self.result_axes)
        if not sizes:
            raise SearchSpaceError(
                f"no {self.result} candidate (axes {want}) can be built from terminals "
                f"{', '.join(n for n, _ in self.terminals)} with operators {', '.join(map(str, self.operators))}"
                + ("; a weight result needs a reduction over hw (e.g. mean:hw)" if self.result == "weights" else "")
                + ("; a heatmap needs a reduction over k (e.g. sum:k)" if self.result == "heatmap" else ""))
        smallest = min(s for _, s in sizes)
        if smallest > self.max_size:
            raise SearchSpaceError(f"max_size {self.max_size} is too small: the smallest {self.result} candidate "
                                   f"(axes {want}) has {smallest} nodes")
        shallowest = min(self._min_depth[r] for r, _ in sizes)
        if shallowest > self.max_depth:
            raise SearchSpaceError(f"max_depth {self.max_depth} is too small: the shallowest {self.result} "
                                   f"candidate has depth {shallowest}")

    # ------------------------------------------------------------------ candidates <-> heatmaps
    def heatmap(self, candidate: Expr) -> Expr:
        """The heatmap expression of a candidate: relu(sum(W * A, k)) for weight spaces."""
        if self.result == "heatmap":
            return candidate
        return Call("relu", (Call("sum", (Call("mul", (candidate, Var("A"))),), "k"),))

    def candidate(self, expr: Expr) -> Expr:
        """The candidate inside a full CAM expression (e.g. a seed), i.e. the inverse of :meth:`heatmap`.

        For weight spaces ``relu(sum(W * A, k))`` / ``relu(sum(A * W, k))`` gives W, and a
        bare weight expression (axes {b, k}) is its own candidate. Raises
        :class:`SearchSpaceError` for an expression of another form.
        """
        if self.result == "heatmap":
            return expr
        if isinstance(expr, Call) and expr.op == "relu":
            inner = expr.args[0]
            if isinstance(inner, Call) and inner.op == "sum" and inner.axes == "k":
                prod = inner.args[0]
                if isinstance(prod, Call) and prod.op == "mul":
                    left, right = prod.args
                    if right == Var("A"):
                        return left
                    if left == Var("A"):
                        return right
        try:
            axes = infer(expr, self.terminal_axes | {"A": "bkhw"})[expr]
        except (ExpressionTypeError, UnknownNameError):
            axes = None
        if axes in self.result_axes:
            return expr
        raise SearchSpaceError(f"`{to_text(expr)}` is not of the form relu(sum(W * A, k)) that a "
                               f"{self.result} space searches")

    # ------------------------------------------------------------------ membership
    def why_not(self, candidate: Expr) -> str | None:
        """None if the candidate is a sentence of this space, else the first reason it is not."""

        if candidate.size > self.max_size:
            return f"size {candidate.size} > max_size {self.max_size}"
        if candidate.depth > self.max_depth:
            return f"depth {candidate.depth} > max_depth {self.max_depth}"
        names = self.terminal_axes
        ops = set(self.operators)
        for node in walk(candidate):
            if isinstance(node, Var):
                if node.name not in names:
                    return f"terminal {node.name} is not in the space"
            elif isinstance(node, Num):
                if node.value not in self.constants:
                    return f"constant {node.value:g} is not in the space"
            else:
                spec = OpSpec(node.op, node.axes)
                if spec not in ops:
                    return f"operator {spec} (in `{to_text(node)}`) is not in the space"
                if spec.op.constant_operand and not isinstance(node.args[1], Num):
                    return f"`{to_text(node)}`: the search builds {node.op} with a constant second operand only"
                if all(isinstance(a, Num) for a in node.args):
                    return f"`{to_text(node)}` is a constant expression (only the space's constants are used)"
        try:
            axes = infer(candidate, names)[candidate]
        except (ExpressionTypeError, UnknownNameError) as err:
            return str(err)
        if axes not in self.result_axes:
            return (f"axes {fmt_axes(axes)} are not a {self.result} candidate "
                    f"({' or '.join(fmt_axes(r) for r in self.result_axes)})")
        return None

    def contains(self, candidate: Expr) -> bool:
        return self.why_not(candidate) is None

    def seeds(self, names: Iterable[str] | None = None, exclude: Iterable[str | Expr] = ()) -> dict[str, Expr]:
        """Seed methods inside this space, as candidates: name -> candidate.

        ``names``: seed names to consider (default: :data:`GRADIENT_SEEDS` and :data:`HEATMAP_SEEDS`,
        those in the space). ``exclude``: seed
        names, or candidate expressions; a seed is dropped if it is excluded by name or if it
        contains an excluded expression as a sub-term (SSGrad-CAM++ contains Grad-CAM++'s weights).
        """
        drop_names, drop_exprs = set(), set()
        for e in exclude:
            if isinstance(e, str):
                seed = get_seed(e)
                drop_names.add(seed.name)
                try:
                    drop_exprs.add(self.candidate(seed.tree))
                except SearchSpaceError:
                    pass
            else:
                drop_exprs.add(e)
        out: dict[str, Expr] = {}
        for name in (GRADIENT_SEEDS + HEATMAP_SEEDS if names is None else names):
            seed = get_seed(name)
            if seed.name in drop_names:
                continue
            try:
                cand = self.candidate(seed.tree)
            except SearchSpaceError:
                continue
            if not self.contains(cand) or any(n in drop_exprs for n in walk(cand)):
                continue
            out[seed.name] = cand
        return out


def load_space(source: str | Path | Mapping[str, Any] | SearchSpace | None = None, **overrides: Any) -> SearchSpace:
    """A space from a file path, a mapping or a space, with keyword overrides; None = the default."""
    if source is None:
        base: dict[str, Any] = {}
    elif isinstance(source, SearchSpace):
        base = source.to_dict()
    elif isinstance(source, Mapping):
        base = dict(source.get("space", source)) if set(source) == {"space"} else dict(source)
    else:
        base = SearchSpace.load(source).to_dict()
    base.update({k.replace("-", "_"): v for k, v in overrides.items() if v is not None})
    return SearchSpace.from_dict(base)


def seed_candidates(space: SearchSpace, exclude: Sequence[str | Expr] = ()) -> dict[str, Expr]:
    """Shorthand for ``space.seeds(exclude=exclude)``."""
    return space.seeds(exclude=exclude)
