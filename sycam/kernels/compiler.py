"""Expression trees -> torch.

A :class:`Program` is a schedule of operator applications over the evidence terminals:
every distinct sub-expression of its roots appears once (structural sharing gives common
sub-expression elimination for free), constant sub-trees are folded at compile time, and
running it is a flat loop of torch calls on the terminals' device. Several expressions
compiled together share their common parts. ``torch.compile`` can fuse the loop for an
expression evaluated many times.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ExpressionValueError
from ..grammar.ast import CONSTANT_MAX, Call, Expr, Num, Var, compile_time_checks, walk
from ..grammar.checker import TerminalAxes, infer
from ..grammar.ops import OPS
from ..grammar.printer import to_text
from . import numerics as nx
from .layout import DIMS, ORDER, dims, from_layout

Value = Tensor | float


def apply_op(node: Call, args: Sequence[Value]) -> Value:
    """One operator on its evaluated arguments (all in the 6-D layout, or floats)."""
    op = node.op
    kind = OPS[op].kind
    if kind == "binary":
        return nx.BINARY[op](*args)
    if kind == "unary":
        return nx.UNARY[op](args[0])
    if kind == "reduce":
        return nx.reduce(op, args[0], dims(node.axes))
    if kind == "normalise":
        return nx.normalise(op, args[0], dims(node.axes))
    if kind == "compare":
        return nx.COMPARE[op](*args)
    if kind == "where":
        cond, x, y = args
        if not isinstance(cond, Tensor):       # a comparison of two constants: pick the branch
            if not isinstance(x, Tensor) and not isinstance(y, Tensor):
                return x if cond else y
            ref = x if isinstance(x, Tensor) else y
            cond = torch.tensor(bool(cond), device=ref.device)   # broadcast to the branches' axes
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            x = torch.tensor(x, dtype=torch.get_default_dtype(), device=cond.device)
        return torch.where(cond, x, y)
    if kind == "project":
        return nx.first_component(args[0], DIMS["k"], DIMS["h"], DIMS["w"])
    raise ValueError(f"no lowering for {op}")


def _fold_constants(expr: Expr) -> dict[Expr, float]:
    """Value of every sub-tree that reads no terminal.

    Raises ExpressionValueError for a constant sub-expression outside the float32 range and
    for a division by a constant zero (``A / 0``, ``A * 0 ^ -1``): the x / 0 = 0 rule is for
    evidence that happens to be zero, not for a constant written as a denominator.
    """
    const: dict[Expr, float] = {n: n.value for n in walk(expr) if isinstance(n, Num)}
    for node, folds in compile_time_checks(expr):
        if node.op == "div" and const.get(node.args[1], 1.0) == 0.0 \
                or node.op == "pow" and const.get(node.args[0], 1.0) == 0.0 and const.get(node.args[1], 0.0) < 0:
            raise ExpressionValueError(f"division by zero: `{to_text(node)}` divides by the constant 0",
                                       subexpression=to_text(node))
        if folds:
            value = float(apply_op(node, [const[a] for a in node.args]))
            if not abs(value) <= CONSTANT_MAX:
                raise ExpressionValueError(
                    f"the constant `{to_text(node)}` is {value:.4g}, outside the float32 range "
                    f"(|c| <= {CONSTANT_MAX:.4g}) the evidence is computed in", subexpression=to_text(node))
            const[node] = value
    return const


@dataclass
class _Step:
    slot: int
    node: Call
    args: tuple[int, ...]


class Program:
    """Compiled form of one or more expressions over named terminals.

    ``program(terminals)`` takes a mapping name -> tensor in the 6-D layout and returns one
    tensor per root, reshaped to the root's axes (e.g. (b, h, w) for a heatmap).
    """

    def __init__(self, roots: Sequence[Expr], terminals: TerminalAxes):
        self.roots = list(roots)
        self.types = {}
        const: dict[Expr, float] = {}
        for r in self.roots:
            self.types.update(infer(r, terminals))
            const.update(_fold_constants(r))
        slots: dict[Expr, int] = {}
        self.inputs: list[tuple[int, str]] = []        # (slot, terminal name)
        self.constants: list[tuple[int, float]] = []   # (slot, value)
        self.steps: list[_Step] = []
        for root in self.roots:
            for node in walk(root):
                if node in slots:
                    continue
                slot = slots[node] = len(slots)
                if node in const:
                    self.constants.append((slot, const[node]))
                elif isinstance(node, Var):
                    self.inputs.append((slot, node.name))
                else:
                    self.steps.append(_Step(slot, node, tuple(slots[a] for a in node.args)))
        self.outputs = [slots[r] for r in self.roots]
        self.n_slots = len(slots)
        self.needs = sorted({name for _, name in self.inputs})
        self._fn: Callable[..., list[Value]] = self._run

    def _run(self, *tensors: Tensor) -> list[Value]:
        values: list[Value] = [0.0] * self.n_slots
        for (slot, _), t in zip(self.inputs, tensors):
            values[slot] = t
        for slot, c in self.constants:
            values[slot] = c
        for step in self.steps:
            values[step.slot] = apply_op(step.node, [values[a] for a in step.args])
        return [values[o] for o in self.outputs]

    def compile(self, **options) -> "Program":
        """Fuse the schedule with ``torch.compile`` (worth it for an expression run many times)."""
        self._fn = torch.compile(self._run, **options)
        return self

    def __call__(self, terminals: Mapping[str, Tensor]) -> list[Tensor]:
        missing = [name for name in self.needs if name not in terminals]
        if missing:
            raise KeyError(f"evidence lacks {missing}")
        outs = self._fn(*(terminals[name] for _, name in self.inputs))
        results = []
        for root, value in zip(self.roots, outs):
            axes = "".join(a for a in ORDER if a in self.types[root])
            if not isinstance(value, Tensor):   # a constant expression
                ref = terminals[self.needs[0]] if self.needs else torch.zeros(())
                value = torch.full((1,) * len(ORDER), value, dtype=ref.dtype, device=ref.device)
            results.append(from_layout(value, axes))
        return results


def compile_expression(expr: Expr | Sequence[Expr], terminals: TerminalAxes) -> Program:
    roots = [expr] if isinstance(expr, (Var, Num, Call)) else list(expr)
    return Program(roots, terminals)


def evaluate(expr: Expr, values: Mapping[str, Tensor], terminals: TerminalAxes) -> Tensor:
    """Compile and run one expression once."""
    return compile_expression(expr, terminals)(values)[0]
