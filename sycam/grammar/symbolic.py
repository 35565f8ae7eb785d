"""The sympy bridge: algebraic canonical form, simplification and LaTeX.

Element-wise arithmetic maps onto sympy's (commutative, associative, constants folded);
every other operator becomes an *uninterpreted* sympy function that knows only the
rewrites that are sound under the language's semantics, e.g. relu(c*x) = c*relu(x) for
c > 0, sum(c*x, hw) = c*sum(x, hw), norm(c*x + d, hw) = norm(x, hw) for c > 0. Functions
whose safe semantics differ from sympy's built-ins (log, sqrt, non-integer powers) are
kept uninterpreted so that sympy never applies an identity we do not honour.
Equivalences found here are exact except at the points where a denominator is exactly zero
(the language defines x / 0 = 0; sympy's x/x = 1 holds everywhere else).

sympy is bounded: integer powers above ``MAX_EXACT_POWER`` stay uninterpreted (no huge
integers are built), ``simplify`` (sympy's algebraic rewrites, not the whole of
sympy.simplify) gives up after ``SIMPLIFY_SECONDS`` and keeps the tree it
was given, and a sympy form the language cannot say (``zoo`` from a denominator that cancels
to zero, a ``Piecewise``) falls back to the original tree instead of failing.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from functools import lru_cache

import sympy

from .ast import CONSTANT_MAX, Call, Expr, Num, Var, call, terminals, walk
from .ops import OPS, SympyForm
from .printer import terminal_latex, to_text

#: Integer exponents up to this magnitude are exact sympy powers; larger ones stay uninterpreted.
MAX_EXACT_POWER = 64
#: Wall-clock bound of one ``simplify`` call (enforced on the main thread; elsewhere only the size bound).
SIMPLIFY_SECONDS = 2.0
_UNDEFINED = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)


class NotExpressible(ValueError):
    """A sympy form with no counterpart in the language (internal: callers fall back to the tree)."""


class _SycamFunction(sympy.Function):
    """Base of the language's uninterpreted functions; LaTeX from the operator's record."""

    op: str = ""
    axes: str = ""
    is_real = True

    def _tex(self, printer) -> str:
        template = OPS[self.op].latex or (r"\operatorname{%s}\left(%s\right)" % (
            self.op.replace("_", r"\_"), ", ".join(f"%({i})s" for i in range(len(self.args)))))
        args = {str(i): printer._print(a) for i, a in enumerate(self.args)}
        if r"\left(" not in template:      # e.g. \sum_{hw} x: a sum of terms needs parentheses
            args = {i: r"\left(%s\right)" % t if isinstance(a, sympy.Add) else t
                    for (i, t), a in zip(args.items(), self.args)}
        return template % {**args, "axes": ",".join(self.axes)}

    def _latex(self, printer, exp=None):
        """LaTeX of the call; sympy passes ``exp`` when the call is the base of a power."""
        tex = self._tex(printer)
        return tex if exp is None else r"\left(%s\right)^{%s}" % (tex, exp)


def _number(x) -> bool:
    return isinstance(x, sympy.Number)


def _split(x):
    """(numeric coefficient, rest) of a product."""
    return x.as_coeff_Mul()


class relu(_SycamFunction):
    op = "relu"

    @classmethod
    def eval(cls, x):
        if _number(x):
            return sympy.Max(x, 0)
        c, rest = _split(x)
        if c.is_positive and c != 1:
            return c * cls(rest)
        if isinstance(x, (relu, sympy.Abs, sympy.exp, sigmoid)):
            return x


class log(_SycamFunction):
    op = "log"

    @classmethod
    def eval(cls, x):
        if isinstance(x, sympy.exp):
            return x.args[0]
        if _number(x) and x.is_positive:
            return sympy.log(x)


class sqrt(_SycamFunction):
    op = "sqrt"

    @classmethod
    def eval(cls, x):
        if _number(x) and x.is_nonnegative:
            return sympy.sqrt(x)
        if isinstance(x, sympy.Pow) and x.exp == 2:
            return sympy.Abs(x.base)


class sigmoid(_SycamFunction):
    op = "sigmoid"


class spow(_SycamFunction):
    """x ^ y for a non-integer or symbolic exponent (sign-preserving in the language)."""

    op = "pow"

    def _tex(self, printer):
        return r"{\left(%s\right)}^{%s}" % (printer._print(self.args[0]), printer._print(self.args[1]))


class pc1(_SycamFunction):
    op = "pc1"

    @classmethod
    def eval(cls, x):
        c, rest = _split(x)
        if c != 1 and c != 0:
            return abs(c) * cls(rest)


class _Along(_SycamFunction):
    """Base of reductions / normalisations; subclasses are made per (op, axes)."""

    @classmethod
    def eval(cls, x):
        if cls.op == "norm":
            bare = scale_free(x)
            return cls(bare) if bare != x else None
        c, rest = _split(x)
        if c == 1 or c == 0 or rest == 1:
            return None
        if cls.op in ("sum", "mean"):
            return c * cls(rest)
        if cls.op in ("max", "min"):
            if c.is_positive:
                return c * cls(rest)
            return c * _along_class("min" if cls.op == "max" else "max", cls.axes)(rest)
        if cls.op == "std":
            return abs(c) * cls(rest)
        return None


@lru_cache(maxsize=None)
def _along_class(op: str, axes: str) -> type:
    """The sympy function class for ``op(x, axes)``."""
    return type(f"{op}_{axes}", (_Along,), {"op": op, "axes": axes})


@lru_cache(maxsize=None)
def _uninterpreted(op: str, axes: str) -> type:
    """An operator without algebra of its own (e.g. one a user registered): a function sympy
    knows nothing about, so no identity is ever applied to it."""
    return type(f"{op}_{axes}" if axes else op, (_SycamFunction,), {"op": op, "axes": axes})


class _Condition(tuple):
    """A comparison's sympy operands, with its operator: only ever the condition of a ``where``."""

    op: str


@lru_cache(maxsize=None)
def where_fn(compare: str) -> type:
    symbol = OPS[compare].symbol

    def _tex(self, printer):
        a, b, x, y = (printer._print(arg) for arg in self.args)
        return r"\begin{cases} %s & %s %s %s \\ %s & \text{otherwise} \end{cases}" % (
            x, a, symbol.replace("==", "=").replace("!=", r"\neq").replace(">=", r"\geq").replace("<=", r"\leq"), b, y)

    def eval(cls, a, b, x, y):
        """A comparison of two numbers is decided here (the branch it picks) when rounding cannot
        change it: sympy's constants are exact, the compiler's floats (0.1 + 0.2 != 0.3 there),
        so numbers within a relative 1e-9 of each other stay undecided."""
        if _number(a) and _number(b) and a.is_finite is True and b.is_finite is True \
                and abs(float(a) - float(b)) > 1e-9 * max(abs(float(a)), abs(float(b))):
            holds = {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b, "eq": a == b, "ne": a != b}[compare]
            return x if bool(holds) else y

    return type(f"where_{compare}", (_SycamFunction,),
                {"op": "where", "comparison": compare, "_tex": _tex, "eval": classmethod(eval)})
    # (not "compare": that would shadow sympy.Basic.compare, which sympy calls to order arguments)


# --- the sympy forms the operator records name (sycam.grammar.ops) --------------------------

_FUNCTIONS = {"abs": sympy.Abs, "sign": sympy.sign, "exp": sympy.exp, "tanh": sympy.tanh,
              "relu": relu, "log": log, "sqrt": sqrt, "sigmoid": sigmoid, "pc1": pc1}
_FUNCTION_OPS = {fn: name for name, fn in _FUNCTIONS.items()}


def arithmetic(args, axes, op: str) -> sympy.Expr:
    """sympy's own arithmetic: commutative, associative, constants folded."""
    if op == "neg":
        return -args[0]
    x, y = args
    return {"add": x + y, "sub": x - y, "mul": x * y}[op] if op != "div" else x / y


def power(args, axes, op: str) -> sympy.Expr:
    """An exact power for integer exponents up to MAX_EXACT_POWER, else uninterpreted (spow)."""
    base, exponent = args
    exact = isinstance(exponent, sympy.Integer) and abs(exponent) <= MAX_EXACT_POWER
    return base ** exponent if exact else spow(base, exponent)


def function(args, axes, op: str) -> sympy.Expr:
    return _FUNCTIONS[op](args[0])


def along(args, axes, op: str) -> sympy.Expr:
    return _along_class(op, axes)(args[0])


def comparison(args, axes, op: str) -> _Condition:
    condition = _Condition(args)
    condition.op = op
    return condition


def choice(args, axes, op: str) -> sympy.Expr:
    condition, x, y = args
    return where_fn(condition.op)(*condition, x, y)


#: the forms an operator record names (``sycam.grammar.ops.SympyForm``)
FORMS = {"arithmetic": arithmetic, "power": power, "function": function, "along": along,
         "comparison": comparison, "choice": choice}


def _constant(value: float) -> sympy.Expr:
    return sympy.Integer(int(value)) if value.is_integer() else sympy.Rational(repr(value))


def sympy_apply(node: Call, args: list) -> sympy.Expr:
    """The sympy form of ``node`` from its arguments' forms, as its operator's record says."""
    form = OPS[node.op].sympy
    if form is None:
        return _uninterpreted(node.op, node.axes)(*args)
    if isinstance(form, SympyForm):
        return FORMS[form.form](args, node.axes, form.op)
    return form(args, node.axes)


def sympy_leaf(expr: Var | Num) -> sympy.Expr:
    """A terminal becomes a real symbol, a constant an exact rational."""
    return sympy.Symbol(expr.name, real=True) if isinstance(expr, Var) else _constant(expr.value)


@lru_cache(maxsize=4096)
def to_sympy(expr: Expr) -> sympy.Expr:
    """The sympy form of an expression (terminals become real symbols)."""
    if isinstance(expr, (Var, Num)):
        return sympy_leaf(expr)
    return sympy_apply(expr, [to_sympy(a) for a in expr.args])


def from_sympy(s: sympy.Expr) -> Expr:
    """Back from sympy to the language (used to print simplified forms as expressions)."""
    if isinstance(s, sympy.Symbol):
        return Var(s.name)
    if s.is_number:   # a number, or a closed form such as log(2), E or sqrt(2): its float value
        value = _float(s)
        if value is None:
            raise NotExpressible(f"cannot express {s} in the language")
        return Num(value)
    if isinstance(s, sympy.Add):
        terms = sorted(s.args, key=lambda t: t.could_extract_minus_sign())  # positive terms first
        out = from_sympy(terms[0])
        for t in terms[1:]:
            out = call("sub", out, from_sympy(-t)) if t.could_extract_minus_sign() else call("add", out, from_sympy(t))
        return out
    if isinstance(s, sympy.Mul) or (isinstance(s, sympy.Pow) and s.exp.is_negative):
        coeff, rest = s.as_coeff_Mul()
        if coeff.is_negative:
            return call("neg", from_sympy(-s))
        num, den = sympy.fraction(s)
        top = _product(num)
        return top if den == 1 else call("div", top, _product(den))
    if isinstance(s, sympy.Pow):
        return call("pow", from_sympy(s.base), from_sympy(s.exp))
    if isinstance(s, sympy.Max) and len(s.args) == 2 and 0 in s.args:  # relu of a number folded
        other = [a for a in s.args if a != 0][0]
        return call("relu", from_sympy(other))
    if s.func in _FUNCTION_OPS:
        return call(_FUNCTION_OPS[s.func], from_sympy(s.args[0]))
    if getattr(s, "op", "") == "where":
        a, b, x, y = (from_sympy(arg) for arg in s.args)
        return Call("where", (Call(s.comparison, (a, b)), x, y))
    if isinstance(s, _SycamFunction) and s.op in OPS:     # spow, reductions, registered operators
        return Call(s.op, tuple(from_sympy(a) for a in s.args), s.axes)
    raise NotExpressible(f"cannot express {s} in the language")


def _product(s: sympy.Expr) -> Expr:
    if not isinstance(s, sympy.Mul):
        return from_sympy(s)
    coeff, rest = s.as_coeff_Mul()
    factors = ([sympy.Number(coeff)] if coeff != 1 else []) + list(sympy.Mul.make_args(rest))
    out = from_sympy(factors[0])
    for f in factors[1:]:
        out = call("mul", out, from_sympy(f))
    return out


def _float(s: sympy.Expr) -> float | None:
    """The float value of a closed-form sympy number, None if not a finite float32-range real."""
    try:
        value = complex(s)
    except (TypeError, ValueError, OverflowError):
        return None
    if value.imag != 0 or not math.isfinite(value.real) or abs(value.real) > CONSTANT_MAX:
        return None
    return value.real


class _Timeout(BaseException):
    """Raised by the alarm inside sympy (a BaseException, so no ``except Exception`` in sympy eats it)."""


@contextmanager
def _time_limit(seconds: float):
    """Raise _Timeout after ``seconds`` of wall time (main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(signum, frame):
        raise _Timeout

    outer_delay, _ = signal.getitimer(signal.ITIMER_REAL)
    if outer_delay and outer_delay <= seconds:   # an outer alarm (e.g. a test timeout) comes first: leave it
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:                          # restore the outer alarm, less the time spent here
            signal.setitimer(signal.ITIMER_REAL, max(outer_delay - (time.monotonic() - start), 1e-3))


def _expressible(s: sympy.Expr) -> Expr | None:
    """The language form of ``s``, or None where sympy's algebra left the language's semantics."""
    if s.has(*_UNDEFINED):
        return None
    try:
        return from_sympy(s)
    except NotExpressible:
        return None


_REWRITES = (sympy.cancel, lambda e: sympy.together(e, deep=True), sympy.powsimp, sympy.expand)


def _shortest(s: sympy.Expr) -> sympy.Expr:
    """The form with the fewest operations among sympy's algebraic rewrites (cancel, together,
    powsimp, expand, each also with common factors pulled out), applied inside every
    function's arguments first; sign(x) * |x| becomes x.

    The language's own choice of sympy.simplify's steps: its functions are uninterpreted, so
    the trigonometric, special-function and units passes of sympy.simplify have nothing to
    do (and the units module alone costs a quarter second to import).
    """
    s = s.replace(lambda e: isinstance(e, sympy.Function) and e.args, lambda e: e.func(*map(_shortest, e.args)))
    s = s.replace(lambda e: isinstance(e, sympy.Mul), _sign_times_abs)
    forms = [s] + [rewrite(s) for rewrite in _REWRITES]
    forms += [sympy.factor_terms(f, sign=False) for f in forms]
    return min(forms, key=sympy.count_ops)


def _sign_times_abs(m: sympy.Mul) -> sympy.Expr:
    """sign(x) * |x| * rest -> x * rest."""
    factors = list(m.args)
    for f in m.args:
        if isinstance(f, sympy.sign) and sympy.Abs(f.args[0]) in factors and f in factors:
            factors.remove(f)
            factors.remove(sympy.Abs(f.args[0]))
            factors.append(f.args[0])
    return sympy.Mul(*factors)


def _rounding_decides(expr: Expr) -> bool:
    """Whether a ``where`` compares a constant sub-expression such as ``0.1 + 0.2``: sympy's exact
    value of it may compare otherwise than the compiler's float (0.1 + 0.2 != 0.3 in floats),
    so the algebra must leave such a tree as it is."""
    return any(isinstance(n, Call) and n.op == "where" and isinstance(n.args[0], Call)
               and any(isinstance(a, Call) and not terminals(a) for a in n.args[0].args) for n in walk(expr))


def simplify(expr: Expr, *, max_size: int = 60, seconds: float | None = None) -> Expr:
    """A simpler equivalent expression: the shortest algebraic rewrite for trees up to ``max_size`` nodes within
    ``seconds`` (default ``SIMPLIFY_SECONDS``), else sympy's canonical form; the tree itself where
    neither is smaller or the language cannot say them."""
    if _rounding_decides(expr):
        return expr
    s = to_sympy(expr)
    candidates = [s]
    if expr.size <= max_size:
        try:
            with _time_limit(SIMPLIFY_SECONDS if seconds is None else seconds):
                candidates.insert(0, _shortest(s))
        except _Timeout:
            pass
    for form in candidates:
        simpler = _expressible(form)
        if simpler is not None:
            return simpler if simpler.size <= expr.size else expr
    return expr


#: operators f with f(c x) = c f(x) for every c > 0 (a positive factor passes through them)
_HOMOGENEOUS = frozenset({"relu", "abs", "sum", "mean", "max", "min"})


def _drop_root_factor(expr: Expr) -> Expr:
    """The tree without a positive constant factor at its root, through positively homogeneous
    operators: ``relu(2 * x)`` -> ``relu(x)``, ``sum(x / 4, k)`` -> ``sum(x, k)``."""
    if not isinstance(expr, Call):
        return expr
    if expr.op in _HOMOGENEOUS and len(expr.args) == 1:
        return Call(expr.op, (_drop_root_factor(expr.args[0]),), expr.axes)
    if expr.op in ("mul", "div"):
        x, y = expr.args
        if isinstance(y, Num) and y.value > 0:
            return _drop_root_factor(x)
        if expr.op == "mul" and isinstance(x, Num) and x.value > 0:
            return _drop_root_factor(y)
        if expr.op == "mul":
            return call("mul", _drop_root_factor(x), _drop_root_factor(y))
    return expr


def canonical_form(expr: Expr, *, max_size: int = 60, seconds: float | None = None) -> Expr:
    """The form a report shows first: what the per-image min-max normalisation makes irrelevant
    removed (a positive constant factor at the root, ``c f(x)`` -> ``f(x)``, also through relu, abs,
    sum, mean, max and min, and an added constant), then the smallest equivalent expression known
    (the shortest algebraic rewrite, as :func:`simplify`). Its normalised maps are ``expr``'s."""
    tree = _drop_root_factor(expr)
    if _rounding_decides(expr):
        return tree
    s = to_sympy(tree)
    if s.has(*_UNDEFINED):
        return tree
    forms = [scale_free(s)]
    if tree.size <= max_size:
        try:
            with _time_limit(SIMPLIFY_SECONDS if seconds is None else seconds):
                forms.insert(0, scale_free(_shortest(forms[0])))
        except _Timeout:
            pass
    # a rewrite that cancels a terminal away may change the type (sum(A - A, k) + S is S: {b}, not a map)
    known = [e for e in map(_expressible, forms) if e is not None and terminals(e) == terminals(tree)]
    shown = [e for e in [tree, *known] if not has_root_factor(e)] or [*known, tree]
    return min(shown, key=lambda e: e.size)      # the first of the smallest: the tree's own order


def has_root_factor(expr: Expr) -> bool:
    """Whether ``expr`` = c * f with a numeric c > 0, c != 1, in sympy's form (which moves a positive
    factor out of relu, abs, sum, mean, max and min)."""
    s = to_sympy(expr)
    c, rest = s.as_coeff_Mul()
    return bool(c.is_positive) and c != 1 and rest != 1


def latex(expr: Expr) -> str:
    """LaTeX of the expression (of the unevaluated tree where sympy's form is undefined, e.g. a
    denominator that cancels to zero)."""
    s = to_sympy(expr)
    if s.has(*_UNDEFINED):
        with sympy.evaluate(False):
            s = _unevaluated(expr)
    names = {sym: terminal_latex(sym.name) for sym in s.free_symbols if isinstance(sym, sympy.Symbol)}
    return sympy.latex(s, symbol_names=names)


def _unevaluated(expr: Expr) -> sympy.Expr:
    if isinstance(expr, (Var, Num)):
        return sympy_leaf(expr)
    return sympy_apply(expr, [_unevaluated(a) for a in expr.args])


def scale_free(s: sympy.Expr) -> sympy.Expr:
    """Drop what per-image min-max normalisation removes: a positive factor or an added constant at the top."""
    while True:
        if isinstance(s, sympy.Mul):
            c, rest = s.as_coeff_Mul()
            if c.is_positive and c != 1:
                s = rest
                continue
        if isinstance(s, sympy.Add):
            c, rest = s.as_coeff_Add()
            if c != 0:
                s = rest
                continue
        return s


def canonical_key(expr: Expr, *, normalised: bool = True) -> str:
    """A string equal for algebraically equivalent expressions (up to sympy's canonicalisation).

    With ``normalised=True`` expressions that differ by a positive factor or an added
    constant (invisible after min-max normalisation of the heatmap) share the key.
    """
    if _rounding_decides(expr):
        return "tree:" + to_text(expr)
    s = to_sympy(expr)
    if s.has(*_UNDEFINED):   # sympy's x/0 is not the language's: no algebraic merging, the tree's own key
        return "tree:" + to_text(expr)
    return sympy.srepr(scale_free(s) if normalised else s)
