"""Metrics for object-detector explanations (SSGrad-CAM / SSGrad-CAM++ evaluation).

One batch row is one explained instance (:meth:`sycam.evidence.detection.DetectionExplanation.batch`
builds it): ``batch.x`` the image the detector sees (floats in [0, 1]), ``batch.boxes[i]`` the
instance's box ``(1, 4)``, ``batch.masks`` its instance mask (optional), ``batch.labels`` its class
(-1: any). Metric names follow the SSGrad-CAM++ poster (Yamauchi, CVPRW 2024):

* ``det_pointing_box`` P(b) / ``det_pointing_mask`` P(m): hit if the map's maximum lies in the
  instance's box / mask (no tolerance);
* ``det_energy_box`` eP(b) / ``det_energy_mask`` eP(m): share of the map's energy inside them;
* ``det_deletion`` / ``det_insertion``: RISE curves where the score of a perturbed image is the
  detector's score of the instance, re-matched at every step: the detection with the best IoU
  (>= ``iou``, same label) against the instance's box; 0 when nothing matches any more.

``model_fn`` for the curves is the detector itself (``images (m, 3, H, W) -> list of dicts``),
run under ``no_grad`` in chunks of ``batch_size``. The poster's two deletion/insertion columns
("score = s1", "score = s2") are not defined in the text available; ``score="score"`` uses the
detection score, ``score="iou_score"`` multiplies it by the IoU with the instance's box (the
box part of D-RISE's similarity).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..data.batch import Batch
from ..evidence.detection import MATCH_RULES, match_detections, parse_detections
from .base import MetricError, Resources
from .faithfulness import Deletion, Insertion
from .localisation import EnergyPointingGame, PointingGame

DETECTION_SCORES = ("score", "iou_score")


class DetectionPointingGame(PointingGame):
    """P(b) (``region="box"``) or P(m) (``region="mask"``): 1 if the map's maximum (first argmax at
    input resolution) lies inside the explained instance's box / mask, else 0; a constant map
    scores 0, an empty region NaN. ``tolerance`` (px) widens the region as in the classic game."""

    name = "det_pointing_box"

    def __init__(self, region: str = "box", tolerance: int = 0):
        if region not in ("box", "mask"):
            raise MetricError(f"region must be 'box' or 'mask', got {region!r}")
        super().__init__(tolerance=tolerance, region=region)
        self.needs = frozenset({"boxes" if region == "box" else "masks"})


class DetectionEnergyPointingGame(EnergyPointingGame):
    """eP(b) / eP(m): sum of the map inside the instance's box / mask over the sum of the map."""

    name = "det_energy_box"

    def __init__(self, region: str = "box"):
        if region not in ("box", "mask"):
            raise MetricError(f"region must be 'box' or 'mask', got {region!r}")
        super().__init__(region=region)
        self.needs = frozenset({"boxes" if region == "box" else "masks"})


def instance_scores(detections, boxes: Tensor, labels: Tensor | None, iou: float = 0.5, match: str = "iou",
                    score: str = "score") -> Tensor:
    """``(m, r)``: for each image's detections and each of ``r`` reference boxes ``(r, 4)``
    (labels ``(r,)``, -1 = any), the score of the matching detection (0 if none)."""
    dets = parse_detections(detections)
    out = torch.zeros(len(dets), boxes.shape[0])
    for i, d in enumerate(dets):
        idx, ov = match_detections(d["boxes"], d["scores"], d.get("labels"), boxes, labels, iou, match)
        found = idx >= 0
        s = d["scores"].detach().float().cpu()[idx.clamp_min(0).cpu()] if len(d["scores"]) else torch.zeros(len(idx))
        if score == "iou_score":
            s = s * ov.float().cpu()
        out[i] = torch.where(found.cpu(), s, torch.zeros_like(s))
    return out


class _DetectionCurve:
    """Deletion/insertion whose score is the re-matched instance's detection score.

    The perturbation schedule, substrates, chunking and AUC are those of
    :class:`~sycam.metrics.faithfulness.Deletion` / ``Insertion``; only the score differs: the
    curve machinery is run with one pseudo-class per batch row, whose logit is the row's
    instance score on the perturbed image.
    """

    needs = frozenset({"model_fn", "boxes"})
    reads_detections = True     # model_fn returns a detector's {boxes, scores, labels} per image

    def __init__(self, steps: int = 20, substrate=None, iou: float = 0.5, match: str = "iou",
                 score: str = "score"):
        if score not in DETECTION_SCORES:
            raise MetricError(f"score must be one of {DETECTION_SCORES}, got {score!r}")
        if match not in MATCH_RULES:
            raise MetricError(f"match must be one of {MATCH_RULES}, got {match!r}")
        super().__init__(steps=steps, substrate=substrate, score="logit")   # type: ignore[call-arg]
        self.iou, self.match, self.instance_score = float(iou), match, score

    def compute(self, maps: Tensor, batch: Batch, res: Resources) -> Tensor:
        frac, curve = self.detection_curves(maps, batch, res.model_fn, res.batch_size)
        return torch.trapezoid(curve, frac, dim=-1)

    def detection_curves(self, maps: Tensor, batch: Batch, model_fn, batch_size: int | None = None
                         ) -> tuple[Tensor, Tensor]:
        """``(fractions (P,), scores (n, b, P))``: the instance's score after each step."""
        if any(b.shape[0] != 1 for b in batch.boxes):
            raise MetricError("detection metrics need exactly one box per row (the explained instance); "
                              "use DetectionExplanation.batch()")
        refs = torch.cat([b.reshape(1, 4) for b in batch.boxes]).float()
        labels = batch.labels.long()
        rows = replace(batch, labels=torch.arange(len(batch), device=batch.x.device))

        def row_scores(x: Tensor) -> Tensor:   # (m, b): each reference row's instance score
            return instance_scores(model_fn(x), refs.to(x.device), labels.to(x.device), self.iou, self.match,
                                   self.instance_score).to(x.device)

        return self.curves(maps, rows, row_scores, batch_size)   # type: ignore[attr-defined]


class DetectionDeletion(_DetectionCurve, Deletion):
    """Deletion AUC for detectors (lower is better): pixels removed in decreasing order of the map
    (substrate 0 = black, as detectors take [0, 1] images), the instance's score re-matched by IoU."""

    name = "det_deletion"


class DetectionInsertion(_DetectionCurve, Insertion):
    """Insertion AUC for detectors (higher is better): pixels of the image inserted into its RISE
    blur in decreasing order of the map, the instance's score re-matched by IoU at every step."""

    name = "det_insertion"


#: name -> factory, registered by :mod:`sycam.metrics.registry`
DETECTION_METRICS = {
    "det_pointing_box": lambda **p: DetectionPointingGame(**{"region": "box", **p}),
    "det_pointing_mask": lambda **p: DetectionPointingGame(**{"region": "mask", **p}),
    "det_energy_box": lambda **p: DetectionEnergyPointingGame(**{"region": "box", **p}),
    "det_energy_mask": lambda **p: DetectionEnergyPointingGame(**{"region": "mask", **p}),
    "det_deletion": DetectionDeletion,
    "det_insertion": DetectionInsertion,
}
