"""The CAM expression language: grammar, typed AST, checker, printer, sympy bridge.

This layer knows nothing of torch or models: expressions are pure data.
"""
from .ast import Call, Expr, Num, Var
from .checker import HEATMAP, WEIGHTS, TerminalAxes, check, infer, result_kind
from .parser import parse
from .printer import to_text

__all__ = ["Call", "Expr", "Num", "Var", "parse", "to_text", "check", "infer", "result_kind",
           "HEATMAP", "WEIGHTS", "TerminalAxes"]
