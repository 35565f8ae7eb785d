"""Metric interface, registry, forward-free localisation metrics, aggregation and axiom errors.

Every case is hand-built with an answer worked out in the test (or by an independent brute
force), including the peer bug that must not be copied: Quantus 0.6 counts an empty
segmentation mask as a pointing-game hit (anchors.md 3.3); ours gives NaN and excludes it.
"""
from __future__ import annotations

import math

import pytest
import torch

from sycam.data.batch import Batch
from sycam.errors import UnknownNameError
from sycam.kernels.lowres import LowResMaps
from sycam.metrics import (
    AxiomInput,
    BestIoU,
    Direction,
    EnergyPointingGame,
    IoU,
    Metric,
    MetricError,
    PointingGame,
    class_mean,
    define_metric,
    dilate_disk,
    get_metric,
    pearson,
    per_class,
    register_metric,
    summarise,
    t_quantile,
)
from sycam.metrics.similarity import midranks, spearman, ssim

S = 32


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: on a shared 2-core machine OpenMP barriers cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(masks: torch.Tensor | None = None, boxes: list[torch.Tensor] | None = None,
               labels: list[int] | None = None) -> Batch:
    b = masks.shape[0] if masks is not None else len(boxes)  # type: ignore[arg-type]
    images = torch.rand(b, 3, S, S)
    return Batch(images * 2 - 1, images, torch.tensor(labels or [0] * b), masks, boxes or [])


def box_mask(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(S, S, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def peak(y: int, x: int) -> torch.Tensor:
    """A map in [0,1] with its single maximum at (y, x)."""
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    return 1 / (1 + ((yy - y) ** 2 + (xx - x) ** 2).float())


# ---------------------------------------------------------------------- interface and registry
def test_single_method_and_candidates_give_the_same_scores():
    masks = torch.stack([box_mask(4, 12, 4, 12), box_mask(20, 30, 18, 30)])
    batch = make_batch(masks)
    maps = torch.rand(3, 2, S, S)
    m = get_metric("energy_pointing_game")
    joint = m(maps, batch)
    for i in range(3):
        assert torch.allclose(m(maps[i], batch), joint[i])
    # hand value for candidate 0, image 1: energy inside the mask / total energy
    assert joint[0, 1].item() == pytest.approx((maps[0, 1] * masks[1]).sum().item() / maps[0, 1].sum().item(),
                                               rel=1e-5)


def test_registry_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as err:
        get_metric("pointing_gam")
    assert "pointing_game" in err.value.close
    with pytest.raises(UnknownNameError) as err:
        get_metric("insertoin")
    assert "insertion" in err.value.close


def test_missing_inputs_are_clear_errors():
    batch = make_batch(boxes=[torch.tensor([[0.0, 0, 4, 4]])])
    with pytest.raises(MetricError, match="model_fn="):
        get_metric("deletion")(torch.rand(1, S, S), batch)
    with pytest.raises(MetricError, match="batch.masks"):
        get_metric("gt_auc", region="mask")(torch.rand(1, S, S), batch)
    with pytest.raises(MetricError, match="input resolution"):
        get_metric("pointing_game")(torch.rand(1, 16, 16), batch)
    with pytest.raises(MetricError, match="1 images"):
        get_metric("pointing_game")(torch.rand(2, S, S), batch)


def test_user_metrics_plug_in_as_function_and_subclass():
    @define_metric("peak_in_region", direction="higher", needs=("masks",))
    def peak_in_region(maps, batch):
        """Map value at the region's centre pixel relative to the map's max."""
        return maps[..., S // 2, S // 2] / maps.flatten(2).amax(-1)

    class CentreBias(Metric):
        """Mean distance (px) of the map's mass from the image centre; lower is better."""
        name = "centre_bias"
        direction = Direction.LOWER

        def compute(self, maps, batch, res):
            yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
            d = ((yy - S / 2 + 0.5) ** 2 + (xx - S / 2 + 0.5) ** 2).sqrt()
            return (maps * d).sum((-2, -1)) / maps.sum((-2, -1))

    register_metric("centre_bias_test", CentreBias, overwrite=True)
    batch = make_batch(torch.stack([box_mask(0, S, 0, S)]))
    centred = peak(S // 2, S // 2)[None]
    assert peak_in_region(centred, batch).item() == pytest.approx(1.0)
    assert peak_in_region(peak(3, 3)[None], batch).item() == pytest.approx(1 / (1 + 2 * 13 ** 2))
    cb = get_metric("centre_bias_test")
    assert cb.name == "centre_bias_test" and cb.direction.sign == -1.0
    one_px = torch.zeros(1, S, S)
    one_px[0, 0, 0] = 1
    assert cb(one_px, batch).item() == pytest.approx(math.hypot(15.5, 15.5))
    bad = define_metric("bad_shape")(lambda maps, batch: maps.mean())
    with pytest.raises(MetricError, match="expected a tensor of shape"):
        bad(torch.rand(1, S, S), batch)


# ---------------------------------------------------------------------- pointing game
def test_pointing_game_tolerance_is_a_15px_disk():
    mask = box_mask(10, 11, 10, 11)  # one GT pixel at (10, 10)
    batch = make_batch(torch.stack([mask] * 4))
    maps = torch.stack([peak(10, 10), peak(10, 25), peak(11, 25), peak(10 + 9, 10 + 12)])
    # distances 0, 15, sqrt(226) = 15.03, sqrt(81+144) = 15 -> hit, hit, miss, hit
    assert get_metric("pointing_game")(maps, batch).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert PointingGame(tolerance=0)(maps, batch).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_pointing_game_empty_mask_is_nan_not_a_hit():
    """Quantus 0.6 PointingGame scores an empty mask as a hit; ours is NaN and left out."""
    masks = torch.stack([box_mask(0, 8, 0, 8), torch.zeros(S, S, dtype=torch.bool), box_mask(0, 8, 0, 8)])
    batch = make_batch(masks, labels=[3, 3, 5])
    maps = torch.stack([peak(2, 2), peak(2, 2), peak(30, 30)])
    hits = get_metric("pointing_game")(maps, batch)
    assert hits[0].item() == 1.0 and math.isnan(hits[1].item()) and hits[2].item() == 0.0
    # class 3: one valid hit -> 1.0; class 5: 0.0 -> class mean 0.5 (an empty-mask "hit" would not change
    # class 3 here, so also check the plain mean over images is 0.5, not 2/3)
    assert class_mean(hits, batch.labels).item() == pytest.approx(0.5)
    assert summarise(hits).mean.item() == pytest.approx(0.5) and summarise(hits).count.item() == 2


def test_pointing_game_sees_masks_changed_in_place():
    """The dilated masks are cached per batch; editing the batch must not serve a stale zone."""
    batch = make_batch(torch.stack([box_mask(0, 4, 0, 4)]))
    m = peak(20, 20)[None]
    assert PointingGame()(m, batch).item() == 0.0
    batch.masks[0, 18:22, 18:22] = True  # in place
    assert PointingGame()(m, batch).item() == 1.0
    batch.masks = torch.stack([box_mask(0, 4, 0, 4)])  # replaced
    assert PointingGame()(m, batch).item() == 0.0
    batch.boxes = [torch.tensor([[19.0, 19, 21, 21]])]
    assert PointingGame(region="box")(m, batch).item() == 1.0


def test_pointing_game_constant_map_points_nowhere():
    batch = make_batch(torch.stack([box_mask(0, 4, 0, 4)]))  # a constant map's argmax would be (0,0)
    assert PointingGame()(torch.full((1, S, S), 0.7), batch).item() == 0.0


def test_pointing_game_class_mean_weights_classes_equally():
    masks = torch.stack([box_mask(0, 8, 0, 8)] * 3)
    batch = make_batch(masks, labels=[1, 1, 2])
    maps = torch.stack([peak(2, 2), peak(30, 30), peak(3, 3)])  # hit, miss, hit
    hits = PointingGame()(maps, batch)
    classes, means = per_class(hits, batch.labels)
    assert classes.tolist() == [1, 2] and means.tolist() == [0.5, 1.0]
    assert class_mean(hits, batch.labels).item() == pytest.approx(0.75)  # image mean would be 2/3


def test_dilate_disk_matches_brute_force_distance():
    mask = torch.rand(2, S, S) > 0.995
    out = dilate_disk(mask, 5)
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    for i in range(2):
        pts = mask[i].nonzero().float()
        d2 = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
        assert torch.equal(out[i], (d2 <= 25).any(-1))


def test_lowres_pointing_and_energy_are_exact():
    """At feature resolution (argmax on the extremal subgrid, sums by R^T G C) = full resolution."""
    b, n = 3, 40
    masks = torch.stack([box_mask(3, 14, 5, 27), box_mask(20, 31, 0, 9), box_mask(0, 32, 12, 13)])
    batch = make_batch(masks, boxes=[torch.tensor([[5.0, 3, 27, 14]]), torch.tensor([[0.0, 20, 9, 31]]),
                                     torch.tensor([[12.0, 0, 13, 32]])])
    a = torch.randn(n, b, 4, 4)
    for norm in ("minmax", "max"):
        low = LowResMaps(a, (S, S), normalise=norm)
        full = low.full()
        for metric in (PointingGame(tolerance=3), EnergyPointingGame(), EnergyPointingGame(region="mask")):
            assert torch.allclose(metric(low, batch), metric(full, batch), atol=1e-5), (metric, norm)
    lo, hi, idx = LowResMaps(a, (S, S), normalise="none").extrema()
    up = torch.nn.functional.interpolate(a.flatten(0, 1)[:, None], size=(S, S), mode="bilinear")[:, 0]
    # our argmax is a maximiser of the full map (F.interpolate's rounding can move the first of
    # several equal maxima in a clamped border strip by a pixel, so compare values, not indices)
    assert torch.allclose(up.flatten(1).gather(1, idx.view(-1, 1))[:, 0], up.flatten(1).amax(1), atol=1e-6)
    assert torch.allclose(hi.flatten(), up.flatten(1).amax(1), atol=1e-6)
    assert torch.allclose(lo.flatten(), up.flatten(1).amin(1), atol=1e-6)


# ---------------------------------------------------------------------- energy pointing game, IoU
def test_energy_pointing_game_hand_values():
    box = torch.tensor([[4.0, 4, 12, 12]])  # x0,y0,x1,y1: 8x8 = 64 px
    batch = make_batch(boxes=[box] * 4)
    inside = torch.zeros(S, S)
    inside[4:12, 4:12] = 1
    half_out = inside.clone()
    half_out[20:28, 20:28] = 0.5  # same area outside at half energy
    maps = torch.stack([inside, torch.full((S, S), 0.3), half_out, torch.zeros(S, S)])
    epg = get_metric("energy_pointing_game")(maps, batch)
    assert epg.tolist() == pytest.approx([1.0, 64 / S ** 2, 1 / 1.5, 0.0])
    empty = make_batch(boxes=[torch.zeros(0, 4)])
    assert math.isnan(EnergyPointingGame()(inside[None], empty).item())


def test_iou_hand_values_mask_and_box():
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    disk = (yy - 16) ** 2 + (xx - 16) ** 2 <= 36  # the object, r = 6
    n_disk = int(disk.sum())
    batch = make_batch(disk[None], boxes=[torch.tensor([[10.0, 10, 23, 23]])])  # its bounding box, 13x13
    on = disk.float()[None] * 0.8  # binarises to exactly the disk at t = 0.5
    assert get_metric("iou_mask")(on, batch).item() == pytest.approx(1.0)
    assert get_metric("iou_box")(on, batch).item() == pytest.approx(n_disk / 169)
    stripes = torch.zeros(1, S, S)
    stripes[0, :, 0:10] = 1  # B = columns 0..9, G = columns 5..14 -> 5/15
    g = torch.zeros(S, S, dtype=torch.bool)
    g[:, 5:15] = True
    assert IoU()(stripes, make_batch(g[None])).item() == pytest.approx(1 / 3)
    assert IoU(threshold=1.0)(stripes, make_batch(g[None])).item() == pytest.approx(1 / 3)  # L >= t
    assert IoU(threshold=1.01)(stripes, make_batch(g[None])).item() == 0.0


def test_best_iou_matches_iou_at_each_threshold():
    masks = torch.stack([box_mask(4, 20, 4, 20), box_mask(10, 30, 0, 32)])
    batch = make_batch(masks)
    maps = torch.rand(3, 2, S, S) ** 2
    best = BestIoU(thresholds=[0.1, 0.3, 0.5, 0.7])
    curve = best.curve(maps, batch)
    for k, t in enumerate([0.1, 0.3, 0.5, 0.7]):
        assert torch.allclose(curve[..., k], IoU(threshold=t)(maps, batch), atol=1e-6)
    graded = torch.zeros(1, S, S)
    graded[0, 4:20, 4:20] = 0.9
    graded[0, 20:24, 4:20] = 0.3  # a 4x16 fringe
    assert best(graded, make_batch(masks[:1])).item() == pytest.approx(1.0)
    assert IoU(threshold=0.25)(graded, make_batch(masks[:1])).item() == pytest.approx(256 / (256 + 64))


# ---------------------------------------------------------------------- ground-truth similarity
def test_gt_pearson_and_auc_hand_values():
    mask = box_mask(8, 16, 8, 24)
    batch = make_batch(torch.stack([mask] * 3))
    maps = torch.stack([mask.float(), 1 - mask.float(), torch.full((S, S), 0.4)])
    assert get_metric("gt_pearson")(maps, batch).tolist()[:2] == pytest.approx([1.0, -1.0])
    assert get_metric("gt_auc")(maps, batch).tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_gt_auc_equals_pairwise_count_with_ties():
    g = torch.zeros(1, S, S, dtype=torch.bool)
    g[0, :3, :5] = True
    maps = (torch.rand(2, 1, S, S) * 4).floor() / 4  # many ties
    auc = get_metric("gt_auc")(maps, make_batch(g))
    for i in range(2):
        pos, neg = maps[i, 0][g[0]], maps[i, 0][~g[0]]
        gt = (pos[:, None] > neg[None]).double().mean() + 0.5 * (pos[:, None] == neg[None]).double().mean()
        assert auc[i, 0].item() == pytest.approx(gt.item(), abs=1e-6)


def test_similarities_against_references():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a, b = torch.rand(2, 20, 24), torch.rand(2, 20, 24)
    b[1] = (a[1] * 3).floor()  # ties
    ref_r = [torch.corrcoef(torch.stack([a[i].flatten(), b[i].flatten()]))[0, 1].item() for i in range(2)]
    assert pearson(a, b).tolist() == pytest.approx(ref_r, abs=1e-5)
    ref_s = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(2)]
    assert spearman(a, b).tolist() == pytest.approx(ref_s, abs=1e-5)
    ref_ssim = structural_similarity(a[0].double().numpy(), b[0].double().numpy(), data_range=1.0,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(a[0], b[0]).item() == pytest.approx(ref_ssim, abs=1e-5)
    assert midranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


# ---------------------------------------------------------------------- complexity
def test_complexity_and_gini_hand_values():
    batch = make_batch(boxes=[torch.zeros(0, 4)] * 4)
    hot = torch.zeros(S, S)
    hot[5, 5] = 1
    half = torch.zeros(S, S)
    half[: S // 2] = 1
    maps = torch.stack([torch.full((S, S), 0.25), hot, half, torch.zeros(S, S)])
    assert get_metric("complexity")(maps, batch).tolist() == pytest.approx([0.25, 1 / S ** 2, 0.5, 0.0])
    n = S * S
    assert get_metric("gini")(maps, batch).tolist() == pytest.approx([0.0, (n - 1) / n, 0.5, 0.0], abs=1e-6)


# ---------------------------------------------------------------------- aggregation
def test_t_quantile_matches_scipy():
    from scipy.stats import t

    for df in (1, 2, 3, 4, 7, 30, 999, 1001, 20000):
        for p in (0.975, 0.9, 0.025):
            assert t_quantile(p, df) == pytest.approx(t.ppf(p, df), rel=1e-7), (p, df)


def test_summarise_t_interval_and_bootstrap():
    from scipy.stats import t

    scores = torch.tensor([[0.2, 0.4, float("nan"), 0.9, 0.5, 0.1], [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]])
    s = summarise(scores)
    v = torch.tensor([0.2, 0.4, 0.9, 0.5, 0.1], dtype=torch.float64)
    lo, hi = t.interval(0.95, 4, loc=v.mean().item(), scale=(v.std() / math.sqrt(5)).item())
    assert s.count.tolist() == [5, 6]
    assert (s.mean[0].item(), s.low[0].item(), s.high[0].item()) == pytest.approx((v.mean().item(), lo, hi))
    b1, b2 = summarise(scores, "bootstrap", seed=3), summarise(scores, "bootstrap", seed=3)
    assert torch.equal(b1.low, b2.low)  # seeded
    assert (b1.low <= b1.mean).all() and (b1.mean <= b1.high).all()
    assert b1.high[1].item() <= 1.0 and b1.low[1].item() >= 0.0  # percentile bootstrap stays in range
    with pytest.raises(MetricError):
        summarise(scores, "jackknife")


# ---------------------------------------------------------------------- XGrad-CAM axioms
def test_xgrad_axiom_errors_on_a_linear_head():
    """S = sum_k c_k mean_hw(A_k) (+ bias): XGrad/Grad-CAM weights c_k/(hw) conserve S exactly."""
    torch.manual_seed(1)
    b, k, h, w = 2, 5, 3, 4
    A = torch.rand(b, k, h, w)
    c = torch.randn(k)
    labels = torch.zeros(b, dtype=torch.long)

    def head(a, lab, bias=0.0):
        return a.mean((-2, -1)) @ c + bias

    exact = (c / (h * w)).expand(b, k)
    cands = torch.stack([exact, 2 * exact])
    batch = make_batch(boxes=[torch.zeros(0, 4)] * b)
    cons = get_metric("xgrad_conservation")(None, batch, axioms=AxiomInput(A, cands, head))
    sens = get_metric("xgrad_sensitivity")(None, batch, axioms=AxiomInput(A, cands, head), batch_size=3)
    s = head(A, labels)
    assert cons[0].abs().max().item() < 1e-5 and sens[0].abs().max().item() < 1e-5
    assert cons[1].tolist() == pytest.approx([1.0, 1.0], rel=1e-5)  # |S - 2S| / |S|
    per_channel = (c * A.mean((-2, -1))).abs().sum(1)  # sum_k |c_k m_k - 2 c_k m_k|
    assert sens[1].tolist() == pytest.approx((per_channel / s.abs()).tolist(), rel=1e-5)
    # with a bias the conservation error is |bias| / |S|; a single candidate gives (b,)
    biased = AxiomInput(A, exact, lambda a, lab: head(a, lab, 0.5))
    out = get_metric("xgrad_conservation")(None, batch, axioms=biased)
    assert out.tolist() == pytest.approx((0.5 / (s + 0.5).abs()).tolist(), rel=1e-5)
    with pytest.raises(MetricError, match="weights must be"):
        get_metric("xgrad_conservation")(None, batch, axioms=AxiomInput(A, torch.rand(b, k + 1), head))
