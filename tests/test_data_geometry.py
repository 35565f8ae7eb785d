"""Samples -> model-space Batch: images, masks and boxes must stay aligned."""
import pytest
import torch

from sycam.data.geometry import to_batch, transform_boxes, visible_region
from sycam.data.sample import AnnotatedObject, DataWarning, Sample
from sycam.models import Preprocess


def _drawn(h, w, boxes):
    """Black image with each box painted a distinct pure colour; objects with exact masks."""
    img = torch.zeros(3, h, w)
    objs = []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        img[k % 3, y0:y1, x0:x1] = 1.0
        objs.append(AnnotatedObject(k + 10, (x0, y0, x1, y1)))
    return Sample(img, objs, "drawn")


@pytest.mark.parametrize("pre,h,w", [
    (Preprocess(56, 64), 90, 150),    # downscale, wide
    (Preprocess(56, 64), 150, 90),    # downscale, tall
    (Preprocess(56, 64), 30, 45),     # upscale
    (Preprocess(56, None), 80, 70),   # crop only
])
def test_a_drawn_box_lands_where_the_transformed_box_says(pre, h, w):
    boxes = [(int(0.3 * w), int(0.35 * h), int(0.6 * w), int(0.8 * h)),
             (int(0.05 * w), int(0.1 * h), int(0.25 * w), int(0.3 * h))]
    s = _drawn(h, w, boxes)
    b = to_batch([(s, 0)], pre)
    seen = b.images[0, 0] > 0.5                  # red channel = object 0
    ys, xs = torch.nonzero(seen, as_tuple=True)
    painted = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    assert torch.allclose(b.boxes[0][0], painted, atol=1.01), (b.boxes[0], painted)
    # the filled-box mask covers the painted pixels up to the one-pixel rim of rounding
    assert (b.masks[0] & seen).sum() >= 0.9 * seen.sum()
    assert (b.masks[0] & ~seen).sum() <= 0.15 * b.masks[0].sum()
    assert b.labels.tolist() == [10]


def test_exact_masks_follow_the_image_and_other_masks_keep_only_other_classes():
    h, w = 100, 120
    img = torch.zeros(3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disk = (yy - 50) ** 2 + (xx - 40) ** 2 < 20 ** 2
    img[1][disk] = 1.0
    objs = [AnnotatedObject(5, (20, 30, 60, 70), disk),
            AnnotatedObject(7, (80, 60, 110, 95)),         # another class: an "other"
            AnnotatedObject(None, (70, 5, 90, 25))]        # distractor: an "other" too
    s = Sample(img, objs, "disk")
    pre = Preprocess(80, 90)
    b = to_batch([s], pre)                 # a Sample expands to one item per class
    assert b.names == ["disk#0", "disk#1"] and b.labels.tolist() == [5, 7]
    green = b.images[0, 1] > 0.5
    assert (b.masks[0] ^ green).sum() <= 0.05 * green.sum()   # nearest vs bilinear rim only
    fills = []
    for o in objs[1:]:
        x0, y0, x1, y1 = transform_boxes(torch.tensor([o.box]), (h, w), pre)[0].round().long().tolist()
        f = torch.zeros(80, 80, dtype=torch.bool)
        f[y0:y1, x0:x1] = True
        fills.append(f)
    assert torch.equal(b.other_masks[0], fills[0] | fills[1])
    assert torch.equal(b.masks[1], fills[0])
    assert torch.equal(b.other_masks[1], b.masks[0] | fills[1])
    assert torch.allclose(b.x, pre.normalise(b.images))


def test_objects_of_the_same_class_are_explained_together():
    s = _drawn(90, 90, [(10, 10, 30, 30), (60, 60, 80, 85), (60, 5, 85, 25)])
    s.objects[1].label = s.objects[0].label          # two instances of class 10, one of class 12
    pre = Preprocess(90, None)                       # identity geometry
    b = to_batch([s], pre)
    assert b.names == ["drawn#0", "drawn#2"]
    assert b.boxes[0].tolist() == [[10, 10, 30, 30], [60, 60, 80, 85]]
    assert int(b.masks[0].sum()) == 20 * 20 + 20 * 25
    assert int(b.other_masks[0].sum()) == 25 * 20 and not (b.masks[0] & b.other_masks[0]).any()
    one = to_batch([(s, 1)], pre)                    # explicit pair: that object's box first
    assert one.boxes[0].tolist() == [[60, 60, 80, 85], [10, 10, 30, 30]]


def test_objects_cut_away_by_the_crop_are_dropped_with_a_warning():
    s = _drawn(60, 200, [(0, 10, 15, 50), (90, 10, 110, 50)])  # first is outside the centre crop
    with pytest.warns(DataWarning, match="outside"):
        b = to_batch([s], Preprocess(56, 60))
    assert b.names == ["drawn#1"] and b.labels.tolist() == [11]


@pytest.mark.parametrize("pre,h,w", [(Preprocess(224, 256), 300, 451), (Preprocess(56, None), 90, 70),
                                     (Preprocess(224, 256), 256, 256)])
def test_visible_region_maps_onto_the_whole_crop(pre, h, w):
    region = visible_region(pre, (h, w))
    out = transform_boxes(torch.tensor([region]), (h, w), pre)[0]
    assert torch.allclose(out, torch.tensor([0.0, 0.0, pre.size, pre.size]), atol=1e-3), out
