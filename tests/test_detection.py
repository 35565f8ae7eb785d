"""Detectors: the detection target, capture on raw outputs, maps in the image frame, detector metrics.

Random weights and small images keep it fast; the hand-built detectors make the scores known
functions of the features so targets, maps and metric curves have exact answers.
"""
import math

import pytest
import torch
from torch import nn

import sycam
from sycam.data.batch import Batch
from sycam.errors import EvidenceError, SycamError
from sycam.evidence.capture import capture
from sycam.evidence.detection import (
    DetectionTarget,
    DetectorFrame,
    default_layers,
    detect,
    detector_frame,
    explain_detections,
)
from sycam.kernels.postprocess import upsample
from sycam.metrics import get_metric
from sycam.metrics.detection import (
    DetectionDeletion,
    DetectionEnergyPointingGame,
    DetectionInsertion,
    DetectionPointingGame,
)

tv_det = pytest.importorskip("torchvision.models.detection")
from tiny import G0, G1, example_input  # noqa: E402
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone  # noqa: E402
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # noqa: E402


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---------------------------------------------------------------------- hand-built detectors
class LinearDetector(nn.Module):
    """Fixed boxes; detection j's score is sum(V_j * A) with A = feat(x) = x, so dS_j/dA = V_j."""

    def __init__(self, V, boxes, labels):
        super().__init__()
        self.feat = nn.Identity()
        self.register_buffer("V", torch.as_tensor(V, dtype=torch.float32))
        self.register_buffer("boxes", torch.as_tensor(boxes, dtype=torch.float32))
        self.register_buffer("labels", torch.as_tensor(labels))

    def forward(self, x):
        a = self.feat(x)
        s = torch.einsum("bkhw,nkhw->bn", a, self.V)
        return [{"boxes": self.boxes, "scores": s[i], "labels": self.labels} for i in range(x.shape[0])]


def ssgradcam_raw(A, G):
    """relu(sum_k mean_hw(G_k) * |G_k| / max_hw |G_k| * A_k), 0/0 -> 0, on (b, k, h, w)."""
    peak = G.abs().amax((2, 3), keepdim=True)
    space = torch.where(peak > 0, G.abs() / peak.clamp_min(1e-30), torch.zeros_like(G))
    return torch.relu((G.mean((2, 3), keepdim=True) * space * A).sum(1))


# boxes of a 2x2 image: detection 0 and 1 overlap the left column, 2 is elsewhere
BOXES = [[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 1.2, 2.0], [1.0, 0.0, 2.0, 1.0]]
LABELS = [1, 2, 1]


@pytest.fixture
def linear():
    zero = torch.zeros(2, 2, 2)
    V = torch.stack([torch.ones(2, 2, 2), torch.tensor([G0, G1]), zero + 0.5])   # detection 1 has G = (G0, G1)
    return LinearDetector(V, BOXES, LABELS).eval()


def test_target_matches_by_iou_label_and_rule(linear):
    x = example_input()
    # IoU with det 0 = 1, with det 1 = 2/2.4 = 0.833: det 0
    t = DetectionTarget([0.0, 0.0, 1.0, 2.0])
    s = t(linear(x))
    assert t.matches.index.tolist() == [0] and math.isclose(float(t.matches.iou), 1.0)
    assert torch.allclose(s, linear.V[0].mul(x[0]).sum()[None])
    # same reference, label 2: only det 1 qualifies
    t = DetectionTarget([0.0, 0.0, 1.0, 2.0], labels=2)
    t(linear(x))
    assert t.matches.index.tolist() == [1] and math.isclose(float(t.matches.iou), 1 / 1.2, rel_tol=1e-6)
    # rule "score": among IoU >= 0.5, the higher score (det 0 scores 17, det 1 scores 2)
    t = DetectionTarget([0.0, 0.0, 1.1, 2.0], match="score")
    t(linear(x))
    assert t.matches.index.tolist() == [0]
    # rule "iou": det 1 overlaps [0,0,1.1,2] best (2.2/2.4 > 2/2.2)
    t = DetectionTarget([0.0, 0.0, 1.1, 2.0])
    t(linear(x))
    assert t.matches.index.tolist() == [1]
    # threshold above every overlap: unmatched, NaN score
    t = DetectionTarget([0.0, 0.0, 1.1, 2.0], iou=0.95)
    assert torch.isnan(t(linear(x))).all() and t.matches.index.tolist() == [-1]


def test_ssgradcam_on_a_hand_built_detector_is_hand_computable(linear):
    """Detection 1's gradient is (G0, G1) of tests/tiny.py: the worked SSGrad-CAM map [[0.5, 0], [0, 2]]."""
    x = example_input()
    cam = sycam.CAM("ssgradcam", linear, layers="feat")
    e = cam.explain(x, targets=DetectionTarget([0.0, 0.0, 1.2, 2.0], labels=2))
    assert torch.allclose(e.layer_maps["feat"], torch.tensor([[[0.5, 0.0], [0.0, 2.0]]]))
    assert torch.allclose(e.maps, torch.tensor([[[0.25, 0.0], [0.0, 1.0]]]))
    assert e.logits is None and e.valid.tolist() == [True]
    assert math.isclose(float(e.scores[0]), float((linear.V[1] * x[0]).sum()), rel_tol=1e-6)
    assert hook_count(linear) == 0


def test_instances_of_one_image_get_their_own_gradients(linear):
    """Rows repeat the image; each row's map uses only its instance's gradient."""
    x = example_input()
    ex = explain_detections(sycam.CAM("ssgradcam", linear, layers="feat"), x,
                            boxes=[torch.tensor(BOXES)], labels=[torch.tensor(LABELS)])
    A = x.expand(3, -1, -1, -1)
    expected = ssgradcam_raw(A, linear.V)              # G of row j is V_j
    lo, hi = expected.amin((1, 2), keepdim=True), expected.amax((1, 2), keepdim=True)
    ok = expected.flatten(1).amax(1) > expected.flatten(1).amin(1)
    assert ex.image_index.tolist() == [0, 0, 0] and ex.matches.index.tolist() == [0, 1, 2]
    assert torch.allclose(ex.maps[ok], ((expected - lo) / (hi - lo))[ok], atol=1e-6)
    assert not torch.allclose(ex.maps[0], ex.maps[1])


def test_unmatched_reference_is_reported_invalid_not_a_crash(linear):
    x = example_input().expand(2, -1, -1, -1).clone()
    cam = sycam.CAM("ssgradcam", linear, layers="feat")
    boxes = torch.tensor([[0.0, 0.0, 1.2, 2.0], [5.0, 5.0, 6.0, 6.0]])       # row 1 overlaps nothing
    with pytest.warns(UserWarning, match="not finite"):
        e = cam.explain(x, targets=DetectionTarget(boxes, labels=[2, 1]))
    assert e.valid.tolist() == [True, False]
    assert torch.isnan(e.scores[1]) and not torch.isnan(e.scores[0])
    assert torch.allclose(e.layer_maps["feat"][0], torch.tensor([[0.5, 0.0], [0.0, 2.0]]))   # row 0 untouched
    assert (e.maps[1] == 0).all()
    # no row matched at all: every map invalid, still no crash
    with pytest.warns(UserWarning, match="matched no detection"):
        ex = explain_detections(cam, x[:1], boxes=torch.tensor([[5.0, 5.0, 6.0, 6.0]]))
    assert ex.valid.tolist() == [False] and ex.matches.index.tolist() == [-1]
    assert hook_count(linear) == 0


def test_classification_only_terms_are_refused_on_a_detector(linear):
    x = example_input()
    with pytest.raises(EvidenceError, match="classification"):
        capture(linear, x, "feat", DetectionTarget(BOXES[0]), needs={"A", "W"})
    with pytest.raises(EvidenceError, match="logits"):
        sycam.CAM("scorecam", linear, layers="feat")(x, targets=DetectionTarget(BOXES[0]))
    with pytest.raises(SycamError, match="2 reference boxes for 1 images"):   # one box per row
        capture(linear, x, "feat", DetectionTarget(BOXES[:2]), needs={"A", "G"})
    assert hook_count(linear) == 0


# ---------------------------------------------------------------------- geometry
class PaddedDetector(nn.Module):
    """Resizes and pads like torchvision (GeneralizedRCNNTransform); one 'detection' whose score
    reads feature cell (r, c) of an 8x average pool, so SSGrad-CAM lights up that cell only."""

    def __init__(self, cell, min_size=96):
        super().__init__()
        self.transform = GeneralizedRCNNTransform(min_size, 1000, [0.0] * 3, [1.0] * 3, size_divisible=32)
        self.feat = nn.AvgPool2d(8)
        self.cell = cell

    def forward(self, x):
        images, _ = self.transform(list(x))
        a = self.feat(images.tensors)
        r, c = self.cell
        box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
        return [{"boxes": box, "scores": a[i, 0, r, c].reshape(1), "labels": torch.tensor([1])}
                for i in range(x.shape[0])]


def test_maps_come_back_in_the_original_image_frame():
    """64x100 image, resized x1.5 to 96x150, padded to 96x160; feature cell (5, 17) covers resized
    y [40, 48), x [136, 144), i.e. original y [26.7, 32), x [90.7, 96): the map's peak is there."""
    model = PaddedDetector((5, 17)).eval()
    x = torch.rand(1, 3, 64, 100) + 0.1
    frame = detector_frame(model, x)
    assert frame.sizes == [(96, 150)] and frame.padded == (96, 160) and frame.original == (64, 100)
    e = sycam.CAM("ssgradcam", model, layers="feat").explain(x, targets=DetectionTarget([0.0, 0.0, 4.0, 4.0]))
    assert e.layer_maps["feat"].shape == (1, 12, 20) and e.maps.shape == (1, 64, 100)
    peak = int(e.maps[0].flatten().argmax())
    y, xx = divmod(peak, 100)
    assert 26 <= y < 32 and 90 <= xx < 96
    # plain upsampling (no frame) would put the peak at x ~ 17.5 / 20 * 100 = 87.5: outside the cell
    naive = upsample(e.layer_maps["feat"], (64, 100))[0].flatten().argmax()
    assert not 90 <= int(naive) % 100 < 96


def test_frame_without_resize_or_padding_is_plain_upsampling():
    raw = torch.rand(2, 5, 7)
    frame = DetectorFrame([(40, 56), (40, 56)], (40, 56), (40, 56))
    assert torch.allclose(frame(raw), upsample(raw, (40, 56)), atol=1e-6)
    # padding on the right: the frame keeps the image's part of the map only
    frame = DetectorFrame([(40, 56)], (40, 112), (40, 56))
    # image columns 0..48 sample feature columns 0..3 (the image's part): as upsampling the crop;
    # the last ones sample between column 3 and the padding's column 4 (x = 55.5 / 14 - 0.5)
    half = torch.rand(1, 5, 8)
    out = frame(half)
    assert torch.allclose(out[..., :49], upsample(half[:, :, :4], (40, 56))[..., :49], atol=1e-6)
    t = 55.5 / 14 - 0.5 - 3
    y = 20.5 / 8 - 0.5                                   # row 20 samples rows 2 and 3
    col = half[0, :, 3] * (1 - t) + half[0, :, 4] * t
    assert torch.allclose(out[0, 20, 55], col[2] * (3 - y) + col[3] * (y - 2), atol=1e-5)


# ---------------------------------------------------------------------- torchvision detectors
def _small(kind):
    torch.manual_seed(0)
    small = dict(min_size=96, max_size=160)
    if kind in ("fasterrcnn", "retinanet", "fcos"):
        returned = [2, 3, 4] if kind != "fasterrcnn" else [1, 2, 3, 4]
        extra = None
        if kind != "fasterrcnn":
            from torchvision.ops.feature_pyramid_network import LastLevelP6P7
            extra = LastLevelP6P7(256, 256)
        bb = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                 returned_layers=returned, extra_blocks=extra)
        if kind == "fasterrcnn":
            return tv_det.FasterRCNN(bb, num_classes=4, box_score_thresh=0.0, rpn_pre_nms_top_n_test=40,
                                     rpn_post_nms_top_n_test=20, box_detections_per_img=4, **small).eval()
        cls = tv_det.RetinaNet if kind == "retinanet" else tv_det.FCOS
        return cls(bb, num_classes=4, score_thresh=0.0, topk_candidates=20, detections_per_img=4, **small).eval()
    if kind == "ssd":
        from collections import OrderedDict

        from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

        class Backbone(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                                              nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())
                self.extra = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())
                self.out_channels = [32, 32]

            def forward(self, x):
                f = self.features(x)
                return OrderedDict([("0", f), ("1", self.extra(f))])

        from torchvision.models.detection.ssd import SSD

        return SSD(Backbone(), DefaultBoxGenerator([[2], [2]]), (96, 96), num_classes=4, score_thresh=0.0,
                          topk_candidates=20, detections_per_img=4).eval()
    raise ValueError(kind)


DETECTORS = ["fasterrcnn", "retinanet", "fcos", "ssd"]


@pytest.fixture(scope="module")
def detectors():
    return {k: _small(k) for k in DETECTORS}


@pytest.mark.parametrize("kind", DETECTORS)
def test_ssgradcam_on_torchvision_detector_equals_hand_captured_evidence(detectors, kind):
    """Gradients flow from the instance's score to the backbone, and the map is the expression
    on A and G captured by hand (own hook + autograd of that detection's score)."""
    model = detectors[kind]
    layer = default_layers(model)
    x = torch.rand(1, 3, 80, 112)
    dets = detect(model, x)
    j = 1 if len(dets[0]["scores"]) > 1 else 0
    ref, lab = dets[0]["boxes"][j], int(dets[0]["labels"][j])
    e = sycam.CAM("ssgradcam", model, layers=layer).explain(x, targets=DetectionTarget(ref, lab))
    assert e.valid.all() and torch.isfinite(e.maps).all()
    assert e.evidence.target.matches.index.tolist() == [j]
    # by hand
    module = dict(model.named_modules())[layer]
    kept = {}

    def hook(_m, _i, out):
        kept["A"] = out.detach().requires_grad_(True).clone()
        return kept["A"]

    h = module.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        h.remove()
    assert torch.allclose(out[0]["boxes"][j], ref)
    (G,) = torch.autograd.grad(out[0]["scores"][j], kept["A"])
    assert G.abs().sum() > 0, "no gradient reaches the backbone"
    assert torch.allclose(e.evidence.layers[layer].terms["G"][0], G, rtol=1e-4, atol=1e-9)
    assert torch.allclose(e.layer_maps[layer], ssgradcam_raw(kept["A"].detach(), G), rtol=1e-4, atol=1e-9)
    assert hook_count(model) == 0
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_ssgradcampp_and_every_detection_above_a_score(detectors):
    model = detectors["fcos"]
    x = torch.rand(2, 3, 80, 112)
    dets = detect(model, x, min_score=0.0)
    threshold = float(torch.cat([d["scores"] for d in dets]).median())
    ex = explain_detections(sycam.CAM("ssgradcam++", model), x, min_score=threshold, batch_size=3)
    want = [int((d["scores"] >= threshold).sum()) for d in dets]
    assert ex.image_index.tolist() == [0] * want[0] + [1] * want[1]
    assert ex.valid.all() and torch.isfinite(ex.maps).all() and ex.maps.shape[1:] == (80, 112)
    assert torch.allclose(ex.matches.iou, torch.ones(len(ex)), atol=1e-4)   # each detection matches itself
    assert (ex.matches.scores >= threshold - 1e-5).all()


def test_list_of_images_of_different_sizes(detectors):
    model = detectors["ssd"]
    images = [torch.rand(3, 80, 112), torch.rand(3, 96, 72)]
    dets = detect(model, images)
    out = explain_detections(sycam.CAM("ssgradcam", model), images,
                             boxes=[d["boxes"][:1] for d in dets], labels=[d["labels"][:1] for d in dets])
    assert [o.maps.shape for o in out] == [(1, 80, 112), (1, 96, 72)]
    assert all(o.valid.all() and o.matches.index.tolist() == [0] for o in out)


def test_per_region_layers_are_refused_with_a_hint(detectors):
    model = detectors["fasterrcnn"]
    x = torch.rand(1, 3, 80, 112)
    ref = detect(model, x)[0]["boxes"][0]
    with pytest.raises(EvidenceError, match="backbone layer"):
        sycam.CAM("ssgradcam", model, layers="roi_heads.box_roi_pool")(x, targets=DetectionTarget(ref))
    with pytest.raises(EvidenceError, match="not a tensor"):
        sycam.CAM("ssgradcam", model, layers="backbone.body")(x, targets=DetectionTarget(ref))
    assert hook_count(model) == 0


def test_default_layers(detectors):
    assert [default_layers(detectors[k]) for k in DETECTORS] == ["backbone.body.layer4"] * 3 + ["backbone.features"]
    with pytest.raises(SycamError, match="no default layer"):
        default_layers(nn.Linear(2, 2))


# ---------------------------------------------------------------------- metrics
def _batch(boxes, labels, size=(4, 4), masks=None, x=None):
    x = torch.ones(len(boxes), 3, *size) if x is None else x
    return Batch(x, x, torch.as_tensor(labels), masks, [torch.tensor([b], dtype=torch.float32) for b in boxes])


def test_pointing_games_have_known_answers():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = 1.0       # inside box [0, 0, 2, 2]
    maps[1, 3, 3] = 1.0       # outside it
    maps[1, 0, 0] = 0.5
    batch = _batch([[0, 0, 2, 2], [0, 0, 2, 2]], [1, 1])
    assert get_metric("det_pointing_box")(maps, batch).tolist() == [1.0, 0.0]
    # energy: row 0 all inside; row 1 has 0.5 of 1.5 inside
    assert torch.allclose(get_metric("det_energy_box")(maps, batch), torch.tensor([1.0, 1 / 3]))
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True     # the mask misses row 0's peak
    masks[1, 3, 3] = True
    batch = _batch([[0, 0, 2, 2], [0, 0, 2, 2]], [1, 1], masks=masks)
    assert DetectionPointingGame("mask")(maps, batch).tolist() == [0.0, 1.0]
    assert torch.allclose(DetectionEnergyPointingGame("mask")(maps, batch), torch.tensor([0.0, 2 / 3]))
    # a constant map points nowhere
    assert get_metric("det_pointing_box")(torch.ones(1, 4, 4), batch[[0]]).tolist() == [0.0]


class PixelDetector:
    """Three fixed detections on 4x4 images: box B = [0,0,2,2] label 1 scoring the fraction of
    B's pixels still equal to 1, the same box with label 2 and a far box C, both scoring 1."""

    calls = 0

    def __call__(self, x):
        PixelDetector.calls += 1
        inside = (x[:, 0, :2, :2] == 1).float().mean((1, 2))
        boxes = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [2, 2, 4, 4]])
        return [{"boxes": boxes, "scores": torch.stack([s, torch.tensor(1.0), torch.tensor(1.0)]),
                 "labels": torch.tensor([1, 2, 1])} for s in inside]


def test_detection_deletion_and_insertion_have_known_answers():
    first = torch.zeros(4, 4)
    first[:2, :2] = 1.0                        # box B's pixels ranked first
    last = 1.0 - first                         # ranked last
    maps = torch.stack([torch.stack([first, first]), torch.stack([last, first])])   # (2 candidates, 2 rows)
    # row 0: the instance (B, label 1); row 1: the far box C: constant score 1 whatever is removed
    batch = _batch([[0, 0, 2, 2], [2, 2, 4, 4]], [1, 1])
    # 4 steps of 4 pixels: B first -> scores 1,0,0,0,0: AUC 0.125; B last -> 1,1,1,1,0: 0.875
    dele = DetectionDeletion(steps=4)(maps, batch, model_fn=PixelDetector(), batch_size=3)
    assert torch.allclose(dele, torch.tensor([[0.125, 1.0], [0.875, 1.0]]))
    # insertion into black: B first -> 0,1,1,1,1: 0.875; B last -> 0,0,0,0,1: 0.125
    ins = DetectionInsertion(steps=4, substrate=0.0)(maps, batch, model_fn=PixelDetector(), batch_size=5)
    assert torch.allclose(ins, torch.tensor([[0.875, 1.0], [0.125, 1.0]]))
    # label 2 re-matches the constant detection on B; a label nobody has scores 0 throughout
    batch2 = _batch([[0, 0, 2, 2], [0, 0, 2, 2]], [2, 3])
    assert torch.allclose(get_metric("det_deletion", steps=4)(maps[:1], batch2, model_fn=PixelDetector()),
                          torch.tensor([1.0, 0.0]))
    # iou_score: a reference half-overlapping B (IoU 0.5) scales the score by 0.5
    half = _batch([[0, 0, 2, 4]], [1])
    got = DetectionDeletion(steps=4, score="iou_score")(first[None], half, model_fn=PixelDetector())
    assert torch.allclose(got, torch.tensor([0.0625]))


def test_detection_metrics_on_an_explained_detector(linear):
    """End to end: explanation -> batch -> P(b) and deletion on the hand-built detector."""
    x = example_input()
    ex = explain_detections(sycam.CAM("ssgradcam", linear, layers="feat"), x,
                            boxes=[torch.tensor([[0.0, 0.0, 1.2, 2.0]])], labels=[[2]])
    batch = ex.batch(x)
    assert torch.allclose(batch.boxes[0], torch.tensor([BOXES[1]])) and batch.labels.tolist() == [2]
    # the map peaks at (1, 1), outside the detected box [0, 0, 1.2, 2] (columns 0..0 after rounding)
    assert get_metric("det_pointing_box")(ex.maps, batch).tolist() == [0.0]
    # one pixel per step, removed in map order (1,1), (0,0), (0,1), (1,0); detection 1 scores
    # sum(V_1 * x) with per-pixel terms -3, 0, 0, 4 (total 1): curve 1, -3, 0, 0, 0
    dele = get_metric("det_deletion", steps=4)(ex.maps, batch, model_fn=linear)
    assert torch.allclose(dele, torch.tensor([0.25 * ((1 - 3) / 2 + (-3 + 0) / 2)]))


# ---------------------------------------------------------------------- torchvision's builders (slow)
_RCNN = dict(box_score_thresh=0.0, rpn_pre_nms_top_n_test=40, rpn_post_nms_top_n_test=20, box_detections_per_img=3)
_ONE = dict(score_thresh=0.0, topk_candidates=20, detections_per_img=3)
BUILDERS = {   # name: (extra kwargs, default layer, gradient expected to reach the layer with random weights)
    "fasterrcnn_resnet50_fpn": (_RCNN, "backbone.body.layer4", True),
    "fasterrcnn_mobilenet_v3_large_fpn": (_RCNN, "backbone.body.16", True),
    "maskrcnn_resnet50_fpn": (_RCNN, "backbone.body.layer4", True),
    "retinanet_resnet50_fpn_v2": (_ONE, "backbone.body.layer4", True),
    "fcos_resnet50_fpn": (_ONE, "backbone.body.layer4", True),
    "ssd300_vgg16": (_ONE, "backbone.features", True),
    # random MobileNetV3 features die out (ReLU6 of ~0): zero gradient until real weights are loaded
    "ssdlite320_mobilenet_v3_large": (_ONE, "backbone.features.1", False),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILDERS)
def test_torchvision_builders(name):
    extra, layer, flows = BUILDERS[name]
    size = {} if name.startswith("ssd") else dict(min_size=96, max_size=160)
    model = getattr(tv_det, name)(weights=None, weights_backbone=None, num_classes=5, **size, **extra).eval()
    assert default_layers(model) == layer
    x = torch.rand(1, 3, 96, 128)
    det = detect(model, x)[0]
    e = sycam.CAM("ssgradcam", model, layers=layer).explain(x, targets=DetectionTarget(det["boxes"][0],
                                                                                       int(det["labels"][0])))
    assert e.valid.all() and torch.isfinite(e.maps).all() and e.maps.shape == (1, 96, 128)
    assert bool(e.evidence.layers[layer].terms["G"][0].abs().sum() > 0) == flows
    assert hook_count(model) == 0
