"""Axis typing: the type of an expression is the set of named axes it still carries.

Terminals carry the axes of the evidence they read (``A``: b k h w), constants carry
none, element-wise operators broadcast (union of axes), reductions remove the axes they
name and may only name axes their operand has. A finished CAM is either a **heatmap**
(axes exactly b h w) or **channel weights** (axes exactly b k, turned into a heatmap as
relu(sum(w * A, k)), the generic CAM of the papers).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ExpressionTypeError, ExpressionValueError, UnknownNameError
from .ast import CONSTANT_MAX, Call, Expr, Num, Var, walk
from .ops import AXES, OPS, AxesError, fmt_axes
from .printer import to_text

Axes = frozenset[str]
HEATMAP: Axes = frozenset("bhw")
WEIGHTS: Axes = frozenset("bk")


@dataclass(frozen=True)
class Terminal:
    """A name the language reads from the evidence."""

    name: str
    axes: str
    doc: str
    cost: str = "none"   # model passes needed beyond the forward that gives A and S


DEFAULT_TERMINALS: dict[str, Terminal] = {t.name: t for t in [
    Terminal("A", "bkhw", "activations of the layer"),
    Terminal("G", "bkhw", "gradient dS/dA of the target score", "1 backward"),
    Terminal("G2", "bkhw", "Grad-CAM++ closed form G^2 (= d2 e^S/dA2 / e^S for piecewise-linear heads)",
             "1 backward"),
    Terminal("G3", "bkhw", "Grad-CAM++ closed form G^3", "1 backward"),
    Terminal("H2", "bkhw", "true diagonal second derivative d2S/dA2 (autograd, opt-in)",
             "one Hessian-vector product per layer element, or N for an estimate"),
    Terminal("H3", "bkhw", "true diagonal third derivative d3S/dA3 (autograd, opt-in)",
             "per layer element"),
    Terminal("S", "b", "target score (e.g. the class logit)"),
    Terminal("W", "bk", "classifier weights dS/dz at the input z of a GAP + linear head (CAM)",
             "1 backward through the head"),
    Terminal("R", "bkhw", "LRP relevance of the target score at the layer's output (options lrp_rule, "
             "lrp_contrast; sycam.evidence.relevance)", "1 forward + 1 LRP backward to the layer"),
    # channel scores from perturbed inputs (sycam.evidence.providers)
    Terminal("score", "bk", "Score-CAM: the target on x * M_k, M_k = minmax(Up(A_k))", "K forwards"),
    Terminal("score_ss", "bk", "SS-CAM: Score-CAM averaged over N noisy masks (or inputs)", "N K forwards"),
    Terminal("score_is", "bk", "IS-CAM: Score-CAM averaged over N scaled masks (before its softmax)",
             "N K forwards"),
    Terminal("ablation", "bk", "Ablation-CAM: (y - y with channel k zeroed) / y", "K passes of the layers after"),
    Terminal("mi", "bk", "MI-CAM: mutual information of Up(A_k) and the grey image", "K histograms"),
    # evidence over input scales (CAMERAS) and noise samples (Smooth Grad-CAM++)
    Terminal("As", "bskhw", "activations at each input scale, resized to a common size", "R forwards + R backwards"),
    Terminal("Gs", "bskhw", "gradients at each input scale, resized to a common size", "R forwards + R backwards"),
    Terminal("keep", "bs", "1 where the scale's top-1 equals the top-1 on the original images", "R forwards"),
    Terminal("Av", "bvkhw", "activations of noisy copies x + N(0, sigma^2)", "N forwards + N backwards"),
    Terminal("Gv", "bvkhw", "gradients of noisy copies", "N forwards + N backwards"),
    Terminal("G2v", "bvkhw", "Gv^2 (Grad-CAM++ closed form per noise sample)", "N forwards + N backwards"),
    Terminal("G3v", "bvkhw", "Gv^3", "N forwards + N backwards"),
]}


def _terminal_axes(terminals: Mapping[str, Terminal | str]) -> dict[str, Axes]:
    return {k: frozenset(v.axes if isinstance(v, Terminal) else v) for k, v in terminals.items()}


def infer(expr: Expr, terminals: Mapping[str, Terminal | str] = DEFAULT_TERMINALS) -> dict[Expr, Axes]:
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


def check(expr: Expr, terminals: Mapping[str, Terminal | str] = DEFAULT_TERMINALS) -> Axes:
    """The axes of the whole expression."""
    return infer(expr, terminals)[expr]


def result_kind(expr: Expr, terminals: Mapping[str, Terminal | str] = DEFAULT_TERMINALS) -> str:
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




def as_heatmap(expr: Expr, terminals: Mapping[str, Terminal | str] = DEFAULT_TERMINALS) -> Expr:
    """A heatmap expression for ``expr``: itself, or relu(sum(w * A, k)) for channel weights w."""
    if result_kind(expr, terminals) == "heatmap":
        return expr
    return Call("relu", (Call("sum", (Call("mul", (expr, Var("A"))),), "k"),))


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
