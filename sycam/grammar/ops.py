"""The operator catalogue: every function of the language, its arity and how it types.

Kinds:
  ``unary``       element-wise, one argument:       relu(x)
  ``binary``      element-wise, two arguments:      x + y, x ^ y
  ``reduce``      removes the named axes:           sum(x, hw)
  ``normalise``   keeps the axes, normalises along:  softmax(x, k)
  ``compare``     only inside ``where``:            where(G > 0, x, y)
  ``where``       element-wise choice
  ``project``     pc1(x): first principal component over channels, removes k
"""
from __future__ import annotations

from dataclasses import dataclass

#: Axes of evidence tensors, in storage order after the image axis b:
#: s input scale, v variation / noise sample, k channel, h and w space.
AXES = "svkhw"
#: The image axis: every terminal has it, no expression may reduce it.
BATCH = "b"


@dataclass(frozen=True)
class Op:
    name: str
    kind: str
    arity: int
    doc: str
    symbol: str = ""           # infix symbol for binary/compare operators
    neutral: float | None = None  # neutral element (for ablation: x op neutral == x)


_OPS = [
    Op("add", "binary", 2, "x + y", "+", 0.0),
    Op("sub", "binary", 2, "x - y", "-", 0.0),
    Op("mul", "binary", 2, "x * y", "*", 1.0),
    Op("div", "binary", 2, "x / y, and 0 where y is exactly 0", "/", 1.0),
    Op("pow", "binary", 2, "x ^ y, sign-preserving for non-integer y; 0 ^ -y = 0", "^", 1.0),
    Op("neg", "unary", 1, "-x"),
    Op("relu", "unary", 1, "max(x, 0)"),
    Op("abs", "unary", 1, "|x|"),
    Op("sign", "unary", 1, "-1, 0 or 1"),
    Op("exp", "unary", 1, "e^x, argument clipped at 80"),
    Op("log", "unary", 1, "log(x) for x > 0, log(2^-126) (about -87.3) for x <= 0"),
    Op("sqrt", "unary", 1, "sqrt(max(x, 0))"),
    Op("tanh", "unary", 1, "tanh(x)"),
    Op("sigmoid", "unary", 1, "1 / (1 + e^-x)"),
    Op("sum", "reduce", 1, "sum over the named axes"),
    Op("mean", "reduce", 1, "mean over the named axes"),
    Op("max", "reduce", 1, "maximum over the named axes"),
    Op("min", "reduce", 1, "minimum over the named axes"),
    Op("std", "reduce", 1, "standard deviation (population) over the named axes"),
    Op("softmax", "normalise", 1, "softmax along the named axes"),
    Op("norm", "normalise", 1, "min-max normalisation to [0,1] along the named axes"),
    Op("gt", "compare", 2, "x > y", ">"),
    Op("ge", "compare", 2, "x >= y", ">="),
    Op("lt", "compare", 2, "x < y", "<"),
    Op("le", "compare", 2, "x <= y", "<="),
    Op("eq", "compare", 2, "x == y", "=="),
    Op("ne", "compare", 2, "x != y", "!="),
    Op("where", "where", 3, "where(condition, x, y): x where the condition holds, else y"),
    Op("pc1", "project", 1, "projection on the first principal component over k (positions as samples)"),
]

OPS: dict[str, Op] = {op.name: op for op in _OPS}
#: Functions written as ``name(...)`` in the text (everything but infix operators and neg).
FUNCTIONS: dict[str, Op] = {op.name: op for op in _OPS
                            if op.kind in ("unary", "reduce", "normalise", "where", "project")
                            and op.name != "neg"}
BINARY_SYMBOLS: dict[str, str] = {op.symbol: op.name for op in _OPS if op.kind == "binary"}
COMPARE_SYMBOLS: dict[str, str] = {op.symbol: op.name for op in _OPS if op.kind == "compare"}
COMMUTATIVE = frozenset({"add", "mul"})


def canonical_axes(axes: str) -> str:
    """Axes in storage order, without repeats: 'wh' -> 'hw'."""
    return "".join(a for a in AXES if a in axes)
