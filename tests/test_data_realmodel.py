"""Data checks that need the pretrained model and/or fetched material (`sycam data fetch`).

Marked ``realmodel``; tests needing fetched material skip cleanly when it is absent.
"""
import pytest
import torch
from PIL import Image

from sycam.data import cache as cache_mod
from sycam.data.benchmark import default_benchmark, fallback_benchmark, recognised_rows
from sycam.data.composite import composite_set
from sycam.data.images import pil_to_tensor
from sycam.data.real import real_photos
from sycam.data.stamps import load_stamp_images

pytestmark = pytest.mark.realmodel


def _need(*groups):
    missing = [g for g in groups if not cache_mod.is_complete(g)]
    if missing:
        pytest.skip(f"fetched material {missing} absent from {cache_mod.cache_dir()}: run `sycam data fetch`")


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(1)
    from sycam.models import load_model

    return load_model()


def test_fallback_photos_are_recognised_in_the_top5(bundle):
    b = fallback_benchmark(bundle)
    assert len(b) == 6
    assert recognised_rows(b, bundle) == list(range(6))


def test_every_listed_stamp_is_top1_on_a_grey_canvas(bundle):
    _need("tuxpaint")
    s = bundle.preprocess.size
    xs, labels = [], []
    for stamp, im in load_stamp_images():
        scale = 0.8 * s / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
        canvas = Image.new("RGBA", (s, s), (128, 128, 128, 255))
        canvas.alpha_composite(im, ((s - im.width) // 2, (s - im.height) // 2))
        xs.append(bundle.preprocess.normalise(pil_to_tensor(canvas)))
        labels.append(stamp.label)
    with torch.no_grad():
        top1 = torch.cat([bundle.model(torch.stack(xs[i:i + 16])).argmax(1) for i in range(0, len(xs), 16)])
    wrong = [i for i, (t, lab) in enumerate(zip(top1.tolist(), labels)) if t != lab]
    assert not wrong, f"{len(wrong)} stamps no longer top-1"


def test_real_boxes_lie_inside_their_photos():
    _need("darknet", "opencv", "palapeli", "imgaug")
    photos = real_photos("all")
    assert len(photos) == 20
    for s in photos:
        h, w = s.size
        for o in s.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (s.name, o.name)
            if o.mask is not None:
                assert o.mask[int(y0):int(y1), int(x0):int(x1)].sum() == o.mask.sum()


def test_default_benchmark_is_deterministic_and_recognised(bundle):
    _need("darknet", "opencv", "palapeli", "imgaug", "tuxpaint")
    root = cache_mod.cache_dir()
    a = default_benchmark(12, bundle=bundle, root=root, cache=False)
    b = default_benchmark(12, bundle=bundle, root=root, cache=False)
    assert len(a) == 12 and a.names == b.names
    assert torch.equal(a.x, b.x) and torch.equal(a.masks, b.masks) and torch.equal(a.other_masks, b.other_masks)
    assert recognised_rows(a, bundle) == list(range(12))
    real = [n for n in a.names if not n.startswith("composite")]
    assert len(real) == 4                      # a third of the rows


def test_composite_keep_counts_are_reported(bundle):
    _need("tuxpaint", "opencv", "palapeli")
    cs = composite_set(10, bundle, seed=1, root=cache_mod.cache_dir(), cache=False)
    assert cs.generated >= cs.kept >= 5 and len(cs.items()) >= 10
    singles = [s for s in cs.samples if len(s.objects) == 1]
    x = torch.stack([bundle.preprocess(s.image) for s in singles])
    with torch.no_grad():
        top1 = bundle.model(x).argmax(1).tolist()
    assert top1 == [s.objects[0].label for s in singles]   # one-object images: top-1 correct
