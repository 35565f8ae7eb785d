"""Tree -> text with the fewest parentheses that parse back to the same tree; terminals' LaTeX names."""
from __future__ import annotations

import re

from .ast import Call, Expr, Num, Var
from .ops import OPS

_ATOM = 5       # binding strength of a name, a number or a call: higher binds tighter


def number_text(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _prec(node: Expr) -> int:
    if isinstance(node, Num):
        return OPS["neg"].precedence if node.value < 0 else _ATOM  # a negative constant prints as unary minus
    if isinstance(node, Call) and OPS[node.op].syntax in ("infix", "prefix"):
        return OPS[node.op].precedence
    return _ATOM


def to_text(expr: Expr) -> str:
    """Canonical text of a tree; ``parse(to_text(e)) == e`` for trees built by the parser or builders."""
    out: list[str] = []
    _emit(expr, out)
    return "".join(out)


def _emit(node: Expr, out: list[str]) -> None:
    # Recursive; depth is bounded (parser.MAX_DEPTH).
    if isinstance(node, Var):
        out.append(node.name)
        return
    if isinstance(node, Num):
        out.append(number_text(node.value))
        return
    op = OPS[node.op]
    if op.syntax == "infix":
        left, right = node.args
        if op.right_associative:   # the base must bind tighter, the exponent may be unary
            _wrap(left, op.precedence + 1, out)
            out.append(op.symbol)
            _wrap(right, OPS["neg"].precedence, out)
        else:
            _wrap(left, op.precedence, out)
            out.append(f" {op.symbol} ")
            _wrap(right, op.precedence + 1, out)
    elif op.syntax == "prefix":
        out.append(op.symbol)
        _wrap(node.args[0], op.precedence, out)
    elif op.syntax == "comparison":
        _emit(node.args[0], out)
        out.append(f" {op.symbol} ")
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


#: LaTeX of terminals whose records give one (``Terminal.latex``: set by the terminal registry)
TERMINAL_LATEX: dict[str, str] = {}
_ORDER = re.compile(r"([A-Za-z]+)([0-9]+)([A-Za-z]*)")


def terminal_latex(name: str) -> str:
    """A terminal's LaTeX: its record's, else a name ending in a number n is an order,
    written ``X^{(n)}`` (G2 -> G^{(2)}, G2v -> G^{(2)}_{v}: never G_2, which reads as an index),
    and any other name with digits or underscores is upright text (\\mathrm{score\\_ss})."""
    if name in TERMINAL_LATEX:
        return TERMINAL_LATEX[name]
    m = _ORDER.fullmatch(name)
    if m:
        base, order, rest = m.groups()
        return f"{base}^{{({order})}}" + (f"_{{{rest}}}" if rest else "")
    if re.search(r"[0-9_]", name):
        return r"\mathrm{%s}" % name.replace("_", r"\_")
    return name
