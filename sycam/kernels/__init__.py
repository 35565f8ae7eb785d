"""Lowering of expressions to torch: safe element-wise ops, shared sub-expressions,
the fixed heatmap post-processing and batched evaluation of many candidates."""
from .compiler import Program, compile_expression, evaluate
from .layout import DIMS, from_layout, to_layout
from .postprocess import finalize, minmax, upsample

__all__ = ["Program", "compile_expression", "evaluate", "DIMS", "to_layout", "from_layout",
           "finalize", "minmax", "upsample"]
