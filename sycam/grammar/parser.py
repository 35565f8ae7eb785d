"""Text -> expression tree, with errors a person can act on.

The Lark LALR parser builds the tree bottom-up while it parses (no recursion, so deep
input cannot overflow the stack) and enforces the size and depth bounds as it goes.
Syntax errors name the line, the column, the offending token and what was expected;
an unknown function lists the closest known ones.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import lark
from lark import Lark, Transformer, v_args

from ..errors import ExpressionSyntaxError, ExpressionValueError, UnknownNameError
from .ast import CONSTANT_MAX, Call, Expr, Num, Var, call
from .ops import AXES, COMPARE_SYMBOLS, FUNCTIONS, OPS
from .printer import to_text

MAX_TEXT = 4000    # characters
MAX_SIZE = 200     # nodes
MAX_DEPTH = 40     # levels

# What the grammar's terminal names mean to a person.
_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "CIRCUMFLEX": "'^'",
    "COMPARE": "a comparison (> >= < <= == !=)", "$END": "end of input",
}


def _bounded(node: Expr) -> Expr:
    if node.size > MAX_SIZE:
        raise ExpressionSyntaxError(f"expression too large: more than {MAX_SIZE} nodes")
    if node.depth > MAX_DEPTH:
        raise ExpressionSyntaxError(f"expression too deeply nested: more than {MAX_DEPTH} levels")
    return node


def _axes_argument(fn: str, arg: Expr) -> str:
    if isinstance(arg, Var) and arg.name and set(arg.name) <= set(AXES) \
            and len(set(arg.name)) == len(arg.name):
        return arg.name
    raise ExpressionSyntaxError(
        f"{fn}(x, axes): the last argument must name axes from {{{', '.join(AXES)}}} "
        f"such as hw or k, not `{to_text(arg)}`")


@v_args(inline=True)
class _Build(Transformer):
    """Lark callbacks: each returns an AST node (checked against the bounds)."""

    def number(self, tok):
        try:
            return Num(float(tok))            # Num holds the range rule; here it gets a position
        except ExpressionValueError:
            raise ExpressionValueError(
                f"number {str(tok)} at line {tok.line}, column {tok.column} is outside the float32 range "
                f"(at most {CONSTANT_MAX:.4g}) the evidence is computed in", subexpression=str(tok)) from None

    def var(self, tok):
        return Var(str(tok))

    def neg(self, x):
        return _bounded(call("neg", x))

    def add(self, x, y): return _bounded(Call("add", (x, y)))
    def sub(self, x, y): return _bounded(Call("sub", (x, y)))
    def mul(self, x, y): return _bounded(Call("mul", (x, y)))
    def div(self, x, y): return _bounded(Call("div", (x, y)))
    def pow(self, x, y): return _bounded(Call("pow", (x, y)))

    def compare(self, x, op, y):
        return _bounded(Call(COMPARE_SYMBOLS[str(op)], (x, y)))

    def arguments(self, *args):
        return list(args)

    def call(self, name, args):
        fn = str(name)
        op = FUNCTIONS.get(fn)
        if op is None:
            raise UnknownNameError("function", fn, FUNCTIONS, hint=f"at column {name.column}")
        compares = [isinstance(a, Call) and OPS[a.op].syntax == "comparison" for a in args]
        if op.syntax == "choice":
            if len(args) != 3:
                raise ExpressionSyntaxError(f"where takes 3 arguments (condition, x, y), got {len(args)}")
            if not compares[0] or any(compares[1:]):
                raise ExpressionSyntaxError("where(condition, x, y): the first argument must be a "
                                            "comparison such as G > 0, and only the first")
            return _bounded(Call("where", tuple(args)))
        if any(compares):
            raise ExpressionSyntaxError(f"comparisons are only allowed as the first argument of where, "
                                        f"not inside {fn}(...)")
        if op.rule.takes_axes:
            if len(args) != 2:
                raise ExpressionSyntaxError(f"{fn} takes 2 arguments (x, axes), got {len(args)}: "
                                            f"write e.g. {fn}(x, hw)")
            return _bounded(Call(fn, (args[0],), _axes_argument(fn, args[1])))
        if len(args) != op.arity:
            raise ExpressionSyntaxError(f"{fn} takes {op.arity} argument(s), got {len(args)}")
        return _bounded(Call(fn, tuple(args)))


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("cam.lark").read_text()
    return Lark(grammar, parser="lalr", transformer=_Build(), maybe_placeholders=False)


def _expected_words(expected) -> list[str]:
    return sorted({_TOKEN_WORDS.get(t, t.lower()) for t in expected})


def parse(text: str) -> Expr:
    """Parse expression text into a tree. Raises ExpressionSyntaxError / UnknownNameError."""
    if not isinstance(text, str):
        raise ExpressionSyntaxError(f"expression must be text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ExpressionSyntaxError(f"expression text too long ({len(text)} > {MAX_TEXT} characters)")
    if not text.strip():
        raise ExpressionSyntaxError("empty expression", text=text, line=1, column=1, expected=["an expression"])
    try:
        tree: Expr = _parser().parse(text)   # type: ignore[assignment]  # the transformer builds an Expr
        return tree
    except lark.exceptions.UnexpectedCharacters as err:
        expected = _expected_words(err.allowed or ())
        token = text[err.pos_in_stream or 0]
        raise ExpressionSyntaxError(
            f"unexpected character {token!r} at line {err.line}, column {err.column}"
            + (f"; expected {', '.join(expected)}" if expected else "") + "\n" + _caret(text, err.line, err.column),
            text=text, line=err.line, column=err.column, token=token, expected=expected) from None
    except lark.exceptions.UnexpectedEOF as err:
        line, column = _end_position(text)
        expected = _expected_words(err.expected)
        raise ExpressionSyntaxError(
            f"unexpected end of input at line {line}, column {column}; expected {', '.join(expected)}\n"
            + _caret(text, line, column), text=text, line=line, column=column, token=None,
            expected=expected) from None
    except lark.exceptions.UnexpectedToken as err:
        if err.token.type == "$END":
            line, column = _end_position(text)
            what = "end of input"
        else:
            line, column, what = err.line, err.column, repr(str(err.token))
        expected = _expected_words(err.expected)
        raise ExpressionSyntaxError(
            f"unexpected {what} at line {line}, column {column}; expected {', '.join(expected)}\n"
            + _caret(text, line, column), text=text, line=line, column=column,
            token=None if err.token.type == "$END" else str(err.token), expected=expected) from None
    except lark.exceptions.VisitError as err:  # an error raised inside a callback
        if isinstance(err.orig_exc, (ExpressionSyntaxError, ExpressionValueError, UnknownNameError)):
            raise err.orig_exc from None
        raise


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def _caret(text: str, line: int, column: int) -> str:
    """The offending line with a caret under the column."""
    rows = text.split("\n")
    row = rows[line - 1] if 0 < line <= len(rows) else ""
    return f"  {row}\n  {' ' * max(column - 1, 0)}^"
