"""ROAD: the noisy linear imputation and the MoRF / LeRF / combined scores.

* the batched multigrid-CG imputation against a direct sparse solve (scipy ``spsolve`` on an
  independently assembled system) and against the defining property on hand cases;
* parity with grad-cam 1.5.7 ``pytorch_grad_cam.metrics.road`` (the ROAD authors' imputer)
  with the noise switched off; grad-cam's ``percentile=p`` removes the top/bottom 100-p %,
  our ``fractions`` are the removed share;
* Quantus 0.6 ``ROAD`` raises IndexError on 3-channel inputs (anchors.md 3.3): ours imputes
  every channel of a 3x224x224-style input from that channel's own neighbours.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sycam.data.batch import Batch
from sycam.metrics import ROAD, get_metric, linear_impute, noisy_linear_impute, removal_masks, spsolve_impute


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: on a shared 2-core machine OpenMP barriers cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).eval()


def weighted_mean_residual(v: torch.Tensor, remove: torch.Tensor) -> float:
    """max over removed pixels of |v_i - weighted mean of its in-image neighbours| (loops)."""
    c, h, w = v.shape
    worst = 0.0
    for y, x in remove.nonzero().tolist():
        num, den = torch.zeros(c, dtype=torch.float64), 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w:
                    wgt = 1 / 12 if dy and dx else 1 / 6
                    num += wgt * v[:, y + dy, x + dx].double()
                    den += wgt
        worst = max(worst, float((v[:, y, x].double() - num / den).abs().max()))
    return worst


def test_imputation_hand_cases():
    yy, xx = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    linear = (yy + 2 * xx)[None].expand(2, -1, -1).clone()  # a plane: neighbour means reproduce it inside
    remove = torch.zeros(1, 6, 7, dtype=torch.bool)
    remove[0, 2, 3] = True
    remove[0, 0, 0] = True  # corner: 2 direct + 1 diagonal neighbour, renormalised by 5/12
    out = linear_impute(linear[None], remove)[0]
    assert out[:, 2, 3].tolist() == pytest.approx([2 + 6.0] * 2, abs=1e-6)
    corner = (linear[0, 0, 1] / 6 + linear[0, 1, 0] / 6 + linear[0, 1, 1] / 12) / (5 / 12)
    assert out[0, 0, 0].item() == pytest.approx(corner.item(), abs=1e-6)
    assert torch.equal(out[:, ~remove[0]], linear[:, ~remove[0]])  # known pixels untouched


def test_imputation_matches_a_direct_sparse_solve():
    torch.manual_seed(1)
    x = torch.randn(4, 3, 23, 19)
    remove = torch.rand(4, 23, 19) < torch.tensor([0.1, 0.5, 0.9, 0.97]).view(4, 1, 1)
    remove[1, :, :9] = True  # a large connected hole touching the border
    out, info = linear_impute(x, remove, return_info=True)
    ref = spsolve_impute(x.double(), remove)
    assert (out.double() - ref).abs().max().item() < 1e-5, info
    assert weighted_mean_residual(out[1], remove[1]) < 1e-5
    assert info["iterations"] < 40
    everything = torch.ones(1, 23, 19, dtype=torch.bool)  # nothing known: defined as 0
    assert linear_impute(x[:1], everything).abs().max().item() == 0.0


def test_imputation_on_a_smooth_map_matches_spsolve():
    """The realistic case: MoRF/LeRF masks of a smooth CAM (large holes; 112^2 here, 224^2 in
    benchmarks/metrics.py)."""
    s = 112
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    cam = torch.exp(-((yy - 45.0) ** 2 + (xx - 65.0) ** 2) / (2 * 25.0 ** 2))
    torch.manual_seed(2)
    img = nn.functional.avg_pool2d(torch.randn(1, 3, s, s), 5, 1, 2) * 3
    rm = torch.cat([removal_masks(cam[None], torch.tensor([0.9]), "morf"),
                    removal_masks(cam[None], torch.tensor([0.5]), "lerf")])
    out = linear_impute(img.expand(2, -1, -1, -1), rm)
    assert (out.double() - spsolve_impute(img.expand(2, -1, -1, -1), rm).double()).abs().max().item() < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 on grad-cam's torch/numpy mix
def test_imputation_matches_grad_cam_noise_free():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    torch.manual_seed(3)
    x = torch.randn(3, 17, 21)
    keep = (torch.rand(17, 21) > 0.6).float()  # grad-cam's mask: 1 = keep, 0 = impute
    theirs = NoisyLinearImputer(noise=0.0)(x, keep)
    ours = linear_impute(x[None], keep[None] == 0)[0]
    assert (ours - theirs).abs().max().item() < 1e-5


def test_three_channel_input_imputes_each_channel_with_noise():
    """Quantus 0.6 ROAD crashes on 3-channel inputs; ours works per channel, noise std 0.01."""
    x = torch.arange(3.0).view(1, 3, 1, 1).expand(1, 3, 64, 64).contiguous()
    remove = torch.zeros(1, 64, 64, dtype=torch.bool)
    remove[0, 10:50, 8:60] = True
    gen = torch.Generator().manual_seed(0)
    out = noisy_linear_impute(x, remove, noise=0.01, generator=gen)
    err = out[0][:, remove[0]] - torch.arange(3.0)[:, None]
    assert err.mean(1).abs().max().item() < 1e-3
    assert err.std(1).tolist() == pytest.approx([0.01] * 3, rel=0.1)
    assert torch.equal(out[0][:, ~remove[0]], x[0][:, ~remove[0]])


def test_removal_masks_threshold_and_rank():
    vals = torch.randperm(100).float().view(1, 10, 10) / 100  # distinct values
    morf = removal_masks(vals, torch.tensor([0.2]), "morf")
    lerf = removal_masks(vals, torch.tensor([0.2]), "lerf")
    assert torch.equal(morf, vals >= 0.80) and torch.equal(lerf, vals <= 0.19)
    flat = torch.zeros(1, 10, 10)
    flat[0, :4] = torch.linspace(0.1, 1, 40).view(4, 10)  # 60 % of the pixels tie at 0
    assert removal_masks(flat, torch.tensor([0.2]), "lerf").sum().item() == 60  # threshold: all ties
    assert removal_masks(flat, torch.tensor([0.2]), "lerf", "rank").sum().item() == 20  # exactly 20 %


def road_batch(b: int = 3, s: int = 20) -> tuple[Batch, torch.Tensor, list[int]]:
    torch.manual_seed(4)
    x = torch.randn(b, 3, s, s)
    labels = [1, 0, 3][:b]
    maps = 0.5 + 0.5 * torch.rand(b, s, s)  # in [0.5,1): grad-cam's 1 - L is exact there
    return Batch(x, x, torch.tensor(labels)), maps, labels


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # grad-cam's np.float32(list of tensors)
def test_road_matches_grad_cam_morf_lerf_and_combined():
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = tiny_cnn()
    batch, maps, labels = road_batch()
    targets = [ClassifierOutputSoftmaxTarget(c) for c in labels]
    percentiles = [20, 50, 80]
    fractions = [1 - p / 100 for p in percentiles]
    gc = {}
    for name, remover in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
        rows = [PerturbationConfidenceMetric(remover(p, NoisyLinearImputer(noise=0.0)))(
            batch.x, maps.numpy(), targets, model) for p in percentiles]
        gc[name] = torch.from_numpy(np.stack(rows, 1)).float()  # (b, F) after - before
    ours = ROAD("combined", fractions, noise=0.0).deltas(maps[None], batch, _res(model))
    for name in ("morf", "lerf"):
        assert torch.allclose(ours[name][0], gc[name], atol=1e-5), name
    combined = ROAD("combined", fractions, noise=0.0)(maps, batch, model_fn=model)
    assert torch.allclose(combined, (gc["lerf"].mean(1) - gc["morf"].mean(1)) / 2, atol=1e-5)
    assert ROAD("morf", fractions, noise=0.0)(maps, batch, model_fn=model).tolist() == \
        pytest.approx(gc["morf"].mean(1).tolist(), abs=1e-5)


def test_road_metric_equals_a_loop_over_spsolve_with_candidates_and_noise():
    model = tiny_cnn()
    batch, maps, labels = road_batch(b=2, s=12)
    cands = torch.stack([maps, maps.flip(-1)])
    metric = ROAD("lerf", (0.3, 0.7), noise=0.01, seed=5)
    fast = metric(cands, batch, model_fn=model, batch_size=5)
    slow = ROAD("lerf", (0.3, 0.7), noise=0.01, seed=5, solver="spsolve")(cands, batch, model_fn=model, batch_size=5)
    assert torch.allclose(fast, slow, atol=1e-5)  # same noise draws, same system
    # the noise is drawn per (order, fraction, image): a candidate's score does not depend on
    # the chunking or on the other candidates
    alone = ROAD("lerf", (0.3, 0.7), noise=0.01, seed=5)(cands[1], batch, model_fn=model, batch_size=64)
    assert torch.allclose(fast[1], alone, atol=1e-6)
    assert not torch.allclose(fast, ROAD("lerf", (0.3, 0.7), noise=0.01, seed=6)(cands, batch, model_fn=model))
    both = ROAD("combined", (0.3, 0.7), noise=0.01, seed=5).deltas(cands, batch, _res(model))
    assert torch.allclose(both["lerf"].mean(-1), fast, atol=1e-6)  # same draws inside "combined"
    # by hand, without noise: mean over fractions of p(imputed) - p(x)
    quiet = ROAD("lerf", (0.3, 0.7), noise=0.0)(cands, batch, model_fn=model)
    with torch.no_grad():
        p0 = model(batch.x).softmax(1)[torch.arange(2), labels]
        for i in range(2):
            deltas = []
            for f in (0.3, 0.7):
                rm = removal_masks(cands[i], torch.tensor([f, f]), "lerf")
                p = model(spsolve_impute(batch.x, rm)).softmax(1)[torch.arange(2), labels]
                deltas.append(p - p0)
            assert torch.allclose(quiet[i], torch.stack(deltas).mean(0), atol=1e-5)


def test_road_registry_names_directions_and_costs():
    morf, lerf, comb = get_metric("road_morf"), get_metric("road_lerf"), get_metric("road_combined")
    assert (morf.direction.sign, lerf.direction.sign, comb.direction.sign) == (-1.0, 1.0, 1.0)
    assert (morf.forward_passes, comb.forward_passes, comb.cost.shared_forwards) == (9, 18, 1)
    with pytest.raises(Exception, match="fractions"):
        ROAD(fractions=(0.0, 0.5))


def _res(model):
    from sycam.metrics import Resources

    return Resources(model_fn=model)


def test_inputs_candidates_share_are_imputed_and_scored_once_with_the_same_scores():
    from test_metrics_faithfulness import Counting, alike_candidates

    b, s = 2, 12
    model = Counting(tiny_cnn())
    torch.manual_seed(1)
    batch = Batch(torch.randn(b, 3, s, s), torch.rand(b, 3, s, s), torch.tensor([2, 0]))
    maps = alike_candidates(b, s)   # 0 = 2 = 3 (same order), 4 = 5 (constant), 6 = 0 on its top quarter
    n = maps.shape[0]
    fractions = (0.2, 0.7)
    together = ROAD("combined", fractions, seed=3).deltas(maps, batch, _res(model))
    rows, model.rows = model.rows, 0
    for i in range(n):
        alone = ROAD("combined", fractions, seed=3).deltas(maps[i:i + 1], batch, _res(model))
        for name in ("morf", "lerf"):
            assert torch.allclose(together[name][i], alone[name][0], atol=1e-6), (i, name)
    assert model.rows == n * b * (1 + 2 * len(fractions))
    assert torch.equal(together["morf"][0], together["morf"][3])
    assert torch.equal(together["lerf"][4], together["lerf"][5])
    # once per image: the original; 0, 1, 4 run 2 orders x 2 fractions; 6 shares MoRF at 20 % with 0
    assert rows == b + 3 * b * 4 + b * 3
    plain = ROAD("combined", fractions, seed=3)
    plain.dedup = False
    model.rows = 0
    again = plain.deltas(maps, batch, _res(model))
    assert model.rows == b + n * b * 4
    assert all(torch.allclose(again[k], together[k], atol=1e-6) for k in ("morf", "lerf"))
