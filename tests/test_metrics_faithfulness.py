"""Insertion/deletion, Average Drop/Increase, ADCC and Finer-CAM's confidence drop.

Hand cases use a model whose target logit is a known function of the pixels (alpha times the
mean of a region), so every curve point is a closed-form sigmoid. Parity cases compare with
torchcam 0.5.0 and grad-cam 1.5.7 on the same maps and settings where the definitions match:

* torchcam ``DeletionInsertionMetric``: RISE curves with one shared baseline for both curves,
  ranks by stable descending sort, trapezoid over the perturbed fraction -- our Deletion with
  substrate 0 and our Insertion with the RISE blur given to torchcam as its baseline.
* torchcam ``ClassificationMetric``: Grad-CAM++ Average Drop (a fraction, +1e-7 in the
  denominator) and Increase, on x * L in *normalised* space -- our ``space="normalised"``.
* grad-cam ``DropInConfidence``: max(0, Y - O) *without* dividing by Y (not Grad-CAM++'s
  relative drop): equals our AD * Y / 100.
"""
from __future__ import annotations

import contextlib
import math
from functools import partial

import pytest
import torch
from torch import nn

from sycam.data.batch import Batch
from sycam.metrics import (
    ADCC,
    AverageDrop,
    AverageIncrease,
    Deletion,
    FinerConfidenceDrop,
    Insertion,
    get_metric,
    rise_blur,
    rise_kernel,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: on a shared 2-core machine OpenMP barriers cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


class RegionModel(nn.Module):
    """logits = [alpha * mean(x over region and channels), 0] (+ optional constant classes)."""

    def __init__(self, region: tuple[slice, slice], alpha: float, extra: tuple[float, ...] = ()):
        super().__init__()
        self.region, self.alpha, self.extra = region, alpha, extra

    def forward(self, x):
        m = x[:, :, self.region[0], self.region[1]].mean((1, 2, 3))
        cols = [self.alpha * m, torch.zeros_like(m)] if not self.extra else [self.alpha * m]
        cols += [torch.full_like(m, e) for e in self.extra]
        return torch.stack(cols, 1)


def tiny_cnn(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, classes)).eval()


def batch_of(x: torch.Tensor, images: torch.Tensor | None = None, labels: list[int] | None = None) -> Batch:
    return Batch(x, x if images is None else images, torch.tensor(labels or [0] * x.shape[0]))


# ---------------------------------------------------------------------- insertion / deletion by hand
S8 = 8
REGION = (slice(0, 4), slice(0, 4))  # 16 of 64 pixels


def region_map(first: bool) -> torch.Tensor:
    m = torch.zeros(S8, S8)
    m[REGION] = 1.0
    return m if first else 1 - m


def test_deletion_auc_by_hand():
    alpha = 3.0
    batch = batch_of(torch.ones(1, 3, S8, S8))
    model = RegionModel(REGION, alpha)
    maps = torch.stack([region_map(True), region_map(False)])[:, None]  # 2 candidates, 1 image
    auc = Deletion(steps=16)(maps, batch, model_fn=model)
    # 4 px per step; region pixels rank first (stable: row-major), its mean falls 1/4 per step
    good = [sig(alpha * max(0.0, 1 - k / 4)) for k in range(17)]
    bad = [sig(alpha * min(1.0, max(0.0, 1 - (k - 12) / 4))) for k in range(17)]

    def rise_auc(p):  # RISE: (sum - a_0/2 - a_n/2) / n_steps
        return (sum(p) - p[0] / 2 - p[-1] / 2) / 16

    assert auc[:, 0].tolist() == pytest.approx([rise_auc(good), rise_auc(bad)], abs=1e-6)
    assert Deletion.direction.sign < 0 and auc[0, 0] < auc[1, 0]


def test_insertion_auc_by_hand_and_blur_start():
    alpha = 2.0
    x = torch.ones(1, 3, S8, S8)
    batch = batch_of(x)
    model = RegionModel(REGION, alpha)
    maps = region_map(True)[None]
    auc = Insertion(steps=16, substrate="zero")(maps, batch, model_fn=model)
    p = [sig(alpha * min(k, 4) / 4) for k in range(17)]
    assert auc.item() == pytest.approx((sum(p) - p[0] / 2 - p[-1] / 2) / 16, abs=1e-6)
    # default substrate: RISE blur of the input; the curve starts at the blurred image's score
    frac, curve = Insertion(steps=16).curves(maps[None], batch, model)
    blurred = rise_blur(x)
    assert curve[0, 0, 0].item() == pytest.approx(sig(alpha * blurred[:, :, :4, :4].mean().item()), abs=1e-6)
    assert curve[0, 0, -1].item() == pytest.approx(sig(alpha), abs=1e-6)
    assert frac.tolist() == pytest.approx([k / 16 for k in range(17)])


def test_rise_kernel_is_scipys_gaussian_filter_of_an_impulse():
    from scipy.ndimage import gaussian_filter

    delta = torch.zeros(11, 11, dtype=torch.float64)
    delta[5, 5] = 1
    ref = torch.from_numpy(gaussian_filter(delta.numpy(), 5))
    assert torch.allclose(rise_kernel(11, 5.0), ref, atol=1e-12)
    assert rise_kernel().sum().item() == pytest.approx(1.0)


def test_curves_do_not_depend_on_chunking_or_on_other_candidates():
    model = tiny_cnn()
    torch.manual_seed(2)
    x = torch.randn(3, 3, 12, 12)
    batch = batch_of(x, labels=[0, 3, 1])
    maps = torch.rand(2, 3, 12, 12)
    for metric in (Deletion(steps=5), Insertion(steps=5)):
        joint = metric(maps, batch, model_fn=model, batch_size=64)
        small = metric(maps, batch, model_fn=model, batch_size=3)
        alone = torch.stack([metric(maps[i], batch, model_fn=model, batch_size=7) for i in range(2)])
        assert torch.allclose(joint, small, atol=1e-6) and torch.allclose(joint, alone, atol=1e-6)


class FakeExtractor:
    """Hands torchcam precomputed maps (so both libraries score the same maps)."""

    def __init__(self, model, cams):
        self.model, self.cams = model, cams

    def __call__(self, class_idx=None, scores=None, normalized=True, **kw):
        return [self.cams]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def test_deletion_insertion_match_torchcam():
    from torchcam.metrics import DeletionInsertionMetric

    model = tiny_cnn()
    torch.manual_seed(3)
    x = torch.randn(3, 3, 24, 24)
    labels = [0, 2, 4]
    maps = torch.rand(3, 24, 24)
    batch = batch_of(x, labels=labels)
    steps = 7  # 576 px: 83 per step, a shorter last interval (integrated over the true fraction)
    ours_del = Deletion(steps=steps)(maps, batch, model_fn=model)
    ours_ins = Insertion(steps=steps)(maps, batch, model_fn=model)
    ours_ins_zero = Insertion(steps=steps, substrate="zero")(maps, batch, model_fn=model)
    for i in range(3):
        ext = FakeExtractor(model, maps[i:i + 1])
        zero = DeletionInsertionMetric(ext, partial(torch.softmax, dim=-1), steps=steps)
        zero.update(x[i:i + 1], class_idx=[labels[i]])
        blur = DeletionInsertionMetric(ext, partial(torch.softmax, dim=-1), steps=steps, baseline=rise_blur)
        blur.update(x[i:i + 1], class_idx=[labels[i]])
        assert ours_del[i].item() == pytest.approx(zero.summary()["deletion_auc"], abs=1e-6)
        assert ours_ins[i].item() == pytest.approx(blur.summary()["insertion_auc"], abs=1e-6)
        # torchcam's default insertion starts from its shared zero baseline, not RISE's blur
        assert ours_ins_zero[i].item() == pytest.approx(zero.summary()["insertion_auc"], abs=1e-6)


# ---------------------------------------------------------------------- Average Drop / Increase
def ad_setup(alpha: float):
    """images: 1 on the region, 0.5 elsewhere; x = (img - 0.5) / 0.25 -> 2 on the region, 0 elsewhere."""
    images = torch.full((1, 3, S8, S8), 0.5)
    images[:, :, :4, :4] = 1.0
    batch = Batch((images - 0.5) / 0.25, images, torch.tensor([0]))
    maps = 0.5 * region_map(True)[None]
    return batch, maps, RegionModel(REGION, alpha)


def test_average_drop_by_hand_in_pixel_and_normalised_space():
    batch, maps, model = ad_setup(1.0)
    y = sig(2.0)
    # pixel space: E = 0.5 * image = 0.5 on the region -> x_E = 0 there; normalised: x * L = 1
    pixel = AverageDrop()(maps, batch, model_fn=model).item()
    normalised = AverageDrop(space="normalised")(maps, batch, model_fn=model).item()
    assert pixel == pytest.approx(100 * (y - 0.5) / y, abs=1e-4)
    assert normalised == pytest.approx(100 * (y - sig(1.0)) / y, abs=1e-4)
    assert AverageIncrease()(maps, batch, model_fn=model).item() == 0.0
    batch, maps, model = ad_setup(-1.0)  # now hiding the region *raises* the class-0 probability
    assert AverageDrop()(maps, batch, model_fn=model).item() == 0.0
    assert AverageIncrease()(maps, batch, model_fn=model).item() == 100.0


def test_average_drop_and_increase_match_torchcam_and_grad_cam():
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import ClassificationMetric

    model = tiny_cnn()
    torch.manual_seed(4)
    x = torch.randn(4, 3, 16, 16)
    labels = [1, 0, 3, 2]
    maps = torch.rand(4, 16, 16)
    batch = batch_of(x, labels=labels)
    ad = AverageDrop(space="normalised")(maps, batch, model_fn=model)
    ai = AverageIncrease(space="normalised")(maps, batch, model_fn=model)
    for i in range(4):
        tc = ClassificationMetric(FakeExtractor(model, maps[i:i + 1]), partial(torch.softmax, dim=-1))
        tc.update(x[i:i + 1], class_idx=[labels[i]])
        assert ad[i].item() / 100 == pytest.approx(tc.summary()["avg_drop"], rel=1e-4, abs=1e-6)
        assert ai[i].item() / 100 == tc.summary()["conf_increase"]
    y = model(x).softmax(1)[torch.arange(4), labels].detach()
    gc = DropInConfidence()(x, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in labels], model)
    assert torch.allclose(torch.from_numpy(gc).float(), ad * y / 100, atol=1e-6)


# ---------------------------------------------------------------------- ADCC
def test_adcc_is_the_harmonic_mean_by_hand():
    batch, maps, model = ad_setup(1.0)
    fixed = maps.clone()
    explainer = lambda x, labels: fixed.expand(x.shape[0], -1, -1)  # noqa: E731 - perfectly coherent
    parts = ADCC().parts(maps[None], batch, _res(model, explainer))
    y = sig(2.0)
    ad, com = (y - 0.5) / y, 0.5 * 16 / 64
    assert parts["coherency"].item() == pytest.approx(1.0)
    assert parts["complexity"].item() == pytest.approx(com)
    assert parts["average_drop"].item() == pytest.approx(ad, abs=1e-6)
    harmonic = 3 / (1 + 1 / (1 - com) + 1 / (1 - ad))
    assert parts["adcc"].item() == pytest.approx(harmonic, abs=1e-6)
    # grad-cam's ARCC docstring says "geometric mean"; the definition is harmonic and they differ here
    assert abs(harmonic - ((1 - com) * (1 - ad)) ** (1 / 3)) > 0.01


def test_adcc_explainer_with_candidates_keyword_equals_diagonal_blocks():
    model = tiny_cnn()
    torch.manual_seed(5)
    x = torch.randn(2, 3, 12, 12)
    batch = batch_of(x, labels=[1, 2])
    maps = torch.rand(2, 2, 12, 12)

    def method(i, xx):
        m = (xx.mean(1) if i == 0 else xx.std(1)).sigmoid()
        return m / m.flatten(1).amax(1).view(-1, 1, 1)

    def all_candidates(xx, labels):
        return torch.stack([method(0, xx), method(1, xx)])

    def selected(xx, labels, candidates):
        return torch.stack([method(int(c), xx[j:j + 1])[0] for j, c in enumerate(candidates)])

    a = ADCC(space="normalised")(maps, batch, model_fn=model, explainer=all_candidates)
    b = ADCC(space="normalised")(maps, batch, model_fn=model, explainer=selected, batch_size=3)
    assert torch.allclose(a, b, atol=1e-6)
    # each candidate's coherency uses its own method on its own explanation map
    e0 = x * maps[0][:, None]
    coh = (torch.corrcoef(torch.stack([maps[0, 1].flatten(), method(0, e0)[1].flatten()]))[0, 1] + 1) / 2
    assert ADCC(space="normalised").parts(maps, batch, _res(model, all_candidates))["coherency"][0, 1].item() == \
        pytest.approx(coh.item(), abs=1e-5)


def _res(model, explainer):
    from sycam.metrics import Resources

    return Resources(model_fn=model, explainer=explainer)


# ---------------------------------------------------------------------- Finer-CAM relative confidence drop
def test_finer_confidence_drop_by_hand():
    s = 20  # 400 px; region A = 20 px = exactly the top 5 %
    x = torch.ones(1, 3, s, s)
    region = (slice(0, 4), slice(0, 5))
    model = RegionModel(region, 2.0, extra=(1.5, 1.0, -5.0))  # y = [2 m_A, 1.5, 1.0, -5]
    m = torch.zeros(1, s, s)
    m[0, :4, :5] = 1
    out = FinerConfidenceDrop(k=2)(m, batch_of(x), model_fn=model).item()
    # references = the 2 logits closest to y_0 = 2: classes 1 and 2; masking A sets y_0 = 0
    r0 = math.exp(2) / (math.exp(2) + math.exp(1.5) + math.exp(1))
    r1 = 1 / (1 + math.exp(1.5) + math.exp(1))
    assert out == pytest.approx(r0 - r1, abs=1e-6)
    elsewhere = torch.zeros(1, s, s)
    elsewhere[0, 10:14, 10:15] = 1
    assert FinerConfidenceDrop(k=2)(elsewhere, batch_of(x), model_fn=model).item() == pytest.approx(0.0, abs=1e-7)
    assert get_metric("finer_confidence_drop").direction.sign > 0


# ---------------------------------------------------------------------- many candidates in one call
class Counting(nn.Module):
    """Counts the inputs (rows) a model sees."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.model(x)


def alike_candidates(b: int = 2, s: int = 8) -> torch.Tensor:
    """Maps (7, b, s, s) with shared inputs: a duplicate, a monotone transform (same ranks), two
    constant maps (ties: position order), a map that agrees with the first on its top quarter only."""
    torch.manual_seed(3)
    m = torch.rand(b, s, s)
    top = m.flatten(1) >= m.flatten(1).quantile(0.75, dim=1, keepdim=True)
    other = torch.where(top.view_as(m), m, torch.rand(b, s, s) * 0.5)    # same top quarter, rest redrawn
    return torch.stack([m, torch.rand(b, s, s), m.clone(), m ** 3, torch.zeros(b, s, s),
                        torch.full((b, s, s), 0.7), other])


@pytest.mark.parametrize("cls", [Deletion, Insertion])
def test_shared_inputs_run_once_and_scores_equal_one_candidate_at_a_time(cls):
    b, s, steps = 2, 8, 8                      # 8 px per point, 7 inner points
    model = Counting(tiny_cnn())
    batch = batch_of(torch.randn(b, 3, s, s), labels=[1, 4])
    maps = alike_candidates(b, s)
    n = maps.shape[0]
    metric = cls(steps=steps)
    together = metric(maps, batch, model_fn=model, batch_size=5)
    rows_together, model.rows = model.rows, 0
    alone = torch.stack([cls(steps=steps)(maps[i], batch, model_fn=model, batch_size=5) for i in range(n)])
    assert model.rows == n * b * (steps + 1)   # alone: both endpoints and 7 points per candidate
    assert torch.allclose(together, alone, atol=1e-6)
    assert together[0].tolist() == together[2].tolist() == together[3].tolist()
    assert together[4].tolist() == together[5].tolist()
    # together: endpoints once; candidates 2 and 3 repeat 0, 5 repeats 4 (so 0, 1, 4 run every
    # point), 6 repeats the first two points of 0 (its top quarter)
    assert rows_together == 2 * b + 3 * b * (steps - 1) + b * (steps - 1 - 2)
    plain = cls(steps=steps)
    plain.dedup = False
    model.rows = 0
    assert torch.equal(plain(maps, batch, model_fn=model, batch_size=5), together)
    assert model.rows == 2 * b + n * b * (steps - 1)


@pytest.mark.parametrize("metric", [AverageDrop(), AverageIncrease(space="normalised"), FinerConfidenceDrop(0.25)],
                         ids=["average_drop", "average_increase", "finer"])
def test_one_input_per_image_metrics_run_a_shared_input_once(metric):
    b, s = 2, 8
    model = Counting(tiny_cnn())
    torch.manual_seed(5)
    images = torch.rand(b, 3, s, s)
    batch = batch_of((images - 0.5) / 0.25, images, labels=[1, 4])
    maps = alike_candidates(b, s)    # 0 = 2; 4 and 5 mask the same pixels (Finer); 3 and 6 share 0's top
    n = maps.shape[0]
    together = metric(maps, batch, model_fn=model, batch_size=3)
    rows, model.rows = model.rows, 0
    alone = torch.stack([metric(maps[i], batch, model_fn=model, batch_size=3) for i in range(n)])
    assert model.rows == 2 * n * b and torch.allclose(together, alone, atol=1e-6)
    if isinstance(metric, FinerConfidenceDrop):   # a quarter masked: 0, 2, 3, 6 alike and 4, 5 alike
        assert rows == b + 3 * b
    else:                                         # E = x * L: only the duplicate map 2 of 0 is shared
        assert rows == b + (n - 1) * b


def test_first_equal_compares_rows_bit_for_bit_and_dedup_rows_maps_every_job_to_its_run():
    from sycam.metrics.base import dedup_rows, first_equal

    nan = float("nan")
    rows = torch.tensor([[1.0, nan], [0.0, 1.0], [1.0, nan], [-0.0, 1.0], [0.0, 1.0]])
    assert first_equal(rows).tolist() == [0, 1, 0, 3, 1]       # NaN = the same NaN; -0.0 is not 0.0
    assert first_equal(rows[:1]).tolist() == [0]
    # two groups: jobs 0, 2, 4 (rows a, b, a) and 1, 3 (rows a, a): equal rows in different groups stay apart
    a, b = torch.tensor([1, 0]), torch.tensor([0, 1])
    unique, where = dedup_rows(5, lambda: [(torch.tensor([0, 2, 4]), torch.stack([a, b, a])),
                                           (torch.tensor([1, 3]), torch.stack([a, a]))])
    assert unique.tolist() == [0, 1, 2]
    assert unique[where].tolist() == [0, 1, 2, 1, 0]
