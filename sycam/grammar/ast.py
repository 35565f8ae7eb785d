"""The expression tree: three immutable, hashable node types.

``Var(name)`` is a terminal (evidence such as ``A`` or ``G``), ``Num(value)`` a constant and
``Call(op, args, axes)`` an operator application; ``axes`` is set for reductions and
normalisations. Structural equality and hashing make shared sub-expressions free to find
(the compiler and the search key their caches on nodes). Each node caches its hash,
``size`` (number of nodes) and ``depth``.

Build trees with the helpers at the bottom (``add``, ``mul``, ``call`` ...): they fold
``-<number>`` into a negative constant, which is the form the parser produces, so that
``parse(to_text(e)) == e`` holds for every tree they build.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ExpressionValueError
from .ops import OPS, canonical_axes

#: Largest magnitude of a constant: the float32 range, in which the evidence is computed.
CONSTANT_MAX = 3.4028234663852886e38


@dataclass(frozen=True, eq=True)
class Var:
    name: str
    size: int = field(default=1, init=False, compare=False, repr=False)
    depth: int = field(default=1, init=False, compare=False, repr=False)
    children: tuple = field(default=(), init=False, compare=False, repr=False)

    def __hash__(self) -> int:
        return hash(("Var", self.name))


@dataclass(frozen=True, eq=True)
class Num:
    value: float
    size: int = field(default=1, init=False, compare=False, repr=False)
    depth: int = field(default=1, init=False, compare=False, repr=False)
    children: tuple = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self):
        value = float(self.value)
        if not math.isfinite(value) or abs(value) > CONSTANT_MAX:
            raise ExpressionValueError(f"constant {self.value!r} is outside the float32 range "
                                       f"(|c| <= {CONSTANT_MAX:.4g}) the evidence is computed in")
        object.__setattr__(self, "value", value + 0.0)  # -0.0 -> 0.0

    def __hash__(self) -> int:
        return hash(("Num", self.value))


@dataclass(frozen=True, eq=True)
class Call:
    op: str
    args: tuple["Expr", ...]
    axes: str = ""
    size: int = field(default=0, init=False, compare=False, repr=False)
    depth: int = field(default=0, init=False, compare=False, repr=False)
    _hash: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown operator {self.op!r}")
        args = tuple(self.args)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "axes", canonical_axes(self.axes))
        object.__setattr__(self, "size", 1 + sum(a.size for a in args))
        object.__setattr__(self, "depth", 1 + max((a.depth for a in args), default=0))
        object.__setattr__(self, "_hash", hash((self.op, args, self.axes)))

    @property
    def children(self) -> tuple["Expr", ...]:
        return self.args

    def __hash__(self) -> int:
        return self._hash


Expr = Var | Num | Call


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node once, children before parents (post-order, iterative, shared nodes once)."""
    seen: set[Expr] = set()
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if node in seen:
            continue
        if expanded or not node.children:
            seen.add(node)
            yield node
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.children))


def complexity(expr: Expr) -> float:
    """Nodes of the tree weighted by their operators' ``cost`` (leaves 1): the search's "size"
    objective. Every built-in operator costs 1, so for them it is ``expr.size``."""
    if not isinstance(expr, Call):
        return 1.0
    return OPS[expr.op].cost + sum(complexity(a) for a in expr.args)


def terminals(expr: Expr) -> set[str]:
    """Names of the terminals an expression reads."""
    return {n.name for n in walk(expr) if isinstance(n, Var)}


# --- builders (fold -number into a negative constant, like the parser) -------------------------

def call(op: str, *args: Expr, axes: str = "") -> Call | Num:
    if op == "neg" and isinstance(args[0], Num):
        return Num(-args[0].value)
    return Call(op, args, axes)


def add(x: Expr, y: Expr) -> Expr: return call("add", x, y)
def sub(x: Expr, y: Expr) -> Expr: return call("sub", x, y)
def mul(x: Expr, y: Expr) -> Expr: return call("mul", x, y)
def div(x: Expr, y: Expr) -> Expr: return call("div", x, y)
def pow_(x: Expr, y: Expr) -> Expr: return call("pow", x, y)
def neg(x: Expr) -> Expr: return call("neg", x)
