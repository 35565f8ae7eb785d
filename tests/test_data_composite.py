"""Composites: deterministic from the seed, exact masks/boxes, two-object rules, caching; split."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sycam.data import composite as comp
from sycam.data.benchmark import default_benchmark, split
from sycam.data.geometry import to_batch
from sycam.data.real import real_photos
from sycam.data.sample import mask_box
from sycam.data.stamps import Stamp
from sycam.errors import DataError
from sycam.models import Preprocess

PRE = Preprocess(224, 256)


def _stamp(label, name, w, h, colour, shape):
    """A cut-out with a soft-edged alpha (so the 127 threshold matters)."""
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    getattr(d, shape)([2, 2, w - 3, h - 3], fill=colour + (255,))
    a = np.asarray(im).copy()
    a[..., 3] = np.asarray(Image.fromarray(a[..., 3]).resize((w // 2, h // 2)).resize((w, h), Image.BILINEAR))
    return Stamp(f"synthetic/{name}.png", label, name, 1.0), Image.fromarray(a)


STAMPS = [_stamp(1, "goldfish", 90, 60, (250, 120, 0), "ellipse"),
          _stamp(2, "great white shark", 50, 110, (40, 40, 200), "rectangle"),
          _stamp(3, "tiger shark", 70, 70, (0, 160, 60), "ellipse")]
BACKS = [("noise", Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)))]
ONE = comp.Layout.for_preprocess(PRE, two_objects=0.0)
TWO = comp.Layout.for_preprocess(PRE, two_objects=1.0)


def h_mid(im):
    return im.height // 2, im.width // 2


def _make(seed, i, layout):
    return comp.make_composite(seed, i, STAMPS, BACKS, layout)


def test_same_seed_same_composite_other_seed_other_composite():
    a, b = _make(3, 7, comp.Layout.for_preprocess(PRE)), _make(3, 7, comp.Layout.for_preprocess(PRE))
    assert torch.equal(a.image, b.image) and a.meta == b.meta
    assert all(torch.equal(x.mask, y.mask) and x.box == y.box for x, y in zip(a.objects, b.objects))
    others = [_make(s, 7, comp.Layout.for_preprocess(PRE)) for s in (4, 5)]
    assert any(not torch.equal(a.image, o.image) for o in others)
    assert a.image.shape == (3, 256, 256) and a.image.dtype == torch.float32


@pytest.mark.parametrize("i", range(6))
def test_mask_is_the_scaled_alpha_and_box_is_its_bounding_box(i):
    s = _make(0, i, ONE)
    (obj,) = s.objects
    (placed,) = s.meta["layout"]
    x, y, w, h = placed["xywh"]
    stamp_img = dict((st.path, im) for st, im in STAMPS)[placed["stamp"]]
    alpha = np.asarray(comp._resize_rgba(stamp_img, (w, h)).getchannel("A")) > comp.ALPHA_THRESHOLD
    assert int(obj.mask.sum()) == int(alpha.sum())
    assert torch.equal(obj.mask[y:y + h, x:x + w], torch.from_numpy(alpha))
    assert obj.box == mask_box(obj.mask)
    rx0, ry0, rx1, ry1 = ONE.region
    assert rx0 <= obj.box[0] and ry0 <= obj.box[1] and obj.box[2] <= rx1 and obj.box[3] <= ry1
    # a masked pixel shows the stamp's colour, not the background noise
    colour = torch.tensor(np.asarray(stamp_img)[h_mid(stamp_img)][:3] / 255.0, dtype=torch.float32)
    ys, xs = torch.nonzero(obj.mask, as_tuple=True)
    cy, cx = int(ys.float().mean()), int(xs.float().mean())
    assert obj.mask[cy, cx] and torch.allclose(s.image[:, cy, cx], colour, atol=0.05)


@pytest.mark.parametrize("i", range(8))
def test_two_objects_have_different_classes_and_disjoint_masks(i):
    s = _make(1, i, TWO)
    if s is None:
        pytest.skip("unplaceable draw")
    lower, upper = s.objects
    assert lower.label != upper.label
    assert not (lower.mask & upper.mask).any()
    x, y, w, h = s.meta["layout"][0]["xywh"]
    st = dict((st.path, im) for st, im in STAMPS)[s.meta["layout"][0]["stamp"]]
    full = int((np.asarray(comp._resize_rgba(st, (w, h)).getchannel("A")) > comp.ALPHA_THRESHOLD).sum())
    assert int(lower.mask.sum()) >= (1 - TWO.max_hidden) * full
    assert lower.box == mask_box(lower.mask) and upper.box == mask_box(upper.mask)
    b = to_batch([s], PRE)
    assert b.labels.tolist() == [lower.label, upper.label]
    assert torch.equal(b.other_masks[0], b.masks[1]) and torch.equal(b.other_masks[1], b.masks[0])


def test_composite_ground_truth_survives_the_model_crop_exactly():
    s = _make(2, 0, ONE)
    b = to_batch([s], PRE)                     # 256 canvas: resize is the identity, crop drops 16 px
    assert torch.equal(b.masks[0], s.objects[0].mask[16:240, 16:240])
    x0, y0, x1, y1 = s.objects[0].box
    assert b.boxes[0].tolist() == [[x0 - 16, y0 - 16, x1 - 16, y1 - 16]]
    assert torch.allclose(b.images[0], s.image[:, 16:240, 16:240], atol=1e-6)


class _FixedModel(torch.nn.Module):
    """Always ranks class 1 first, class 2 second."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 10)
        out[:, 1], out[:, 2] = 2.0, 1.0
        return out


def _bundle():
    return SimpleNamespace(name="fixed", model=_FixedModel(), preprocess=PRE)


def test_composite_set_keeps_recognised_images_and_caches_a_growing_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr(comp, "load_stamp_images", lambda stamps=None, root=None: STAMPS)
    monkeypatch.setattr(comp, "load_backgrounds", lambda root=None: BACKS)
    cs = comp.composite_set(6, _bundle(), seed=0, root=tmp_path)
    assert len(cs.items()) >= 6 and cs.generated > cs.kept and not cs.cached
    for s in cs.samples:
        labels = {o.label for o in s.objects}
        assert labels == {1} or labels <= {1, 2} and len(labels) == 2   # top-1 alone, or both in top-5
    again = comp.composite_set(6, _bundle(), seed=0, root=tmp_path)
    assert again.cached and [s.name for s in again.samples] == [s.name for s in cs.samples]
    for a, b in zip(cs.samples, again.samples):
        assert torch.equal(a.image, b.image)
        assert all(torch.equal(x.mask, y.mask) and x.box == y.box for x, y in zip(a.objects, b.objects))
    fewer = comp.composite_set(2, _bundle(), seed=0, root=tmp_path)
    more = comp.composite_set(10, _bundle(), seed=0, root=tmp_path, cache=False)
    assert [s.name for s in more.samples[:cs.kept]] == [s.name for s in cs.samples]
    assert [s.name for s in fewer.samples] == [s.name for s in cs.samples[:fewer.kept]]
    assert "kept" in str(cs) and "generated" in str(cs)


def test_missing_material_says_to_fetch(tmp_path):
    with pytest.raises(DataError, match="sycam data fetch"):
        real_photos("all", root=tmp_path)
    with pytest.raises(DataError, match="sycam data fetch"):
        default_benchmark(8, bundle=_bundle(), root=tmp_path)
    assert len(real_photos("fallback", root=tmp_path)) == 6     # packaged photos need no fetch


def test_split_is_deterministic_keeps_images_together_and_covers_everything():
    samples = [_make(0, i, comp.Layout.for_preprocess(PRE)) for i in range(12)]
    b = to_batch([s for s in samples if s is not None], PRE)
    tr, ho = split(b, 0.25, seed=0)
    tr2, ho2 = split(b, 0.25, seed=0)
    assert tr.names == tr2.names and ho.names == ho2.names
    assert sorted(tr.names + ho.names) == sorted(b.names)
    groups = lambda names: {n.split("#")[0] for n in names}  # noqa: E731
    assert not groups(tr.names) & groups(ho.names)
    assert abs(len(ho) - 0.25 * len(b)) <= 2
    assert split(b, 0.25, seed=1)[1].names != ho.names
    lt, lh = split(samples[:8], 0.5, seed=0)
    assert len(lt) + len(lh) == 8 and not set(s.name for s in lt) & set(s.name for s in lh)
