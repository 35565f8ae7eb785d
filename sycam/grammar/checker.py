"""Axis typing: the type of an expression is the set of named axes it still carries.

Terminals carry the axes of the evidence they read (``A``: b k h w; the caller passes them:
the grammar knows no terminal), constants carry none, element-wise operators broadcast (union
of axes), reductions remove the axes they name and may only name axes their operand has. A
finished CAM is either a **heatmap** (axes exactly b h w) or **channel weights** (axes exactly
b k, turned into a heatmap as relu(sum(w * A, k)), the generic CAM of the papers).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..errors import ExpressionTypeError, ExpressionValueError, UnknownNameError
from .ast import CONSTANT_MAX, Call, Expr, Num, Var, walk
from .ops import AXES, OPS, AxesError, fmt_axes
from .printer import to_text

Axes = frozenset[str]
HEATMAP: Axes = frozenset("bhw")
WEIGHTS: Axes = frozenset("bk")


class HasAxes(Protocol):
    @property
    def axes(self) -> str: ...


#: the terminals an expression may read: name -> axes, as a string or a record with ``.axes``
#: (the evidence's registry, ``sycam.evidence.terminals.TERMINALS``, is the usual one)
TerminalAxes = Mapping[str, HasAxes | str]


def _terminal_axes(terminals: TerminalAxes) -> dict[str, Axes]:
    return {k: frozenset(v if isinstance(v, str) else v.axes) for k, v in terminals.items()}


def infer(expr: Expr, terminals: TerminalAxes) -> dict[Expr, Axes]:
    """The axes of every sub-expression. Raises ExpressionTypeError / UnknownNameError."""
    env = _terminal_axes(terminals)
    types: dict[Expr, Axes] = {}
    for node in walk(expr):
        if isinstance(node, Num):
            types[node] = frozenset()
        elif isinstance(node, Var):
            if node.name not in env:
                raise UnknownNameError("terminal", node.name, env,
                                       hint="terminals are the evidence an expression reads")
            types[node] = env[node.name]
        else:
            types[node] = _call_type(node, [types[a] for a in node.args])
    return types


def _call_type(node: Call, arg_types: list[Axes]) -> Axes:
    try:
        return OPS[node.op].rule.result(arg_types, node.axes)
    except AxesError as e:
        written = f"{node.op}(..., {node.axes})" if node.axes else node.op
        raise ExpressionTypeError(f"{written} in `{to_text(node)}`: its argument `{to_text(node.args[0])}` {e}",
                                  subexpression=to_text(node)) from None


def check(expr: Expr, terminals: TerminalAxes) -> Axes:
    """The axes of the whole expression."""
    return infer(expr, terminals)[expr]


def result_kind(expr: Expr, terminals: TerminalAxes) -> str:
    """'heatmap' (axes b h w) or 'weights' (axes b k); anything else is a type error."""
    axes = check(expr, terminals)
    if axes == HEATMAP:
        return "heatmap"
    if axes == WEIGHTS:
        return "weights"
    extra = axes - HEATMAP
    hint = (f"reduce {''.join(a for a in AXES if a in extra)} (e.g. sum(..., {''.join(a for a in AXES if a in extra)}))"
            if extra and frozenset("hw") <= axes else
            "a CAM must end with axes {b, h, w} (a heatmap) or {b, k} (channel weights)")
    raise ExpressionTypeError(
        f"`{to_text(expr)}` has axes {fmt_axes(axes)}, which is neither a heatmap {{b, h, w}} nor "
        f"channel weights {{b, k}}: {hint}", subexpression=to_text(expr))




def as_heatmap(expr: Expr, terminals: TerminalAxes) -> Expr:
    """A heatmap expression for ``expr``: itself, or relu(sum(w * A, k)) for channel weights w."""
    if result_kind(expr, terminals) == "heatmap":
        return expr
    return Call("relu", (Call("sum", (Call("mul", (expr, Var("A"))),), "k"),))


def eigen_smooth(heatmap: Expr) -> Expr:
    """pytorch-grad-cam's ``eigen_smooth`` on a heatmap expression: its channel reduction, the
    outermost sum(X, k) or mean(X, k) (under one-argument element-wise operators such as relu),
    becomes pc1(X), X's projection on its first principal component over channels (positions as
    samples). For channel weights w, relu(sum(w * A, k)) becomes relu(pc1(w * A)): grad-cam
    projects the weighted activations w * A. A map already projected (pc1) is kept."""
    path: list[Call] = []           # the element-wise operators above the reduction, outermost first
    node = heatmap
    while isinstance(node, Call):
        if node.op == "pc1":
            return heatmap
        if node.op in ("sum", "mean") and node.axes == "k":
            out: Expr = Call("pc1", (node.args[0],))
            for above in reversed(path):
                out = Call(above.op, (out,), above.axes)
            return out
        op = OPS[node.op]
        if op.arity != 1 or not op.rule.elementwise:
            break
        path.append(node)
        node = node.args[0]
    raise ExpressionTypeError(
        f"eigen_smooth replaces a map's sum over channels, relu(sum(X, k)), by the projection pc1(X); "
        f"`{to_text(heatmap)}` has no sum(..., k) or mean(..., k) under its element-wise operators: write "
        "pc1(...) into the expression instead", subexpression=to_text(heatmap))


def fold_constants(expr: Expr) -> dict[Expr, float]:
    """The value of every sub-tree that reads no terminal (floats: no torch needed).

    Raises ExpressionValueError for a constant sub-expression outside the float32 range and
    for a division by a constant zero (``A / 0``, ``A * 0 ^ -1``: the operator record's
    ``divides_by_zero``): the x / 0 = 0 rule is for evidence that happens to be zero, not for
    a constant written as a denominator.
    """
    const: dict[Expr, float] = {}
    for node in walk(expr):
        if isinstance(node, Num):
            const[node] = node.value
        elif isinstance(node, Call):
            op = OPS[node.op]
            values = [const.get(a) for a in node.args]
            if op.divides_by_zero is not None and op.divides_by_zero(values):
                raise ExpressionValueError(f"division by zero: `{to_text(node)}` divides by the constant 0",
                                           subexpression=to_text(node))
            if op.folds and all(v is not None for v in values):
                value = float(op.compute(values, ()))
                if not abs(value) <= CONSTANT_MAX:
                    raise ExpressionValueError(
                        f"the constant `{to_text(node)}` is {value:.4g}, outside the float32 range "
                        f"(|c| <= {CONSTANT_MAX:.4g}) the evidence is computed in", subexpression=to_text(node))
                const[node] = value
    return const
