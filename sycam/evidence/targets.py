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

Targets on dense outputs: a target with ``dense_output = True`` (:class:`SegmentationTarget`)
reads per-pixel scores (b, classes, H, W) instead of (b, classes) logits.

Per-image targets: what a target reads off the unperturbed output (the top-1 class when no class
is given, the pixels predicted as a class) is fixed once per image by :func:`fix_target`, and
:func:`target_rows` gives the target of rows that copy images (perturbed, noisy or ablated
copies: the perturbation terminals, the noise and Hessian passes). A target class takes part by
a ``classes`` field (:class:`ClassLogit` and its siblings), or by the methods
``fixed(output) -> target`` and ``rows(index) -> target``; one that depends on where things are
in the image (a mask) also defines ``in_frame(transform) -> target``, the target for an input
seen through a geometric ``transform`` (test-time augmentation, :mod:`sycam.methods.smoothing`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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

    def fixed(self, logits: Tensor) -> PerSample:
        if len(self.targets) != logits.shape[0]:
            raise SycamError(f"{len(self.targets)} targets for a batch of {logits.shape[0]} images")
        return self

    def rows(self, index: Tensor) -> PerSample:
        return PerSample([self.targets[i] for i in index.tolist()])


def box_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(b, H, W) bool: pixel (row y, column x) is inside box (x0, y0, x1, y1) when x0 <= x < x1 and
    y0 <= y < y1; ``boxes`` (b, 4)."""
    x = torch.arange(size[1], device=boxes.device, dtype=boxes.dtype)
    y = torch.arange(size[0], device=boxes.device, dtype=boxes.dtype)
    inside_x = (x >= boxes[:, 0:1]) & (x < boxes[:, 2:3])                    # (b, W)
    inside_y = (y >= boxes[:, 1:2]) & (y < boxes[:, 3:4])                    # (b, H)
    return inside_y[:, :, None] & inside_x[:, None, :]


def _region_error(what: str, images: list[int]) -> SycamError:
    which = f"image {images[0]}" if len(images) == 1 else f"images {images}"
    return SycamError(f"the {what} of {which} is empty: class scores summed over no pixel are 0, with no "
                      "gradient; give a mask (or box) holding at least one pixel of the model's output")


@dataclass
class SegmentationTarget:
    """S = sum_ij M_ij * y_c,ij: class c's per-pixel scores y_c summed over a region M (grad-cam's
    SemanticSegmentationTarget), for models whose output is (b, classes, H, W); a torchvision
    FCN / DeepLabV3's ``{"out": ...}`` is found without ``output=``.

    ``classes``: a class index, or one per image. ``mask``: (H, W) for every image or (b, H, W),
    at the output's size (a torchvision segmentation model's is the input's); bool, or weights
    that multiply the scores. ``box``: (x0, y0, x1, y1) in output pixels (columns x0 <= x < x1,
    rows y0 <= y < y1), or one per image (b, 4), instead of a mask. Neither: the pixels the model
    assigns to the class (argmax over classes) on the unperturbed image, as grad-cam's
    segmentation tutorial builds its mask. An empty region is an error.
    """

    classes: int | Sequence[int] | Tensor
    mask: Any = None
    box: Any = None
    dense_output: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.classes is None:
            raise SycamError("SegmentationTarget needs a class: an index, or one per image")
        if self.mask is not None and self.box is not None:
            raise SycamError("SegmentationTarget takes a mask or a box, not both")
        if self.mask is not None:
            self.mask = torch.as_tensor(self.mask)
            if self.mask.dim() not in (2, 3) or self.mask.dtype.is_complex:
                raise SycamError(f"a segmentation mask is (H, W) for every image or (b, H, W), real or bool; got "
                                 f"shape {tuple(self.mask.shape)} ({self.mask.dtype})")
            if not bool(torch.isfinite(self.mask.float()).all()):
                raise SycamError("the segmentation mask holds non-finite values")
        if self.box is not None:
            self.box = torch.as_tensor(self.box, dtype=torch.float64)
            if self.box.shape[-1:] != (4,) or self.box.dim() > 2 or not bool(torch.isfinite(self.box).all()):
                raise SycamError(f"a box is (x0, y0, x1, y1), or one per image (b, 4), finite; got "
                                 f"{self.box.tolist()}")

    def region(self, scores: Tensor) -> Tensor:
        """M (b, H, W) for per-pixel ``scores`` (b, classes, H, W), checked against them."""
        b, _, H, W = scores.shape
        if self.mask is not None:
            m = self.mask.to(scores.device)
            if tuple(m.shape[-2:]) != (H, W):
                raise SycamError(f"the segmentation mask is {m.shape[-2]}x{m.shape[-1]} (HxW), the model's output "
                                 f"{H}x{W}: give the mask at the output's size")
            if m.dim() == 3 and m.shape[0] != b:
                raise SycamError(f"{m.shape[0]} segmentation masks for a batch of {b} images: give one (H, W) "
                                 "mask, or one per image")
            m, what = m.to(scores.dtype).expand(b, H, W), "mask"
        elif self.box is not None:
            box = self.box.to(scores.device)
            box = box.expand(b, 4) if box.dim() == 1 or box.shape[0] == 1 else box
            if box.shape[0] != b:
                raise SycamError(f"{box.shape[0]} boxes for a batch of {b} images: give one box, or one per image")
            m, what = box_mask(box, (H, W)).to(scores.dtype), "box"
        else:
            c = _classes(self.classes, scores)
            m = (scores.detach().argmax(dim=1) == c[:, None, None]).to(scores.dtype)
            what = f"region the model assigns to class {c.unique().tolist()}"
        empty = (m == 0).flatten(1).all(dim=1)
        if bool(empty.any()):
            raise _region_error(what, empty.nonzero()[:, 0].tolist())
        return m

    def __call__(self, scores: Tensor) -> Tensor:
        if scores.dim() != 4:
            raise SycamError(f"SegmentationTarget reads per-pixel scores (b, classes, H, W); the model gave shape "
                             f"{tuple(scores.shape)}: use it with a segmentation model")
        c = _classes(self.classes, scores)
        y_c = scores.gather(1, c[:, None, None, None].expand(-1, 1, *scores.shape[2:]))[:, 0]
        return (y_c * self.region(scores)).sum(dim=(1, 2))

    def fixed(self, scores: Tensor) -> SegmentationTarget:
        """Classes and region per image, read once off the unperturbed ``scores``."""
        return dataclasses.replace(self, classes=_classes(self.classes, scores), mask=self.region(scores), box=None)

    def rows(self, index: Tensor) -> SegmentationTarget:
        classes = torch.as_tensor(self.classes).reshape(-1)
        if classes.numel() > 1:
            classes = classes[index.to(classes.device)]
        mask = self.mask
        if mask is not None and mask.dim() == 3:
            mask = mask[index.to(mask.device)]
        box = self.box
        if box is not None and box.dim() == 2 and box.shape[0] > 1:
            box = box[index.to(box.device)]
        return dataclasses.replace(self, classes=classes, mask=mask, box=box)

    def in_frame(self, transform: Callable[[Tensor], Tensor]) -> SegmentationTarget:
        """This (fixed) target for the input seen through ``transform``, a map of (..., H, W) tensors
        from the image's frame to the transformed one (e.g. a horizontal flip): the mask moves with it."""
        if self.mask is None:
            raise SycamError("a segmentation target moves into another frame once its region is fixed "
                             "(fix_target(target, output))")
        return dataclasses.replace(self, mask=transform(self.mask))


@dataclass
class EmbeddingSimilarity:
    """S = cos(e, r) = <e, r> / (|e| |r|): the cosine similarity of the model's output embedding
    e (b, d) to a reference embedding r, (d,) for every image or (b, d) (grad-cam's
    SimilarityToConceptTarget, from its embeddings tutorial). A zero reference is refused; an
    image whose embedding is 0 has no direction: its score is NaN and its map reported invalid.
    """

    reference: Any

    def __post_init__(self) -> None:
        ref = torch.as_tensor(self.reference)
        if ref.dtype.is_complex or ref.dtype == torch.bool:
            raise SycamError(f"a reference embedding holds real numbers, not {ref.dtype}")
        ref = ref if ref.dtype.is_floating_point else ref.float()
        if ref.dim() == 2 and ref.shape[0] == 1:
            ref = ref[0]
        if ref.dim() not in (1, 2) or ref.shape[-1] == 0:
            raise SycamError(f"a reference embedding is (d,) for every image or (b, d), one per image; got shape "
                             f"{tuple(ref.shape)}")
        if not bool(torch.isfinite(ref).all()):
            raise SycamError("the reference embedding holds non-finite values")
        zero = (ref.reshape(-1, ref.shape[-1]) == 0).all(dim=1)
        if bool(zero.any()):
            raise SycamError("a reference embedding is all zeros: it has no direction to compare with "
                             f"(rows {zero.nonzero()[:, 0].tolist()})")
        self.reference = ref

    def __call__(self, embeddings: Tensor) -> Tensor:
        if embeddings.dim() != 2:
            raise SycamError(f"EmbeddingSimilarity reads embeddings (b, d); the model gave shape "
                             f"{tuple(embeddings.shape)}")
        b, d = embeddings.shape
        ref = self.reference.to(embeddings.device, embeddings.dtype)
        if ref.shape[-1] != d:
            raise SycamError(f"the reference embedding has {ref.shape[-1]} values, the model's output embedding "
                             f"{d}: compute the reference with the same model (and output)")
        if ref.dim() == 2 and ref.shape[0] != b:
            raise SycamError(f"{ref.shape[0]} reference embeddings for a batch of {b} images: give one, or one "
                             "per image")
        return (embeddings * ref).sum(dim=1) / (embeddings.norm(dim=1) * ref.norm(dim=-1))

    def rows(self, index: Tensor) -> EmbeddingSimilarity:
        if self.reference.dim() == 1:
            return self
        return EmbeddingSimilarity(self.reference[index.to(self.reference.device)])


def reads_raw_output(target: Any) -> bool:
    """True for a target that reads the model's raw output instead of logits (see the module docs)."""
    return bool(getattr(target, "reads_raw_output", False))


def reads_dense_output(target: Any) -> bool:
    """True for a target that reads per-pixel scores (b, classes, H, W) (see the module docs)."""
    return bool(getattr(target, "dense_output", False))


def _has_classes(target: Any) -> bool:
    return dataclasses.is_dataclass(target) and any(f.name == "classes" for f in dataclasses.fields(target))


def fix_target(target: Any, output: Tensor) -> Any:
    """``target`` with what it reads off the unperturbed ``output`` fixed per image (the top-1
    class where none is given, a segmentation target's predicted pixels), so that copies of an
    image (masked, noisy, rescaled) are scored for the same thing."""
    if hasattr(target, "fixed"):
        return target.fixed(output)
    if _has_classes(target):
        return dataclasses.replace(target, classes=_classes(target.classes, output))
    return target


def target_rows(target: Any, index: Tensor) -> Any:
    """The fixed ``target`` (:func:`fix_target`) for output rows that copy images ``index`` (one
    entry per row) of the batch it was fixed on."""
    if hasattr(target, "rows"):
        return target.rows(index)
    if _has_classes(target):
        classes = torch.as_tensor(target.classes).reshape(-1)
        return dataclasses.replace(target, classes=classes[index.to(classes.device)] if classes.numel() > 1
                                   else classes)
    return target


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
        for key in ("logits", "out"):     # transformers' ModelOutput; torchvision's segmentation models
            if key in output.keys():
                return output[key]
        raise SycamError(f"model returned a mapping with keys {list(output.keys())}; "
                         "say which one holds the scores with output=KEY")
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise SycamError(f"cannot find the scores in a model output of type {type(output).__name__}; "
                     "pass output=KEY or a callable")
