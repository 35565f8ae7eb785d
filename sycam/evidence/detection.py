"""Object detectors: explain one detected instance (SSGrad-CAM, SSGrad-CAM++, any gradient CAM).

A detector (torchvision's Faster/Mask R-CNN, RetinaNet, FCOS, SSD, SSDlite, or any model that
returns a list of ``{"boxes", "scores", "labels"}`` dicts, one per image) is explained through
a :class:`DetectionTarget`: for each batch row it finds the detection that best matches a
reference box (IoU >= ``iou``, same label if given) and returns that detection's score, which
stays differentiable with respect to the backbone features (softmax/sigmoid scores indexed
by the post-processing's filtering, NMS and top-k). Capture reads the raw output through the
target (``reads_raw_output``), so one forward and one backward give A and G as for a classifier::

    from sycam.evidence.detection import DetectionTarget, default_layers
    cam = sycam.CAM("ssgradcam", detector, layers=default_layers(detector))
    maps = cam(images, targets=DetectionTarget(boxes))      # boxes (b, 4): one instance per image

**One instance per row.** The gradient of a batch is taken once, of the sum of the rows'
scores, so a row can explain only one instance. Several instances of one image are explained
by repeating the image, one row per (image, instance): :func:`explain_detections` does this in
chunks (one forward + one backward per chunk of rows, instead of one forward and one backward
per instance). A reference that no detection matches gives a NaN score: its map is reported
invalid (``Explanation.valid``), never a crash.

**Geometry.** torchvision detectors resize (``min_size``/``max_size`` or SSD's fixed size) and
pad (to a multiple of 32) the images inside ``model.transform``. The target's
:meth:`DetectionTarget.input_frame` recomputes that geometry and maps each layer map back to
the original image exactly (one bilinear resampling, the padding cropped), so maps come back
at the size of the images given, aligned with the boxes (which detectors also report in
original image coordinates).

**Layers** (:func:`default_layers`): Faster/Mask R-CNN, RetinaNet, FCOS: ``backbone.body.layer4``
(the deepest backbone stage that feeds the FPN; the FPN's per-level outputs are
``backbone.fpn.layer_blocks.<i>``, and ``backbone.body``/``backbone.fpn`` themselves return
dicts, not tensors); SSD300-VGG16: ``backbone.features`` (conv4_3, 38x38); SSDlite:
``backbone.features.1``. Images are floats in [0, 1]: detectors normalise internally.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import Batch
from ..errors import SycamError
from .layers import resolve_layers

MATCH_RULES = ("iou", "score")


# ---------------------------------------------------------------------- boxes and matching
def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``(n, m)`` of boxes ``a (n, 4)`` and ``b (m, 4)`` (x0, y0, x1, y1); 0 where the union is empty."""
    a, b = a.float(), b.float()
    area = lambda t: (t[:, 2] - t[:, 0]).clamp_min(0) * (t[:, 3] - t[:, 1]).clamp_min(0)  # noqa: E731
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def parse_detections(output: Any) -> list[Mapping[str, Tensor]]:
    """A detector's output as a list of per-image mappings with ``boxes`` and ``scores`` (``labels`` optional)."""
    if isinstance(output, Mapping):
        raise SycamError("detector output is a single mapping; expected one {boxes, scores, labels} dict per image "
                         "(torchvision's list of dicts)")
    if not isinstance(output, (list, tuple)) or not all(isinstance(d, Mapping) for d in output):
        raise SycamError(f"a DetectionTarget reads a list of per-image {{boxes, scores, labels}} dicts, got "
                         f"{type(output).__name__}; is the model a detector in eval mode?")
    for d in output:
        if "boxes" not in d or "scores" not in d:
            raise SycamError(f"detections need 'boxes' and 'scores', got keys {sorted(d.keys())}")
    return list(output)


def match_detections(boxes: Tensor, scores: Tensor, labels: Tensor | None, refs: Tensor,
                     ref_labels: Tensor | None = None, iou: float = 0.5, rule: str = "iou") -> tuple[Tensor, Tensor]:
    """For each reference box ``refs (r, 4)``, the index of the matching detection (-1 if none) and its IoU.

    Candidates: IoU >= ``iou`` and, where ``ref_labels (r,)`` is >= 0, the same label. ``rule="iou"``
    takes the best-overlapping candidate (ties: the higher score, then the first detection);
    ``"score"`` the highest-scoring one (ties: the higher IoU, then the first). A reference with
    a non-finite coordinate matches nothing.
    """
    if rule not in MATCH_RULES:
        raise SycamError(f"match must be one of {MATCH_RULES}, got {rule!r}")
    r, dev = refs.shape[0], boxes.device
    none = (torch.full((r,), -1, dtype=torch.long, device=dev), torch.zeros(r, device=dev))
    if boxes.shape[0] == 0 or r == 0:
        return none
    refs = refs.reshape(r, 4).to(dev)
    overlap = box_iou(refs, boxes.detach())                                   # (r, n)
    ok = (overlap >= iou) & torch.isfinite(refs).all(1, keepdim=True)
    if ref_labels is not None:
        want = ref_labels.reshape(-1).to(dev)
        if bool((want >= 0).any()):
            if labels is None:
                raise SycamError("a label was given but the detections have no 'labels'")
            ok &= (want[:, None] < 0) | (labels.to(dev)[None, :] == want[:, None])
    s = scores.detach().float().reshape(1, -1).expand_as(overlap)
    first, second = (overlap, s) if rule == "iou" else (s, overlap)
    neg = torch.tensor(-torch.inf, device=dev)
    first = torch.where(ok, first, neg)
    tied = ok & (first == first.amax(1, keepdim=True))
    idx = torch.where(tied, second, neg).argmax(1)          # argmax gives the first maximum
    found = ok.any(1)
    idx = torch.where(found, idx, torch.full_like(idx, -1))
    ov = overlap.gather(1, idx.clamp_min(0)[:, None])[:, 0]
    ov = torch.where(found, ov, torch.zeros_like(ov))
    return idx, ov


def match_detection(boxes: Tensor, scores: Tensor, labels: Tensor | None, ref: Tensor, label: int | None,
                    iou: float = 0.5, rule: str = "iou") -> tuple[int, float]:
    """:func:`match_detections` for one reference box ``ref (4,)`` and label (None / -1: any)."""
    idx, ov = match_detections(boxes, scores, labels, ref.reshape(1, 4),
                               None if label is None else torch.tensor([int(label)]), iou, rule)
    return int(idx[0]), float(ov[0])


def _per_row(values: Any, n: int, what: str, dtype: torch.dtype) -> Tensor | None:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=dtype)
    if what == "boxes":
        if t.dim() == 1:
            t = t.reshape(1, 4)
        if t.dim() != 2 or t.shape[1] != 4:
            raise SycamError(f"reference boxes must be (rows, 4) x0,y0,x1,y1, got shape {tuple(t.shape)}")
    else:
        t = t.reshape(-1)
    if t.shape[0] == 1 and n > 1:
        t = t.expand(n, *t.shape[1:])
    if t.shape[0] != n:
        raise SycamError(f"{t.shape[0]} reference {what} for {n} images: give one per batch row "
                         "(several instances of one image: repeat the image, see explain_detections)")
    return t


@dataclass
class Matches:
    """Per batch row: the matched detection's index (-1: none), IoU, box, label and score (NaN: none)."""

    index: Tensor    # (b,) long
    iou: Tensor      # (b,)
    boxes: Tensor    # (b, 4), NaN where unmatched
    labels: Tensor   # (b,) long, -1 where unmatched (or the detector gives no labels)
    scores: Tensor   # (b,), NaN where unmatched

    @property
    def found(self) -> Tensor:
        return self.index >= 0


@dataclass
class DetectionTarget:
    """S = the score of the detected instance that matches each row's reference box.

    ``boxes``: ``(b, 4)`` one reference box per batch row (x0, y0, x1, y1 in the pixels of the
    images given to the model; one ``(4,)`` box applies to every row; a NaN row explains nothing).
    ``labels``: ``(b,)`` or one class; None (or -1) accepts any label. ``iou``: the IoU a detection
    needs to match. ``match``: ``"iou"`` (best overlap) or ``"score"`` (highest score among matches).
    After each call, :attr:`matches` says which detection each row explained; an unmatched row
    scores NaN (its map is reported invalid).
    """

    boxes: Any
    labels: Any = None
    iou: float = 0.5
    match: str = "iou"
    reads_raw_output: ClassVar[bool] = True
    matches: Matches | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.match not in MATCH_RULES:
            raise SycamError(f"match must be one of {MATCH_RULES}, got {self.match!r}")
        if not 0.0 <= float(self.iou) <= 1.0:
            raise SycamError(f"iou must be in [0, 1], got {self.iou}")

    def __call__(self, output: Any) -> Tensor:
        dets = parse_detections(output)
        n = len(dets)
        refs = _per_row(self.boxes, n, "boxes", torch.float32)
        labels = _per_row(self.labels, n, "labels", torch.long)
        scores, found = [], []
        for i, d in enumerate(dets):
            lab = None if labels is None else int(labels[i])
            idx, ov = match_detection(d["boxes"], d["scores"], d.get("labels"), refs[i], lab, self.iou, self.match)
            if idx >= 0:
                scores.append(d["scores"][idx])
            else:   # NaN, still attached to the graph (zero gradient) so other rows keep theirs
                scores.append(d["scores"].sum() * 0.0 + math.nan)
            found.append((idx, ov))
        out = torch.stack(scores)
        self.matches = _matches(dets, found, out.device)
        return out

    def input_frame(self, model: nn.Module, x: Tensor) -> Callable[[Tensor], Tensor] | None:
        """Maps layer maps back to the input frame (see :func:`detector_frame`)."""
        return detector_frame(model, x)


def _matches(dets: Sequence[Mapping[str, Tensor]], found: list[tuple[int, float]], device) -> Matches:
    b = len(dets)
    index = torch.tensor([i for i, _ in found], dtype=torch.long, device=device)
    iou = torch.tensor([o for _, o in found], dtype=torch.float32, device=device)
    boxes = torch.full((b, 4), math.nan, device=device)
    labels = torch.full((b,), -1, dtype=torch.long, device=device)
    scores = torch.full((b,), math.nan, device=device)
    for r, (i, _) in enumerate(found):
        if i >= 0:
            boxes[r] = dets[r]["boxes"][i].detach().float()
            scores[r] = dets[r]["scores"][i].detach().float()
            if "labels" in dets[r]:
                labels[r] = dets[r]["labels"][i]
    return Matches(index, iou, boxes, labels, scores)


# ---------------------------------------------------------------------- geometry
@dataclass
class DetectorFrame:
    """The resize + pad of a detector's transform, inverted for layer maps.

    Image ``i`` of the batch was resized to ``sizes[i]`` and padded (bottom/right) to ``padded``;
    layer maps cover the padded image. ``__call__`` resamples each map at the centres of the
    original image's pixels (bilinear, half-pixel centres, edges clamped): with no resize and no
    padding it equals plain bilinear upsampling.
    """

    sizes: list[tuple[int, int]]
    padded: tuple[int, int]
    original: tuple[int, int]

    def __call__(self, maps: Tensor) -> Tensor:
        b = maps.shape[0]
        if b != len(self.sizes):
            raise SycamError(f"{b} maps for a frame of {len(self.sizes)} images")
        H, W = self.original
        hp, wp = self.padded
        dev, dt = maps.device, maps.dtype if maps.is_floating_point() else torch.float32
        ys = (torch.arange(H, device=dev, dtype=torch.float64) + 0.5) / H
        xs = (torch.arange(W, device=dev, dtype=torch.float64) + 0.5) / W
        sizes = torch.tensor(self.sizes, device=dev, dtype=torch.float64)          # (b, 2) resized h, w
        gy = 2 * ys[None, :] * sizes[:, :1] / hp - 1                                # (b, H)
        gx = 2 * xs[None, :] * sizes[:, 1:] / wp - 1                                # (b, W)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1).to(dt)  # (b, H, W, 2)
        out = F.grid_sample(maps.to(dt)[:, None], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out[:, 0]


def detector_frame(model: nn.Module, x: Tensor) -> DetectorFrame | None:
    """The geometry of ``model.transform`` (torchvision's GeneralizedRCNNTransform) on images
    ``x (b, 3, H, W)``, or None for a model without one (its layer maps cover the input as is)."""
    transform = getattr(model, "transform", None)
    if transform is None or not hasattr(transform, "batch_images"):
        return None
    with torch.no_grad():
        images, _ = transform(list(x))
    return DetectorFrame([tuple(map(int, s)) for s in images.image_sizes],
                         (int(images.tensors.shape[-2]), int(images.tensors.shape[-1])),
                         (int(x.shape[-2]), int(x.shape[-1])))


# ---------------------------------------------------------------------- layers
def default_layers(model: nn.Module) -> str:
    """A sensible layer to explain for a torchvision detector (see the module docs)."""
    backbone = getattr(model, "backbone", None)
    body = getattr(backbone, "body", None)
    if body is not None and getattr(body, "return_layers", None):
        return "backbone.body." + list(body.return_layers)[-1]
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential):
        kids = list(features.children())
        if kids and all(isinstance(k, nn.Sequential) for k in kids):   # SSDlite: two stages, both feed heads
            return f"backbone.features.{len(kids) - 1}"
        return "backbone.features"                                      # SSD300-VGG16: up to conv4_3
    raise SycamError(f"no default layer for {type(model).__name__}; name a backbone module whose output is a "
                     "(b, k, h, w) tensor (`sycam layers` lists them)")


# ---------------------------------------------------------------------- running and explaining
def _as_batches(images: Tensor | Sequence[Tensor]) -> tuple[list[Tensor], bool]:
    """Images as (b, 3, H, W) batches of equal size; True if the input was a list."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4:
            raise SycamError(f"images must be (b, 3, H, W) or a list of (3, H, W), got {tuple(images.shape)}")
        return [images], False
    images = list(images)
    if not images or not all(isinstance(t, Tensor) and t.dim() == 3 for t in images):
        raise SycamError("images must be a (b, 3, H, W) tensor or a list of (3, H, W) tensors")
    return [t[None] for t in images], True


def detect(model: nn.Module, images: Tensor | Sequence[Tensor], min_score: float = 0.0) -> list[dict[str, Tensor]]:
    """Run the detector once (no gradients) and list its detections per image, best first:
    ``[{"boxes": (n, 4), "scores": (n,), "labels": (n,)}, ...]``, detached, scores >= ``min_score``.
    Pick instances from these and pass their boxes (and labels) to :class:`DetectionTarget`."""
    if model.training:
        raise SycamError("the detector is in training mode (it would expect targets): call model.eval()")
    batches, _ = _as_batches(images)
    out = []
    with torch.no_grad():
        for x in batches:
            for d in parse_detections(model(x)):
                keep = d["scores"] >= min_score
                order = d["scores"][keep].argsort(descending=True, stable=True)
                out.append({k: v[keep][order].detach() for k, v in d.items() if isinstance(v, Tensor)
                            and v.shape[:1] == d["scores"].shape})
    return out


@dataclass
class DetectionExplanation:
    """Maps of instances, one row per (image, instance)."""

    maps: Tensor            # (N, H, W) in [0, 1]
    valid: Tensor           # (N,) False where no detection matched (or the map was not finite)
    image_index: Tensor     # (N,) which image each row explains
    boxes: Tensor           # (N, 4) reference boxes
    labels: Tensor          # (N,) reference labels (-1: any)
    matches: Matches        # the detection each row explained

    def __len__(self) -> int:
        return int(self.image_index.numel())

    def batch(self, images: Tensor, masks: Tensor | None = None, boxes: str = "matched"):
        """A :class:`~sycam.data.batch.Batch` (one row per instance) for the detection metrics.

        ``images``: the (b, 3, H, W) images explained (floats in [0, 1], the detector's input);
        ``masks``: optional (N, H, W) instance masks (for P(m), eP(m)); ``boxes``: the ``"matched"``
        detection's box (the reference where unmatched) or the ``"reference"`` box. Labels are the
        matched labels (the reference's where unmatched).
        """
        if boxes not in ("matched", "reference"):
            raise SycamError(f"boxes must be 'matched' or 'reference', got {boxes!r}")
        x = images[self.image_index.to(images.device)]
        found = self.matches.found.to(self.boxes.device)
        bx = torch.where(found[:, None], self.matches.boxes.to(self.boxes.device), self.boxes) \
            if boxes == "matched" else self.boxes
        lab = torch.where(found, self.matches.labels.to(self.labels.device), self.labels)
        return Batch(x, x, lab.to(x.device), None if masks is None else masks.to(x.device).bool(),
                     [b[None].to(x.device) for b in bx])


def instance_rows(boxes: Tensor | Sequence[Tensor], labels: Tensor | Sequence[Any] | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image reference boxes ``[(n_i, 4), ...]`` (or ``(b, 4)``: one per image) and labels ->
    one row per instance: ``(image_index (N,), boxes (N, 4), labels (N,), -1 = any label)``."""
    if isinstance(boxes, Tensor) and boxes.dim() == 2:      # one box per image
        boxes = list(boxes[:, None])
        if labels is not None:
            labels = list(torch.as_tensor(labels).reshape(-1))
    per_image = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    index = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(per_image)]
                      or [torch.zeros(0, dtype=torch.long)])
    flat = torch.cat(per_image) if per_image else torch.zeros(0, 4)
    labels = [None] * len(per_image) if labels is None else list(labels)
    if len(labels) != len(per_image):
        raise SycamError(f"labels for {len(labels)} images, boxes for {len(per_image)}")
    lab = []
    for lb, b in zip(labels, per_image):
        t = torch.tensor([-1]) if lb is None else torch.as_tensor(lb, dtype=torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(len(b))
        if t.numel() != len(b):
            raise SycamError(f"{t.numel()} labels for {len(b)} boxes of one image")
        lab.append(t)
    lab = torch.cat(lab) if lab else torch.zeros(0, dtype=torch.long)
    return index, flat, lab


def explain_detections(cam, images: Tensor | Sequence[Tensor], boxes=None, labels=None, *,
                       min_score: float = 0.5, iou: float = 0.5, match: str = "iou", batch_size: int = 8
                       ) -> DetectionExplanation | list[DetectionExplanation]:
    """Explain detected instances with ``cam`` (a :class:`sycam.CAM` bound to a detector).

    ``boxes``: per image ``(n_i, 4)`` reference boxes (a ``(b, 4)`` tensor: one per image) and
    ``labels`` per image (None: any label); without ``boxes``, every detection with score >=
    ``min_score`` (one detector pass, :func:`detect`) is explained. Each instance is one row: its
    image is repeated, ``batch_size`` rows per forward + backward. ``images``: ``(b, 3, H, W)``
    or a list of ``(3, H, W)`` (one explanation per image is returned for a list: sizes may
    differ). A camera without layers gets :func:`default_layers`.
    """
    batches, is_list = _as_batches(images)
    if is_list:
        per = [None] * len(batches) if boxes is None else list(boxes)
        lab = [None] * len(batches) if labels is None else list(labels)
        if len(per) != len(batches) or len(lab) != len(batches):
            raise SycamError(f"{len(batches)} images but {len(per)} box sets and {len(lab)} label sets")
        return [explain_detections(cam, x, None if b is None else [b], None if lb is None else [lb],
                                   min_score=min_score, iou=iou, match=match, batch_size=batch_size)
                for x, b, lb in zip(batches, per, lab)]
    x = batches[0]
    if cam.layers is None:
        cam.layers = resolve_layers(cam.model, default_layers(cam.model))
    if boxes is None:
        dets = detect(cam.model, x, min_score)
        boxes, labels = [d["boxes"] for d in dets], [d.get("labels") for d in dets]
    index, ref, lab = instance_rows(boxes, labels)
    if index.numel() and int(index.max()) >= x.shape[0]:
        raise SycamError(f"boxes for {int(index.max()) + 1} images, but {x.shape[0]} images given")
    maps, valid, parts = [], [], []
    for s in range(0, len(index), batch_size):
        rows = slice(s, s + batch_size)
        target = DetectionTarget(ref[rows], lab[rows], iou=iou, match=match)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not finite.*")
            e = cam.explain(x[index[rows].to(x.device)], targets=target)
        maps.append(e.maps)
        valid.append(e.valid)
        parts.append(target.matches)
    if not parts:
        H, W = x.shape[-2:]
        empty = Matches(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, 4),
                        torch.zeros(0, dtype=torch.long), torch.zeros(0))
        return DetectionExplanation(torch.zeros(0, H, W), torch.zeros(0, dtype=torch.bool), index, ref, lab, empty)
    matches = Matches(*(torch.cat([getattr(m, f).cpu() for m in parts]) for f in
                        ("index", "iou", "boxes", "labels", "scores")))
    missed = int((~matches.found).sum())
    if missed:
        warnings.warn(f"{missed} of {len(index)} reference boxes matched no detection (IoU >= {iou}"
                      f"{', same label' if bool((lab >= 0).any()) else ''}): their maps are reported invalid",
                      stacklevel=2)
    return DetectionExplanation(torch.cat(maps), torch.cat(valid), index, ref, lab, matches)
