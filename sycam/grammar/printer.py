"""Tree -> text with the fewest parentheses that parse back to the same tree."""
from __future__ import annotations

from .ast import Call, Expr, Num, Var
from .ops import OPS

# binding strength: higher binds tighter
_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3, "pow": 4}
_ATOM = 5
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^"}


def number_text(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _prec(node: Expr) -> int:
    if isinstance(node, Num):
        return 3 if node.value < 0 else _ATOM  # a negative constant prints as unary minus
    if isinstance(node, Call):
        return _PREC.get(node.op, _ATOM)
    return _ATOM


def to_text(expr: Expr) -> str:
    """Canonical text of a tree; ``parse(to_text(e)) == e`` for trees built by the parser or builders."""
    out: list[str] = []
    _emit(expr, out)
    return "".join(out)


def _emit(node: Expr, out: list[str]) -> None:
    # Iterative in spirit would be nicer, but depth is bounded (parser.MAX_DEPTH).
    if isinstance(node, Var):
        out.append(node.name)
    elif isinstance(node, Num):
        out.append(number_text(node.value))
    elif node.op in _SYMBOL:
        p = _PREC[node.op]
        left, right = node.args
        if node.op == "pow":   # right-associative: base must be an atom, exponent may be unary
            _wrap(left, _ATOM, out)
            out.append("^")
            _wrap(right, 3, out)
        else:                  # left-associative
            _wrap(left, p, out)
            out.append(f" {_SYMBOL[node.op]} ")
            _wrap(right, p + 1, out)
    elif node.op == "neg":
        out.append("-")
        _wrap(node.args[0], 3, out)
    elif OPS[node.op].kind == "compare":
        _emit(node.args[0], out)
        out.append(f" {OPS[node.op].symbol} ")
        _emit(node.args[1], out)
    else:
        out.append(node.op + "(")
        for i, a in enumerate(node.args):
            if i:
                out.append(", ")
            _emit(a, out)
        if node.axes:
            out.append(", " + node.axes)
        out.append(")")


def _wrap(node: Expr, min_prec: int, out: list[str]) -> None:
    if _prec(node) < min_prec:
        out.append("(")
        _emit(node, out)
        out.append(")")
    else:
        _emit(node, out)
