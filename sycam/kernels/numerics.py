"""Torch implementations of the language's operators, made safe for search.

No operator lets a NaN or infinity escape from finite input: division pushes
denominators with |y| < EPS to ±EPS (the sign of y, -0.0 included), ``log`` clamps its
argument at EPS, ``sqrt`` at 0, ``exp`` its argument at 80, and non-integer powers keep the
sign of the base. Candidates can still overflow float32 (e.g. (G^-3)^9); the compiler reports
such maps as invalid.
Every function accepts tensors or Python floats (folded constants) as operands.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

EPS = 1e-7
EXP_MAX = 80.0
Value = Tensor | float


def safe_denominator(y: Value) -> Value:
    """y with |y| < EPS pushed to copysign(EPS, y), so that x / safe_denominator(y) is finite.

    Odd in y (safe_div(x, -y) == -safe_div(x, y), -0.0 included), as the algebra the sympy
    bridge applies assumes. Memory passes matter in the search (denominators are full
    evidence tensors): a denominator already away from zero is returned as it is (one
    min/max read to know), any other costs three passes (the search memoises it).
    """
    if isinstance(y, float):
        return y if abs(y) >= EPS else math.copysign(EPS, y)
    if y.device.type == "cpu" and y.numel() > 4096:      # a host-side test costs no device sync here
        lo, hi = torch.aminmax(y)
        if lo >= EPS or hi <= -EPS:
            return y
    return torch.copysign(y.abs().clamp_min_(EPS), y)


def safe_div(x: Value, y: Value) -> Value:
    return x / safe_denominator(y)


def safe_pow(x: Value, y: Value) -> Value:
    """x ^ y; integer exponents as usual (negative ones through safe division),
    other exponents as sign(x) |x|^y."""
    if isinstance(y, float) and y.is_integer():
        n = int(y)
        if isinstance(x, float):
            return safe_div(1.0, x ** -n) if n < 0 else x ** n
        return safe_div(1.0, x.pow(-n)) if n < 0 else x.pow(n)
    if isinstance(x, float) and isinstance(y, float):
        return math.copysign(max(abs(x), EPS) ** y if y < 0 else abs(x) ** y, x)
    x = torch.as_tensor(x)
    y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
    base = torch.where(y < 0, x.abs().clamp_min(EPS), x.abs())
    return torch.sign(x) * base.pow(y)


def _t(x: Value) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.float64)


def safe_log(x: Value) -> Value:
    return math.log(max(x, EPS)) if isinstance(x, float) else torch.log(x.clamp_min(EPS))


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
