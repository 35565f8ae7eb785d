"""The operators of the language: one record each, read by everything that needs one.

An :class:`Op` says how the operator is written (``syntax``, ``symbol``, ``precedence``),
how it types (``rule``: the axes of its result from its arguments' axes), what it computes
(``lower``, on tensors in the evidence layout or on folded float constants, see
:mod:`.semantics`), its algebra (``sympy``: the sympy form the simplifier and the canonical
form use; ``latex``), what it costs in an expression (``cost``), its ``neutral`` element
(what ablation replaces an operand by) and whether the search enumerates it. The parser,
checker, printer, sympy bridge, compiler, enumerator, evaluator and ablation all read these
records; nothing else knows an operator.

Adding an operator is one call, in any file::

    from sycam.grammar.ops import Op, ELEMENTWISE, register
    register(Op("softplus", 1, "log(1 + e^x)", ELEMENTWISE,
                lower=lambda args, dims: torch.nn.functional.softplus(args[0])))

after which ``softplus(G)`` parses, types, simplifies (as an uninterpreted function),
compiles, is enumerated by the search (if it is in the space's operators) and is accepted
by ``sycam check``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import semantics as sem

#: Axes of evidence tensors, in storage order after the image axis b:
#: s input scale, v variation / noise sample, k channel, h and w space.
AXES = "svkhw"
#: The image axis: every terminal has it, no expression may reduce it.
BATCH = "b"

Axes = frozenset[str]
#: lower(arguments, dims) -> value; ``dims`` are the layout positions of the axes it acts on.
Lowering = Callable[[Sequence[Any], tuple[int, ...]], Any]


class AxesError(ValueError):
    """Arguments whose axes an operator cannot take; the checker names the sub-expression."""


@dataclass(frozen=True)
class Rule:
    """How an operator types.

    ``elementwise``: the result has the union of the arguments' axes (broadcasting), and the
    operator maps stacked candidates as they are. Otherwise it acts along axes: the ones written
    in the call (``takes_axes``, e.g. ``sum(x, hw)``) or its ``fixed_axes`` (pc1: k, h, w), which
    the argument must have; ``removes`` are dropped from the result (all the written axes for a
    reduction, none for a normalisation, k for pc1).
    """

    name: str
    elementwise: bool = False
    takes_axes: bool = False
    fixed_axes: str = ""
    removes: str | None = None        # None: the axes it acts on

    def acts_on(self, axes: str) -> str:
        return axes if self.takes_axes else self.fixed_axes

    def result(self, args: Sequence[Axes], axes: str = "") -> Axes:
        """The result's axes; AxesError (with the reason) where the arguments cannot be taken."""
        if self.elementwise:
            return frozenset().union(*args)
        (t,) = args
        need = frozenset(self.acts_on(axes))
        missing = need - t
        if missing:
            raise AxesError(f"has axes {fmt_axes(t)}, so it cannot be taken over {fmt_axes(missing)}"
                            if self.takes_axes else
                            f"has axes {fmt_axes(t)}, but it needs {fmt_axes(need)}")
        removed = need if self.removes is None else frozenset(self.removes)
        return t - removed


ELEMENTWISE = Rule("element-wise", elementwise=True)
REDUCE = Rule("reduce", takes_axes=True)
NORMALISE = Rule("normalise", takes_axes=True, removes="")
PROJECT = Rule("project on channels", fixed_axes="khw", removes="k")


@dataclass(frozen=True)
class Resample(Rule):
    """``resize(x, like)``: the axes of ``x``, on the spatial grid of ``like``; both need h and w."""

    def result(self, args: Sequence[Axes], axes: str = "") -> Axes:
        x, like = args
        grid = frozenset(self.fixed_axes)
        if not grid <= x:
            raise AxesError(f"has axes {fmt_axes(x)}: no grid {fmt_axes(grid)} to resample")
        if not grid <= like:
            raise AxesError(f"would be resampled to the grid of a value with axes {fmt_axes(like)}, "
                            f"which has no {fmt_axes(grid)}")
        return x


RESAMPLE = Resample("resample", fixed_axes="hw", removes="")


def fmt_axes(axes: Axes) -> str:
    order = BATCH + AXES
    return "{" + ", ".join(a for a in order if a in axes) + "}"


@dataclass(frozen=True)
class Op:
    """One operator. ``arity`` counts operands (the axes of ``sum(x, hw)`` are not one).

    syntax: ``call`` name(args), ``infix`` x symbol y (``precedence``: higher binds tighter),
    ``prefix`` -x, ``comparison`` x > y (only as the condition of a ``choice``), ``choice``
    where(condition, x, y). ``sympy``: one of the sympy bridge's forms (:class:`SympyForm`), or a
    builder ``(argument forms, axes) -> sympy expression``; None makes an uninterpreted function
    (sound: it knows no identity). ``latex``: a
    %-template of the arguments (and ``axes``) for call-syntax operators without a sympy
    printer of their own. ``divides_by_zero``: given the folded constants of the arguments
    (None where not constant), whether this application divides by a constant zero (refused
    at compile time). ``prepare``: (operand index, transform) pairs applied before ``lower``
    (see :meth:`compute`). ``constant_operand``: the search builds it only with a constant second
    operand (x ^ c). ``cost``: its weight in an expression's complexity (``ast.complexity``, the
    search's "size" objective).
    """

    name: str
    arity: int
    doc: str
    rule: Rule
    lower: Lowering
    syntax: str = "call"
    symbol: str = ""
    precedence: int = 0
    right_associative: bool = False
    sympy: SympyForm | Callable[..., Any] | None = None
    latex: str = ""
    neutral: float | None = None
    commutative: bool = False
    constant_operand: bool = False
    divides_by_zero: Callable[[Sequence[float | None]], bool] | None = None
    prepare: tuple[tuple[int, Callable[[Any], Any]], ...] = ()
    enumerable: bool = True
    cost: float = 1.0

    def compute(self, args: Sequence[Any], dims: tuple[int, ...]) -> Any:
        """The value of this operator on evaluated arguments: ``prepare`` (operand transforms, e.g.
        the divisor's zeros made infinite, which an interpreter may keep for reuse), then ``lower``."""
        if self.prepare:
            args = list(args)
            for i, transform in self.prepare:
                args[i] = transform(args[i])
        return self.lower(args, dims)

    @property
    def folds(self) -> bool:
        """Whether an application to constants is a constant (folded at compile time)."""
        return self.rule.elementwise and self.syntax not in ("comparison", "choice")


@dataclass(frozen=True)
class SympyForm:
    """A sympy form of :mod:`sycam.grammar.symbolic`, by name (``FORMS`` there): ``arithmetic``,
    ``power``, ``function``, ``along``, ``comparison`` or ``choice``, for the operator ``op``.
    Named, not imported: sympy costs half a second of start-up that parsing, typing and printing
    do not need."""

    form: str
    op: str = ""


def _elementwise(fn: Callable[..., Any]) -> Lowering:
    return lambda args, dims: fn(*args)


def _along(fn: Callable[..., Any]) -> Lowering:
    return lambda args, dims: fn(args[0], dims)


def _kernel_projection(kernel: str) -> Lowering:
    """The lowering of kpc1_<kernel>: kernel PCA with positions (h, w) as samples, channels as features."""
    def lower(args: Sequence[Any], dims: tuple[int, ...]) -> Any:
        k, h, w = dims
        return sem.kernel_first_component(args[0], k, h, w, kernel)
    return lower


def _compare(name: str, symbol: str, fn: Callable[[Any, Any], Any]) -> Op:
    return Op(name, 2, f"x {symbol} y", ELEMENTWISE, _elementwise(fn), syntax="comparison", symbol=symbol,
              enumerable=False, sympy=SympyForm("comparison", name))


def _reduce(name: str, doc: str, fn: Callable[..., Any], latex: str) -> Op:
    return Op(name, 1, doc, REDUCE, _along(fn), sympy=SympyForm("along", name), latex=latex)


OPS: dict[str, Op] = {}
#: Functions written ``name(...)``.
FUNCTIONS: dict[str, Op] = {}
#: Infix symbol -> operator name, for arithmetic and comparisons.
BINARY_SYMBOLS: dict[str, str] = {}
COMPARE_SYMBOLS: dict[str, str] = {}


def register(op: Op) -> Op:
    """Add an operator to the language (every part of sycam reads it from here)."""
    if op.name in OPS:
        raise ValueError(f"operator {op.name!r} exists already")
    if op.syntax == "infix" or op.syntax == "prefix":
        raise ValueError("infix and prefix operators are fixed by the grammar (cam.lark); "
                         "a new operator is written as a call, name(args)")
    _add(op)
    return op


def unregister(name: str) -> None:
    """Remove an operator added with :func:`register`."""
    OPS.pop(name)
    FUNCTIONS.pop(name, None)


def _add(op: Op) -> None:
    OPS[op.name] = op
    if op.syntax in ("call", "choice"):
        FUNCTIONS[op.name] = op
    elif op.syntax == "infix":
        BINARY_SYMBOLS[op.symbol] = op.name
    elif op.syntax == "comparison":
        COMPARE_SYMBOLS[op.symbol] = op.name


def _zero_divisor(args: Sequence[float | None]) -> bool:
    return args[1] == 0.0


def _zero_to_negative_power(args: Sequence[float | None]) -> bool:
    return args[0] == 0.0 and args[1] is not None and args[1] < 0


for _op in [
    Op("add", 2, "x + y", ELEMENTWISE, _elementwise(lambda x, y: x + y), syntax="infix", symbol="+",
       precedence=1, sympy=SympyForm("arithmetic", "add"), neutral=0.0, commutative=True),
    Op("sub", 2, "x - y", ELEMENTWISE, _elementwise(lambda x, y: x - y), syntax="infix", symbol="-",
       precedence=1, sympy=SympyForm("arithmetic", "sub"), neutral=0.0),
    Op("mul", 2, "x * y", ELEMENTWISE, _elementwise(lambda x, y: x * y), syntax="infix", symbol="*",
       precedence=2, sympy=SympyForm("arithmetic", "mul"), neutral=1.0, commutative=True),
    Op("div", 2, "x / y, and 0 where y is exactly 0", ELEMENTWISE, _elementwise(lambda x, y: x / y),
       prepare=((1, sem.safe_denominator),), syntax="infix", symbol="/", precedence=2,
       sympy=SympyForm("arithmetic", "div"), neutral=1.0, divides_by_zero=_zero_divisor),
    Op("pow", 2, "x ^ y, sign-preserving for non-integer y; 0 ^ -y = 0", ELEMENTWISE, _elementwise(sem.safe_pow),
       syntax="infix", symbol="^", precedence=4, right_associative=True, sympy=SympyForm("power"), neutral=1.0,
       constant_operand=True, divides_by_zero=_zero_to_negative_power),
    Op("neg", 1, "-x", ELEMENTWISE, _elementwise(lambda x: -x), syntax="prefix", symbol="-", precedence=3,
       sympy=SympyForm("arithmetic", "neg")),
    Op("relu", 1, "max(x, 0)", ELEMENTWISE, _elementwise(sem.relu), sympy=SympyForm("function", "relu"),
       latex=r"\operatorname{ReLU}\left(%(0)s\right)"),
    Op("abs", 1, "|x|", ELEMENTWISE, _elementwise(abs), sympy=SympyForm("function", "abs")),
    Op("sign", 1, "-1, 0 or 1", ELEMENTWISE, _elementwise(sem.sign), sympy=SympyForm("function", "sign")),
    Op("exp", 1, "e^x, argument clipped at 80", ELEMENTWISE, _elementwise(sem.safe_exp),
       sympy=SympyForm("function", "exp")),
    Op("log", 1, "log(x) for x > 0, log(2^-126) (about -87.3) for x <= 0", ELEMENTWISE, _elementwise(sem.safe_log),
       sympy=SympyForm("function", "log"), latex=r"\log\left(%(0)s\right)"),
    Op("sqrt", 1, "sqrt(max(x, 0))", ELEMENTWISE, _elementwise(sem.safe_sqrt), sympy=SympyForm("function", "sqrt"),
       latex=r"\sqrt{%(0)s}"),
    Op("tanh", 1, "tanh(x)", ELEMENTWISE, _elementwise(sem.tanh), sympy=SympyForm("function", "tanh")),
    Op("sigmoid", 1, "1 / (1 + e^-x)", ELEMENTWISE, _elementwise(sem.sigmoid), sympy=SympyForm("function", "sigmoid"),
       latex=r"\sigma\left(%(0)s\right)"),
    _reduce("sum", "sum over the named axes", sem.reduce_sum,
            r"\sum_{%(axes)s} %(0)s"),
    _reduce("mean", "mean over the named axes", sem.reduce_mean,
            r"\operatorname{mean}_{%(axes)s}\left(%(0)s\right)"),
    _reduce("max", "maximum over the named axes", sem.reduce_max,
            r"\max_{%(axes)s}\left(%(0)s\right)"),
    _reduce("min", "minimum over the named axes", sem.reduce_min,
            r"\min_{%(axes)s}\left(%(0)s\right)"),
    _reduce("std", "standard deviation (population) over the named axes", sem.reduce_std,
            r"\operatorname{std}_{%(axes)s}\left(%(0)s\right)"),
    Op("softmax", 1, "softmax along the named axes", NORMALISE, _along(sem.softmax),
       sympy=SympyForm("along", "softmax"), latex=r"\operatorname{softmax}_{%(axes)s}\left(%(0)s\right)"),
    Op("norm", 1, "min-max normalisation to [0,1] along the named axes", NORMALISE, _along(sem.minmax),
       sympy=SympyForm("along", "norm"), latex=r"\operatorname{norm}_{%(axes)s}\left(%(0)s\right)"),
    _compare("gt", ">", lambda x, y: x > y),
    _compare("ge", ">=", lambda x, y: x >= y),
    _compare("lt", "<", lambda x, y: x < y),
    _compare("le", "<=", lambda x, y: x <= y),
    _compare("eq", "==", lambda x, y: x == y),
    _compare("ne", "!=", lambda x, y: x != y),
    Op("where", 3, "where(condition, x, y): x where the condition holds, else y", ELEMENTWISE,
       _elementwise(sem.where), syntax="choice", enumerable=False, sympy=SympyForm("choice")),
    Op("pc1", 1, "projection on the first principal component over k (positions as samples)", PROJECT,
       lambda args, dims: sem.first_component(args[0], *dims), sympy=SympyForm("function", "pc1"),
       latex=r"\operatorname{PC}_1\left(%(0)s\right)"),
    *(Op(f"kpc1_{kernel}", 1, f"projection on the first kernel principal component over k, {formula} "
         "(positions as samples, gamma = 1 / K; KPCA-CAM)", PROJECT,
         _kernel_projection(kernel),
         latex=r"\operatorname{KPC}_1^{\mathrm{%s}}\left(%%(0)s\right)" % kernel)
      for kernel, formula in (("rbf", "RBF kernel exp(-gamma |x_i - x_j|^2)"),
                              ("sigmoid", "sigmoid kernel tanh(gamma x_i . x_j + 1)"))),
    Op("resize", 2, "resize(x, like): x bilinearly resampled to the grid (h, w) of like, e.g. a layer's map "
       "on the input's grid", RESAMPLE, _elementwise(sem.resize), enumerable=False,
       latex=r"\operatorname{Up}_{%(1)s}\left(%(0)s\right)"),
]:
    _add(_op)
del _op


def canonical_axes(axes: str) -> str:
    """Axes in storage order, without repeats: 'wh' -> 'hw'."""
    return "".join(a for a in AXES if a in axes)
