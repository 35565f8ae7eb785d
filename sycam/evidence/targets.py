"""What is explained: a target maps the model's output to one score per image.

A target is any callable ``output -> Tensor (b,)``. The classes here cover the usual
cases; :func:`as_target` turns the shortcuts people pass (``None``, an int, a list of
ints, a tensor, per-sample callables) into one.

Targets on raw outputs (detectors, ...): a target with the class attribute
``reads_raw_output = True`` is called on whatever the model returns (``model(x)``, e.g. a
torchvision detector's list of ``{boxes, scores, labels}`` dicts), not on selected logits,
and returns one score per image, ``(b,)``. A row it cannot score (no matching detection) is
NaN: its map is reported invalid. It may also define ``input_frame(model, x)`` returning a
callable that maps raw layer maps ``(b, h, w)`` to the input's frame ``(b, H, W)`` (for models
that resize or pad their input internally); without it maps are upsampled as usual.
See :class:`sycam.evidence.detection.DetectionTarget`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import SycamError

Target = Callable[[Tensor], Tensor]


def _classes(classes: int | Sequence[int] | Tensor | None, logits: Tensor) -> Tensor:
    """Per-image class indices; ``None`` means each image's top-1 class."""
    b = logits.shape[0]
    if classes is None:
        return logits.argmax(dim=1)
    c = torch.as_tensor(classes, device=logits.device, dtype=torch.long).reshape(-1)
    if c.numel() == 1:
        c = c.expand(b)
    if c.numel() != b:
        raise SycamError(f"{c.numel()} target classes given for a batch of {b} images; "
                         "give one class, or one per image")
    if (c < 0).any() or (c >= logits.shape[1]).any():
        raise SycamError(f"target class out of range [0, {logits.shape[1]}): {c.tolist()}")
    return c


@dataclass
class ClassLogit:
    """S = y_c, the pre-softmax score of class c (top-1 class when ``classes`` is None)."""

    classes: int | Sequence[int] | Tensor | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        c = _classes(self.classes, logits)
        return logits.gather(1, c[:, None])[:, 0]


@dataclass
class ClassProbability:
    """S = softmax(y)_c."""

    classes: int | Sequence[int] | Tensor | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        c = _classes(self.classes, logits)
        return logits.softmax(dim=1).gather(1, c[:, None])[:, 0]


@dataclass
class ClassReST:
    """ReST, the Residual Softmax Target-class score of ShapleyCAM (Cai 2025, arXiv:2501.06261):
    S = y_c + log softmax(y)_c = y_c - CE(y, c), the logit plus the log-probability (grad-cam's
    ``ClassifierOutputReST``)."""

    classes: int | Sequence[int] | Tensor | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        c = _classes(self.classes, logits)[:, None]
        return (logits.gather(1, c) + logits.log_softmax(dim=1).gather(1, c))[:, 0]


@dataclass
class FinerContrast:
    """Finer-CAM target: the class score minus its most similar classes.

    S' = sum_i p_i (y_c - gamma * y_{r_i}) / (sum_i p_i + 1e-9), where r_i are the
    classes whose logits are closest to y_c (ranks 1..n_refs after c itself) and p_i
    their softmax probabilities (``weighted=True``, the Finer-CAM reference code);
    ``weighted=False`` gives y_c - gamma * mean_i y_{r_i}.
    """

    classes: int | Sequence[int] | Tensor | None = None
    gamma: float = 1.0
    n_refs: int = 3
    weighted: bool = True

    def references(self, logits: Tensor) -> Tensor:
        """(b, n_refs) indices of the classes most similar to each target class."""
        c = _classes(self.classes, logits)
        gap = (logits - logits.gather(1, c[:, None])).abs()
        gap.scatter_(1, c[:, None], float("inf"))  # never the class itself
        n = min(self.n_refs, logits.shape[1] - 1)  # a model with few classes has fewer references
        return gap.topk(n, dim=1, largest=False).indices

    def __call__(self, logits: Tensor) -> Tensor:
        c = _classes(self.classes, logits)
        refs = self.references(logits)
        y_c = logits.gather(1, c[:, None])
        if refs.shape[1] == 0:   # a one-class model: nothing to contrast with
            return y_c[:, 0]
        y_r = logits.gather(1, refs)
        diff = y_c - self.gamma * y_r
        if not self.weighted:
            return diff.mean(dim=1)
        p = logits.softmax(dim=1).gather(1, refs)   # not detached, as in the reference code
        return (p * diff).sum(dim=1) / (p.sum(dim=1) + 1e-9)


@dataclass
class PerSample:
    """One callable per image, each applied to that image's output row (grad-cam style)."""

    targets: Sequence[Callable[[Tensor], Any]]

    def __call__(self, logits: Tensor) -> Tensor:
        if len(self.targets) != logits.shape[0]:
            raise SycamError(f"{len(self.targets)} targets for a batch of {logits.shape[0]} images")
        return torch.stack([torch.as_tensor(t(row)).reshape(()) for t, row in zip(self.targets, logits)])


def reads_raw_output(target: Any) -> bool:
    """True for a target that reads the model's raw output instead of logits (see the module docs)."""
    return bool(getattr(target, "reads_raw_output", False))


def as_target(spec: Any) -> Target:
    """None / int / ints / tensor -> :class:`ClassLogit`; a callable stays; a list of callables ->
    :class:`PerSample`."""
    if spec is None or isinstance(spec, (int, Tensor)):
        return ClassLogit(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if all(isinstance(s, int) for s in spec):
            return ClassLogit(list(spec))
        if all(callable(s) for s in spec):
            return PerSample(list(spec))
    if callable(spec):
        return spec
    raise SycamError(f"cannot use {spec!r} as a target: give a class index, one per image, "
                     "a tensor of classes, or a callable output -> (b,) scores")


def select_output(output: Any, selector: str | int | Callable[[Any], Tensor] | None = None) -> Tensor:
    """The logits tensor inside a model output (tensor, tuple/list, dict or ModelOutput)."""
    if callable(selector):
        return selector(output)
    if selector is not None:
        try:
            return output[selector]
        except (KeyError, IndexError, TypeError) as err:
            keys = list(output.keys()) if hasattr(output, "keys") else f"{len(output)} items"
            raise SycamError(f"model output has no entry {selector!r} (it has {keys})") from err
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "keys"):
        if "logits" in output.keys():
            return output["logits"]
        raise SycamError(f"model returned a mapping with keys {list(output.keys())}; "
                         "say which one holds the scores with output=KEY")
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise SycamError(f"cannot find the scores in a model output of type {type(output).__name__}; "
                     "pass output=KEY or a callable")
