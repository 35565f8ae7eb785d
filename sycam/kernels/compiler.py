"""Expression trees -> torch: the one interpreter of the language.

:func:`apply_op` is where every operator is computed (from its record in
``sycam.grammar.ops``), :func:`interpret` evaluates a tree children first through it (the
search's memo is a cache around it), and a :class:`Program` is a schedule of operator
applications over the evidence terminals: every distinct sub-expression of its roots appears
once (structural sharing gives common sub-expression elimination for free), constant sub-trees
are folded at compile time, and running it is a flat loop of torch calls on the terminals'
device. Several expressions compiled together share their common parts. ``torch.compile`` can
fuse the loop for an expression evaluated many times.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ExpressionTypeError
from ..grammar.ast import Call, Expr, Num, Var, walk
from ..grammar.checker import TerminalAxes, fold_constants, infer
from ..grammar.ops import OPS
from ..grammar.printer import to_text
from .layout import ORDER, dims, from_layout

Value = Tensor | float


def apply_op(node: Call, args: Sequence[Value], *, prepared: bool = False) -> Value:
    """One operator on its evaluated arguments (all in the 6-D layout, or floats), as its record
    computes it; ``prepared``: the record's operand transforms were applied by the caller."""
    op = OPS[node.op]
    if prepared:
        return lowering(node)(args)
    axes = dims(op.rule.acts_on(node.axes))
    try:
        return op.compute(args, axes)
    except RuntimeError:
        _check_grids(node, args)
        raise


def lowering(node: Call) -> Callable[[Sequence[Value]], Value]:
    """``apply_op(node, args, prepared=True)`` as a function of ``args``, with the record looked up
    once: what a loop applying one node to many operand sets (row blocks, layers) calls."""
    op = OPS[node.op]
    lower = op.lower
    axes = dims(op.rule.acts_on(node.axes))

    def apply(args: Sequence[Value]) -> Value:
        try:
            return lower(args, axes)
        except RuntimeError:
            _check_grids(node, args)
            raise
    return apply


def _check_grids(node: Call, args: Sequence[Value]) -> None:
    """ExpressionTypeError naming ``node`` if its operands' sizes do not broadcast: well-typed, but
    on different grids (a layer's terminal with one at the input's resolution, say)."""
    shapes = [tuple(a.shape) for a in args if isinstance(a, Tensor)]
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        sizes = "; ".join(", ".join(f"{a}={n}" for a, n in zip(ORDER, s) if n > 1) or "scalar" for s in shapes)
        raise ExpressionTypeError(
            f"`{to_text(node)}` combines values of different sizes ({sizes}): a layer's terminals and "
            "terminals at the input's resolution (whose k is the colour channel) meet only through "
            "resize(x, like), which resamples x to the grid of like",
            subexpression=to_text(node)) from None


def _operand(node: Call, i: int, value: Callable[[Expr], Any]) -> Any:
    return value(node.args[i])


def interpret(expr: Expr, leaf: Callable[[Var | Num], Any], *,
              apply: Callable[[Call, list[Any]], Any] = apply_op,
              known: Callable[[Call], Any] | None = None,
              keep: Callable[[Call, Any], None] | None = None,
              operand: Callable[[Call, int, Callable[[Expr], Any]], Any] = _operand) -> Any:
    """The value of ``expr``: leaves from ``leaf``, operators through ``apply`` (``apply_op``, or a
    caller's lifting of it, e.g. over several layers), children first. ``known(node)`` returns a
    value kept earlier (None if none; the node's sub-tree is then not visited) and ``keep`` is
    told every value computed: with both, the interpreter is memoised across calls.
    ``operand(node, i, value)`` gives the node's i-th argument (default: ``value(node.args[i])``);
    a memo that keeps prepared operands (see ``Op.prepare``) answers from them without
    evaluating the argument again."""
    def value(node: Expr) -> Any:
        if not isinstance(node, Call):
            return leaf(node)
        if known is not None:
            hit = known(node)
            if hit is not None:
                return hit
        out = apply(node, [operand(node, i, value) for i in range(len(node.args))])
        if keep is not None:
            keep(node, out)
        return out
    return value(expr)


@dataclass
class _Step:
    slot: int
    node: Call
    args: tuple[int, ...]


class Program:
    """Compiled form of one or more expressions over named terminals: the steps :func:`interpret`
    would take, scheduled once (shared sub-expressions once, constants folded) to run many times.

    ``program(terminals)`` takes a mapping name -> tensor in the 6-D layout and returns one
    tensor per root, reshaped to the root's axes (e.g. (b, h, w) for a heatmap).
    """

    def __init__(self, roots: Sequence[Expr], terminals: TerminalAxes):
        self.roots = list(roots)
        self.types = {}
        const: dict[Expr, float] = {}
        for r in self.roots:
            self.types.update(infer(r, terminals))
            const.update(fold_constants(r))
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
                elif isinstance(node, Call):
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
