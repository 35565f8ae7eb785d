"""Torch implementations of the language's operators, exact at every scale of the evidence.

The operators are the paper formulas wherever those are defined, whatever the magnitude of
the activations and gradients (1e-12 or 1e3 alike: no absolute epsilon anywhere), and a
documented value where they are not:

* ``x / y`` is the quotient where ``y != 0`` and **0 where y is exactly zero** (either sign);
  negative integer powers divide the same way (``0 ^ -1 = 0``), other negative powers of 0
  are 0 too;
* ``log(x)`` is the logarithm where ``x > 0`` and ``log(TINY)`` (about -87.3, TINY the smallest
  normal float32) where ``x <= 0``; ``sqrt`` clamps at 0; ``exp`` clips its argument at 80;
* non-integer powers keep the sign of the base: sign(x) |x|^y.

A quotient or power can still overflow float32 (e.g. (G^-3)^9); the compiler reports such
maps as invalid. Every function accepts tensors or Python floats (folded constants).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: The smallest positive normal float32: where log's argument is not positive it reads this.
TINY = 2.0 ** -126
EXP_MAX = 80.0
Value = Tensor | float


def safe_denominator(y: Value) -> Value:
    """y with exact zeros replaced by infinity, so that x / safe_denominator(y) is x / y where
    y != 0 and 0 (for finite x) where y == 0.

    Odd in y up to the sign of a zero quotient, as the algebra of the sympy bridge assumes.
    Memory passes matter in the search (denominators are full evidence tensors): a
    denominator without zeros is returned as it is (one read to know on the CPU), any other
    costs one more pass (the search memoises it).
    """
    if isinstance(y, float):
        return y if y != 0 else math.inf
    if y.device.type == "cpu" and y.numel() > 4096:      # a host-side test costs no device sync here
        if not bool((y == 0).any()):
            return y
    return y.masked_fill(y == 0, math.inf)


def safe_div(x: Value, y: Value) -> Value:
    """x / y, and 0 where y == 0."""
    return x / safe_denominator(y)


def safe_pow(x: Value, y: Value) -> Value:
    """x ^ y; integer exponents up to 2^31 as usual (negative ones as (1 / x)^-n with safe
    division, so 0^-n = 0 and a tiny base overflows instead of underflowing to a zero divisor),
    other exponents as sign(x) |x|^y (0 for a zero base and a negative exponent)."""
    if isinstance(y, float) and y.is_integer() and abs(y) <= 2 ** 31:
        n = int(y)
        if isinstance(x, float):
            return _float_pow(safe_div(1.0, x), -n) if n < 0 else _float_pow(x, n)
        return safe_div(1.0, x).pow(-n) if n < 0 else x.pow(n)
    if isinstance(x, float) and isinstance(y, float):
        if x == 0:               # (y is not an integer here, so not 0)
            return 0.0
        return math.copysign(_float_pow(abs(x), y), x)
    x = torch.as_tensor(x)
    y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
    out = torch.sign(x) * x.abs().pow(y)
    return torch.where((x == 0) & (y < 0), torch.zeros((), dtype=x.dtype, device=x.device), out)


def _float_pow(x: float, y: float) -> float:
    """x ** y on floats, infinity where Python would raise OverflowError."""
    try:
        return x ** y
    except OverflowError:
        return math.inf


def _t(x: Value) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.float64)


def safe_log(x: Value) -> Value:
    """log(x) where x > 0, log(TINY) where x <= 0."""
    return math.log(max(x, TINY)) if isinstance(x, float) else torch.log(x.clamp_min(TINY))


def safe_sqrt(x: Value) -> Value:
    return math.sqrt(max(x, 0.0)) if isinstance(x, float) else torch.sqrt(x.clamp_min(0))


def safe_exp(x: Value) -> Value:
    return math.exp(min(x, EXP_MAX)) if isinstance(x, float) else torch.exp(x.clamp_max(EXP_MAX))


def _scalar(fn):
    """Apply a tensor function to a float too (constant folding)."""
    def apply(x: Value) -> Value:
        return float(fn(_t(x))) if isinstance(x, float) else fn(x)
    return apply


UNARY = {
    "neg": lambda x: -x,
    "relu": _scalar(torch.relu),
    "abs": lambda x: abs(x),
    "sign": _scalar(torch.sign),
    "exp": safe_exp,
    "log": safe_log,
    "sqrt": safe_sqrt,
    "tanh": _scalar(torch.tanh),
    "sigmoid": _scalar(torch.sigmoid),
}

BINARY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": safe_div,
    "pow": safe_pow,
}

COMPARE = {
    "gt": lambda x, y: x > y, "ge": lambda x, y: x >= y, "lt": lambda x, y: x < y,
    "le": lambda x, y: x <= y, "eq": lambda x, y: x == y, "ne": lambda x, y: x != y,
}


def reduce(op: str, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    if op == "sum":
        return x.sum(dim=dims, keepdim=True)
    if op == "mean":
        return x.mean(dim=dims, keepdim=True)
    if op == "max":
        return x.amax(dim=dims, keepdim=True)
    if op == "min":
        return x.amin(dim=dims, keepdim=True)
    if op == "std":
        return x.std(dim=dims, correction=0, keepdim=True)
    raise ValueError(op)


def normalise(op: str, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    if op == "softmax":
        e = torch.exp(x - x.amax(dim=dims, keepdim=True))
        return e / e.sum(dim=dims, keepdim=True)
    if op == "norm":
        lo = x.amin(dim=dims, keepdim=True)
        span = x.amax(dim=dims, keepdim=True) - lo
        return torch.where(span > 0, (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))
    raise ValueError(op)


def first_component(x: Tensor, k: int, h: int, w: int) -> Tensor:
    """pc1: per image (and scale / sample), positions as samples and channels as features,
    centred over positions, projected on the first principal direction.

    The sign of a principal direction is arbitrary; it is fixed so that the projection's
    largest-magnitude value is positive. Uses the smaller of the two Gram matrices.
    """
    moved = x.movedim(k, -1)                          # (..., h, w, k)
    lead = moved.shape[:-3]
    X = moved.reshape(*lead, -1, moved.shape[-1])     # (..., n=hw, K)
    finite = torch.isfinite(X).flatten(-2).all(dim=-1)          # (...,): images pc1 can handle
    X64 = torch.where(finite[..., None, None], X.double(), 0.0)
    X64 = X64 - X64.mean(dim=-2, keepdim=True)
    scale = X64.abs().flatten(-2).amax(dim=-1).clamp_min(1e-300)[..., None, None]
    X64 = X64 / scale                                            # unit scale: the Gram stays well inside float64
    n, K = X64.shape[-2:]
    try:
        if n <= K:
            vals, vecs = torch.linalg.eigh(X64 @ X64.transpose(-1, -2))
            proj = vecs[..., -1] * vals[..., -1:].clamp_min(0).sqrt()
        else:
            vals, vecs = torch.linalg.eigh(X64.transpose(-1, -2) @ X64)
            proj = (X64 @ vecs[..., -1:])[..., 0]
    except torch.linalg.LinAlgError:   # no convergence: report the maps invalid, don't crash
        proj = torch.full(X64.shape[:-1], float("nan"), dtype=X64.dtype, device=X64.device)
    pick = proj.abs().argmax(dim=-1, keepdim=True)
    proj = torch.where(proj.gather(-1, pick) < 0, -proj, proj) * scale[..., 0]
    proj = torch.where(finite[..., None], proj, float("nan"))   # non-finite input: an invalid map
    out = proj.to(x.dtype).reshape(*lead, moved.shape[-3], moved.shape[-2], 1)
    return out.movedim(-1, k)
