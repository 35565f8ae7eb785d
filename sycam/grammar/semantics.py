"""What each operator computes: exact definitions on tensors and on floats, at every scale.

The operators are the paper formulas wherever those are defined, whatever the magnitude of
the activations and gradients (1e-12 or 1e3 alike: no absolute epsilon anywhere), and a
documented value where they are not:

* ``x / y`` is the quotient where ``y != 0`` and **0 where y is exactly zero** (either sign);
  negative integer powers divide the same way (``0 ^ -1 = 0``), other negative powers of 0
  are 0 too;
* ``log(x)`` is the logarithm where ``x > 0`` and ``log(TINY)`` (about -87.3, TINY the smallest
  normal float32) where ``x <= 0``; ``sqrt`` clamps at 0; ``exp`` clips its argument at 80;
* non-integer powers keep the sign of the base: sign(x) |x|^y;
* ``norm`` (and the heatmap post-processing) is a min-max to [0, 1], 0 for a constant map;
* kernel PCA (``kpc1_rbf``, ``kpc1_sigmoid``) depends on the activations' scale by definition
  (gamma = 1 / K); its kernel matrix is centred less its constant part, so tiny activations
  keep their differences.

A quotient or power can still overflow float32 (e.g. (G^-3)^9); the compiler reports such
maps as invalid. Every function accepts tensors or Python floats (folded constants), and
uses tensor methods only, so this module loads without torch: the parser, the checker and
``sycam check`` stay torch-free. The few functions that need torch's namespace import it
when they first run (marked "deferred").
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

#: The smallest positive normal float32: where log's argument is not positive it reads this.
TINY = 2.0 ** -126
EXP_MAX = 80.0
Value = Any   # a torch.Tensor or a float


def safe_denominator(y: Value) -> Value:
    """y with exact zeros replaced by infinity, so that x / safe_denominator(y) is x / y where
    y != 0 and 0 (for finite x) where y == 0.

    Odd in y up to the sign of a zero quotient, as the algebra of the sympy bridge assumes.
    Memory passes matter in the search (denominators are full evidence tensors): a
    denominator without zeros (min |y| > 0, which a NaN fails) is returned as it is (two
    vectorised passes to know on the CPU, a seventh of ``(y == 0).any()``), any other costs
    one more pass (the search memoises it).
    """
    if isinstance(y, float):
        return y if y != 0 else math.inf
    if y.device.type == "cpu" and y.numel() > 4096:      # a host-side test costs no device sync here
        if bool(y.abs().amin() > 0):
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
    ref = x if not isinstance(x, float) else y
    x = ref.new_tensor(x) if isinstance(x, float) else x
    y = x.new_tensor(y) if isinstance(y, float) else y.to(x.dtype)
    out = x.sign() * x.abs().pow(y)
    return out.masked_fill((x == 0) & (y < 0), 0.0)


def _float_pow(x: float, y: float) -> float:
    """x ** y on floats, infinity where Python would raise OverflowError."""
    try:
        return x ** y
    except OverflowError:
        return math.inf


def safe_log(x: Value) -> Value:
    """log(x) where x > 0, log(TINY) where x <= 0."""
    return math.log(max(x, TINY)) if isinstance(x, float) else x.clamp_min(TINY).log()


def safe_sqrt(x: Value) -> Value:
    return math.sqrt(max(x, 0.0)) if isinstance(x, float) else x.clamp_min(0).sqrt()


def safe_exp(x: Value) -> Value:
    return math.exp(min(x, EXP_MAX)) if isinstance(x, float) else x.clamp_max(EXP_MAX).exp()


def relu(x: Value) -> Value:
    return max(x, 0.0) if isinstance(x, float) else x.relu()


def sign(x: Value) -> Value:
    return float((x > 0) - (x < 0)) if isinstance(x, float) else x.sign()


def tanh(x: Value) -> Value:
    return math.tanh(x) if isinstance(x, float) else x.tanh()


def sigmoid(x: Value) -> Value:
    if isinstance(x, float):
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    return x.sigmoid()


def where(cond: Value, x: Value, y: Value) -> Value:
    """x where ``cond`` holds, else y; a comparison of two constants (a bool) picks a branch."""
    tensors = [v for v in (x, y) if not isinstance(v, float)]
    if isinstance(cond, bool):
        if not tensors:
            return x if cond else y
        cond = tensors[0].new_tensor(cond, dtype=bool)     # broadcast to the branches' axes
    x = cond.new_tensor(x, dtype=_float_dtype(tensors, cond)) if isinstance(x, float) else x
    return x.where(cond, y)


def _float_dtype(tensors: list, cond: Tensor):
    if tensors:
        return tensors[0].dtype
    import torch  # deferred: the module loads without torch (see the module docstring)
    return torch.get_default_dtype()


def reduce_sum(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return x.sum(dim=dims, keepdim=True)


def reduce_mean(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return x.mean(dim=dims, keepdim=True)


def reduce_max(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return x.amax(dim=dims, keepdim=True)


def reduce_min(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    return x.amin(dim=dims, keepdim=True)


def reduce_std(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Population standard deviation."""
    return x.std(dim=dims, correction=0, keepdim=True)


def softmax(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    e = (x - x.amax(dim=dims, keepdim=True)).exp()
    return e / e.sum(dim=dims, keepdim=True)


def minmax(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """(x - min) / (max - min) along ``dims``, in [0, 1]; 0 where x is constant along them.
    The one min-max of sycam: the ``norm`` operator and every heatmap's post-processing."""
    lo = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - lo
    return ((x - lo) / span.clamp_min(_tiny(x))).where(span > 0, 0.0)


def upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of the last two axes (h, w) of ``x`` to ``size``, half-pixel centres
    (``align_corners=False``, as OpenCV's ``cv2.resize``): the one resampling of sycam, used
    by every heatmap's post-processing and by the ``resize`` operator."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    import torch.nn.functional as F  # deferred: the module loads without torch (see the module docstring)

    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    return F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False).reshape(*lead, *size)


def resize(x: Tensor, like: Tensor) -> Tensor:
    """``x`` resampled (:func:`upsample`) to the spatial grid (h, w) of ``like``: a layer's map on
    the input's grid, to meet a terminal computed at the input's resolution."""
    return upsample(x, (int(like.shape[-2]), int(like.shape[-1])))


def _tiny(x: Tensor) -> float:
    import torch  # deferred: the module loads without torch (see the module docstring)
    return torch.finfo(x.dtype).tiny


def first_component(x: Tensor, k: int, h: int, w: int) -> Tensor:
    """pc1: per image (and scale / sample), positions as samples and channels as features,
    centred over positions, projected on the first principal direction.

    The sign of a principal direction is arbitrary; it is fixed so that the projection's
    largest-magnitude value is positive. Uses the smaller of the two Gram matrices.
    """
    import torch  # deferred: the module loads without torch (see the module docstring)

    X64, finite, grid = _positions_as_samples(x, k)
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
    return _projection_map(proj * scale[..., 0], finite, x, k, grid)


def kernel_first_component(x: Tensor, k: int, h: int, w: int, kernel: str) -> Tensor:
    """kpc1: kernel PCA's first component (KPCA-CAM), per image (and scale / sample).

    Positions are the samples x_i and channels the K features, centred over positions (as
    grad-cam does before sklearn's KernelPCA); the kernel matrix, with sklearn's defaults
    gamma = 1 / K and coef0 = 1, is ``rbf``: exp(-gamma |x_i - x_j|^2) or ``sigmoid``:
    tanh(gamma x_i . x_j + 1). It is double-centred (feature space centred), and the map is
    sqrt(lambda_1) v_1, v_1 the unit eigenvector of the largest eigenvalue lambda_1 (0 where
    lambda_1 <= 0): sklearn's ``fit_transform``, with pc1's sign rule (largest |value| positive,
    sklearn's too).

    Exact at any scale: a constant added to every entry of the kernel matrix cancels in the
    double centring, so what is centred is exp(.) - 1 = expm1(-gamma d^2) and tanh(a) - tanh(1)
    = tanh(gamma s) (1 - tanh(a) tanh(1)), a = gamma s + 1: tiny activations give tiny
    differences, not differences lost against 1. Distances are computed directly, not from the
    Gram. Kernel PCA is not scale-free: where gamma d^2 exceeds ~745 for every pair, exp
    underflows, the RBF matrix is the identity and lambda_1 is not simple (no unique map). Costs
    O((h w)^2) memory and O((h w)^3) time per image.
    """
    import torch  # deferred: the module loads without torch (see the module docstring)

    X64, finite, grid = _positions_as_samples(x, k)
    shifted = KERNELS[kernel](X64, 1.0 / X64.shape[-1])
    centred = (shifted - shifted.mean(dim=-1, keepdim=True) - shifted.mean(dim=-2, keepdim=True)
               + shifted.mean(dim=(-2, -1), keepdim=True))
    scale = centred.abs().flatten(-2).amax(dim=-1)[..., None, None]
    scale = torch.where(scale > 0, scale, 1.0)                              # unit scale for eigh
    try:
        vals, vecs = torch.linalg.eigh(centred / scale)
        proj = vecs[..., -1] * (vals[..., -1:].clamp_min(0) * scale[..., 0]).sqrt()
    except torch.linalg.LinAlgError:   # no convergence: report the maps invalid, don't crash
        proj = torch.full(X64.shape[:-1], float("nan"), dtype=X64.dtype, device=X64.device)
    return _projection_map(proj, finite, x, k, grid)


def _rbf_less_one(X: Tensor, gamma: float) -> Tensor:
    """exp(-gamma |x_i - x_j|^2) - 1, distances computed directly (no cancellation of norms)."""
    import torch  # deferred: the module loads without torch (see the module docstring)

    return torch.expm1(-gamma * torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist").square())


def _sigmoid_less_tanh1(X: Tensor, gamma: float) -> Tensor:
    """tanh(gamma x_i . x_j + 1) - tanh(1), as tanh(gamma s) (1 - tanh(gamma s + 1) tanh(1))."""
    gs = gamma * (X @ X.transpose(-1, -2))
    return gs.tanh() * (1 - (gs + 1).tanh() * math.tanh(1.0))


#: Kernel PCA's kernels (sklearn's KernelPCA definitions), each less a constant that the
#: double centring removes: name -> (samples (..., n, K), gamma) -> (..., n, n).
KERNELS = {"rbf": _rbf_less_one, "sigmoid": _sigmoid_less_tanh1}


def _positions_as_samples(x: Tensor, k: int) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """x (channels at dim k, h and w last) as float64 samples (..., n = h w, K), centred over
    positions; which images are finite (the others read 0 here, NaN in the map); the (..., h, w)
    shape to give the map back."""
    import torch  # deferred: the module loads without torch (see the module docstring)

    moved = x.movedim(k, -1)                          # (..., h, w, K)
    X = moved.reshape(*moved.shape[:-3], -1, moved.shape[-1])
    finite = torch.isfinite(X).flatten(-2).all(dim=-1)
    X64 = torch.where(finite[..., None, None], X.double(), 0.0)
    return X64 - X64.mean(dim=-2, keepdim=True), finite, tuple(moved.shape[:-1])


def _projection_map(proj: Tensor, finite: Tensor, x: Tensor, k: int, grid: tuple[int, ...]) -> Tensor:
    """A projection (..., n) as a map in x's layout (k of size 1): its sign fixed so that the
    largest |value| is positive (a principal direction's sign is arbitrary), NaN (an invalid
    map) for images with non-finite values."""
    import torch  # deferred: the module loads without torch (see the module docstring)

    pick = proj.abs().argmax(dim=-1, keepdim=True)
    proj = torch.where(proj.gather(-1, pick) < 0, -proj, proj)
    proj = torch.where(finite[..., None], proj, float("nan"))
    return proj.to(x.dtype).reshape(*grid, 1).movedim(-1, k)
