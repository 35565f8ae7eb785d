"""Axis typing: the type of an expression is the set of named axes it still carries.

Terminals carry the axes of the evidence they read (``A``: b k h w; the caller passes them:
the grammar knows no terminal), constants carry none, element-wise operators broadcast (union
of axes), reductions remove the axes they name and may only name axes their operand has. A finished CAM is either a **heatmap**
(axes exactly b h w) or **channel weights** (axes exactly b k, turned into a heatmap as
relu(sum(w * A, k)), the generic CAM of the papers).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..errors import ExpressionTypeError, UnknownNameError
from .ast import Call, Expr, Num, Var, walk
from .ops import AXES, BATCH, OPS

Axes = frozenset[str]
HEATMAP: Axes = frozenset("bhw")
WEIGHTS: Axes = frozenset("bk")


class HasAxes(Protocol):
    @property
    def axes(self) -> str: ...


#: the terminals an expression may read: name -> axes, as a string or a record with ``.axes``
#: (the evidence's registry, ``sycam.evidence.terminals.TERMINALS``, is the usual one)
TerminalAxes = Mapping[str, HasAxes | str]


def fmt_axes(axes: Axes) -> str:
    order = BATCH + AXES
    return "{" + ", ".join(a for a in order if a in axes) + "}"


def _terminal_axes(terminals: TerminalAxes) -> dict[str, Axes]:
    return {k: frozenset(v if isinstance(v, str) else v.axes) for k, v in terminals.items()}


def infer(expr: Expr, terminals: TerminalAxes) -> dict[Expr, Axes]:
    """The axes of every sub-expression. Raises ExpressionTypeError / UnknownNameError."""
    from .printer import to_text

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
            types[node] = _call_type(node, [types[a] for a in node.args], to_text)
    return types


def _call_type(node: Call, arg_types: list[Axes], to_text) -> Axes:
    op = OPS[node.op]
    if op.kind in ("reduce", "normalise"):
        (t,) = arg_types
        axes = frozenset(node.axes)
        missing = axes - t
        if missing:
            raise ExpressionTypeError(
                f"{node.op}(..., {node.axes}) in `{to_text(node)}`: its argument `{to_text(node.args[0])}` "
                f"has axes {fmt_axes(t)}, so it cannot be taken over {fmt_axes(missing)}",
                subexpression=to_text(node))
        return t - axes if op.kind == "reduce" else t
    if op.kind == "project":
        (t,) = arg_types
        if not frozenset("khw") <= t:
            raise ExpressionTypeError(
                f"pc1 in `{to_text(node)}` needs channels and positions (k, h, w); its argument has "
                f"axes {fmt_axes(t)}", subexpression=to_text(node))
        return t - {"k"}
    return frozenset().union(*arg_types)


def check(expr: Expr, terminals: TerminalAxes) -> Axes:
    """The axes of the whole expression."""
    return infer(expr, terminals)[expr]


def result_kind(expr: Expr, terminals: TerminalAxes) -> str:
    """'heatmap' (axes b h w) or 'weights' (axes b k); anything else is a type error."""
    from .printer import to_text

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
