"""Split a model at a layer and run only the part after it.

``suffix = split_model(model, "layer4", x)`` gives ``A = suffix.activations`` (the
layer's output on ``x``) and a callable with ``suffix(A) == model(x)``. Perturbing
``A`` (Ablation-CAM, cheap gradients to the layer) then costs only the layers after
the split instead of whole forward passes.

Fast path: :mod:`torch.fx` symbolic tracing with the layer kept as one ``call_module``
node. The graph is cut in two: the *suffix* holds every node that depends on the layer's
output; the *prefix* holds the rest. A prefix value that the suffix reads (a skip
connection around the layer, an auxiliary output) is computed once with ``A`` and
passed along as a cached per-image input, gathered per row by ``index``.

Fallback (the model cannot be traced, or the cut is not per-image): a hook replaces
the layer's output with the given activations while the whole model re-runs on the
matching input rows. Correct but as slow as a full forward; a ``RuntimeWarning``
says why the fast path was not taken.

The model should be in eval mode: BatchNorm in train mode or Dropout make outputs
depend on the batch, and no split can be exact then.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten

from ..errors import SycamError, UnknownNameError

__all__ = ["Suffix", "split_model"]


class Suffix:
    """The model after ``layer``: ``suffix(a, index)`` == ``model(x[index])`` when
    ``a`` == ``layer(x)[index]``.

    ``index`` (m,) says which image of ``x`` each row of ``a`` comes from; it selects the
    cached values the suffix needs from before the layer (fast path) or the input rows
    to re-run (fallback). ``index=None`` means row i is image i.
    """

    def __init__(self, layer: str, activations: Any, batch: int,
                 run: Callable[[Any, Tensor | None], Any], *, fast: bool,
                 reason: str | None = None, cached: tuple[str, ...] = ()):
        self.layer = layer
        self.activations = activations  # the layer's output on x
        self.batch = batch              # number of images in x
        self.fast = fast                # True: only the layers after the split run
        self.reason = reason            # why the fast path was not taken (fallback only)
        self.cached = cached            # names of the prefix values the suffix reads
        self._run = run
        self._output: Any = None

    def __call__(self, a: Any, index: Tensor | None = None) -> Any:
        if index is not None:
            index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
            rows = a.shape[0] if isinstance(a, Tensor) else index.numel()
            if index.numel() != rows:
                raise SycamError(f"index has {index.numel()} entries for {rows} rows of activations")
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.batch):
                raise SycamError(f"index out of range [0, {self.batch}): {index.tolist()}")
        elif isinstance(a, Tensor) and a.shape[0] != self.batch:
            raise SycamError(f"{a.shape[0]} rows of activations for {self.batch} images: "
                             "say which image each row belongs to with index=")
        return self._run(a, index)

    @property
    def output(self) -> Any:
        """``suffix(activations)``, i.e. the model's output on ``x`` (computed once)."""
        if self._output is None:
            with torch.no_grad():
                self._output = self(self.activations)
        return self._output

    def __repr__(self) -> str:
        how = "fx suffix" if self.fast else f"hook fallback ({self.reason})"
        extra = f", cached={list(self.cached)}" if self.cached else ""
        return f"Suffix(layer={self.layer!r}, {how}{extra})"


def split_model(model: nn.Module, layer: str, x: Tensor, *, check: bool = True) -> Suffix:
    """Cut ``model`` at the module named ``layer`` (dotted path) for the inputs ``x``.

    Runs the part before the cut once on ``x`` (giving ``Suffix.activations``). With
    ``check=True`` the fast path is verified once against ``model(x)``
    (``allclose(rtol=1e-5, atol=1e-6)``) and abandoned for the fallback if it differs.
    Raises :class:`SycamError` if the layer does not exist, never runs, or runs more than
    once per forward (its output is then ambiguous).
    """
    module = _submodule(model, layer)
    if model.training:
        warnings.warn("split_model: the model is in train mode; BatchNorm/Dropout make its output "
                      "batch-dependent, so the suffix cannot reproduce it (call model.eval())",
                      RuntimeWarning, stacklevel=2)
    try:
        prefix, suffix_gm, cached = _cut(model, module, layer)
    except _NoFastPath as why:
        return _fallback(model, module, layer, x, str(why))

    with torch.no_grad():
        a, *extras = prefix(x)
    for name, e in zip(cached, extras):
        if not (isinstance(e, Tensor) and e.ndim >= 1 and e.shape[0] == x.shape[0]):
            kind = type(e).__name__ if not isinstance(e, Tensor) else f"tensor of shape {tuple(e.shape)}"
            return _fallback(model, module, layer, x,
                             f"the part after the layer reads {name!r} (a {kind}) computed before it, "
                             "which is not one row per image")

    def run(act: Any, index: Tensor | None) -> Any:
        rows = [e.index_select(0, index.to(e.device)) if index is not None else e.clone() for e in extras]
        # the suffix may start with an in-place op (ReLU(inplace=True)): never touch the caller's tensor
        act = act.clone() if isinstance(act, Tensor) else act
        return suffix_gm(act, *rows)

    suffix = Suffix(layer, a, x.shape[0], run, fast=True, cached=cached)
    if check:
        with torch.no_grad():
            want = model(x)
            got = suffix(a)
        if not _same(want, got):
            return _fallback(model, module, layer, x,
                             "the traced suffix did not reproduce model(x) (tracing baked in "
                             "something input-dependent)", want=want)
        suffix._output = got
    return suffix


# ----------------------------------------------------------------------------- internals

class _NoFastPath(Exception):
    """Why the fx split is not available (turned into the fallback's warning)."""


def _submodule(model: nn.Module, layer: str) -> nn.Module:
    if not layer:
        raise SycamError("give the name of a layer inside the model, not the model itself")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise UnknownNameError("layer", layer, [n for n, _ in model.named_modules() if n]) from None


class _Tracer(fx.Tracer):
    """Keeps ``module`` as one opaque node and traces into every module around it."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.names: set[str] = set()

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if m is self.module:
            self.names.add(qualname)
            return True
        if any(sub is self.module for sub in m.modules()):
            return False  # an ancestor of the layer: trace through it
        return super().is_leaf_module(m, qualname)


def _cut(model: nn.Module, module: nn.Module, layer: str) -> tuple[fx.GraphModule, fx.GraphModule, tuple[str, ...]]:
    """Prefix graph ``x -> (A, *cached)`` and suffix graph ``(A, *cached) -> output``."""
    tracer = _Tracer(module)
    try:
        graph = tracer.trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means: use the fallback
        raise _NoFastPath(f"torch.fx symbolic tracing failed: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}") from err
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target in tracer.names]
    if len(calls) > 1:
        raise SycamError(f"layer {layer!r} is called {len(calls)} times in one forward; its output is "
                         "ambiguous, pick a module that runs once")
    if not calls:
        raise _NoFastPath(f"layer {layer!r} does not appear as a module call in the traced graph")
    cut = calls[0]

    # after: every node that depends on the layer's output (the layer itself excluded)
    after: set[fx.Node] = set()
    live: set[fx.Node] = set()  # depends on some placeholder (per-input value)
    for n in nodes:
        ins = n.all_input_nodes
        if n.op == "placeholder" or any(i in live for i in ins):
            live.add(n)
        if n is not cut and n.op != "output" and any(i is cut or i in after for i in ins):
            after.add(n)
    out_node = next(n for n in nodes if n.op == "output")

    # suffix graph: A as input, per-image prefix values as cached inputs, constants recomputed
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: g.placeholder("activation")}
    cached: list[fx.Node] = []
    pending_inputs: list[tuple[fx.Node, fx.Node]] = []

    def value(n: fx.Node) -> fx.Node:
        if n in env:
            return env[n]
        if n in live:  # a prefix value read after the cut: pass it along
            ph = g.placeholder(f"cached_{n.name}")
            cached.append(n)
            pending_inputs.append((n, ph))
            env[n] = ph
        else:  # parameters, buffers and what is computed from them alone
            env[n] = g.node_copy(n, value)
        return env[n]

    for n in nodes:
        if n in after:
            env[n] = g.node_copy(n, value)
    g.output(fx.map_arg(out_node.args[0], value))
    # placeholders must come first in an fx graph: move the cached inputs up
    first = next(iter(g.nodes))
    for _, ph in pending_inputs:
        first.append(ph)
        first = ph
    g.lint()

    # prefix graph: everything else, returning (A, *cached)
    p = fx.Graph()
    penv: dict[fx.Node, fx.Node] = {}
    for n in nodes:
        if n in after or n.op == "output":
            continue
        penv[n] = p.node_copy(n, lambda m: penv[m])
    p.output((penv[cut], *(penv[c] for c in cached)))
    p.lint()

    root = tracer.root
    return fx.GraphModule(root, p), fx.GraphModule(root, g), tuple(c.name for c in cached)


def _fallback(model: nn.Module, module: nn.Module, layer: str, x: Tensor, reason: str,
              want: Any = None) -> Suffix:
    """Hook runner: re-run the whole model with the layer's output replaced."""
    warnings.warn(f"split_model({layer!r}): {reason}; using the hook fallback, which re-runs the "
                  "whole model for every suffix call (correct, as slow as a full forward)",
                  RuntimeWarning, stacklevel=3)
    seen: list[Any] = []

    def keep(_m, _i, out):   # the network goes on with a copy: an in-place op after the layer changes that
        seen.append(out)
        return out.clone() if isinstance(out, Tensor) else out

    handle = module.register_forward_hook(keep)
    try:
        with torch.no_grad():
            output = model(x)
    finally:
        handle.remove()
    if not seen:
        raise SycamError(f"layer {layer!r} did not run in the model's forward")
    if len(seen) > 1:
        raise SycamError(f"layer {layer!r} ran {len(seen)} times in one forward; its output is "
                         "ambiguous, pick a module that runs once")

    def run(act: Any, index: Tensor | None) -> Any:
        xi = x if index is None else x.index_select(0, index.to(x.device))
        act = act.clone() if isinstance(act, Tensor) else act
        h = module.register_forward_hook(lambda _m, _i, _out: act)
        try:
            return model(xi)
        finally:
            h.remove()

    suffix = Suffix(layer, seen[0], x.shape[0], run, fast=False, reason=reason)
    suffix._output = output
    return suffix


def _same(a: Any, b: Any) -> bool:
    la, sa = tree_flatten(a)
    lb, sb = tree_flatten(b)
    if sa != sb or len(la) != len(lb):
        return False
    for u, v in zip(la, lb):
        if isinstance(u, Tensor) != isinstance(v, Tensor):
            return False
        if isinstance(u, Tensor):
            if u.shape != v.shape or not torch.allclose(u.float(), v.float(), rtol=1e-5, atol=1e-6, equal_nan=True):
                return False
        elif u != v:
            return False
    return True

