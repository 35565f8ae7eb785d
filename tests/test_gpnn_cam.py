"""GPNN-CAM (sycam.methods.gpnn_cam): phase-1 unpermute and mass-weighted mean, ridge regression,
phase-2 maps, layer combination, and the whole method on a tiny model and small images."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sycam.methods.gpnn_cam as gc
from sycam.api import CAM, explain_many, make_cam
from sycam.evidence.gpnn import Correspondence, GPNNParams, GPNNResult, coverage, unpermute
from sycam.kernels.postprocess import minmax, upsample
from sycam.methods import get_meta
from sycam.methods.gpnn_cam import (
    GPNNCAM,
    combine_layers,
    phase2_map,
    ridge,
    running_update,
    standardise,
    unpermuted_mean,
)

torch.set_num_threads(1)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
SMALL = GPNNParams(sigma=3.0, iters=2, fine_iters=1)     # 24 px images: 2 pyramid levels, fast


class Pre:
    mean, std = MEAN, STD


class Tiny(nn.Module):
    """conv (24 x 24, "low") -> strided conv (12 x 12, "feat") -> GAP -> linear, 5 classes."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.low = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.feat = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.fc(self.feat(self.low(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def model():
    return Tiny().eval()


@pytest.fixture(scope="module")
def images01():
    """Two 24 x 24 pictures with structure (a blob and stripes), in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 24), indexing="ij")
    blob = torch.exp(-((xx - 0.3) ** 2 + (yy + 0.2) ** 2) / 0.1)
    stripes = 0.5 + 0.5 * torch.sin(6 * xx + 2 * yy)
    a = torch.stack([blob, 0.3 * stripes, 1 - blob])
    b = torch.stack([stripes, blob, 0.5 * stripes * blob + 0.2])
    return torch.stack([a, b]).clamp(0, 1)


def normalise(x01):
    return (x01 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def dense(corr: Correspondence) -> torch.Tensor:
    """P_I of one variation as an (HW x HW) matrix, column by column from Correspondence.apply."""
    h, w = corr.size
    eye = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    one = Correspondence(corr.index[:1], corr.size, corr.patch_size)
    cols = [one.apply(e)[0, 0].reshape(-1) for e in eye.float()]
    return torch.stack(cols, 1).double()


# ----------------------------------------------------------------------------------------------
# phase 1


def test_unpermuted_mean_by_hand_with_a_pixel_copy_correspondence():
    """patch 1 x 1: v1 is the identity, v2 copies source pixel 0 to three places. Source pixel 0 is
    seen 1 + 3 times, so v2 counts 3x there: (1 + 10 + 20 + 30) / 4, not the mean of per-view means."""
    corr = Correspondence(torch.tensor([[0, 1, 2, 3], [0, 0, 0, 3]]), (2, 2), 1)
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])
    avg, mass = unpermuted_mean(maps, corr)
    assert torch.allclose(mass, torch.tensor([[4.0, 1.0], [1.0, 2.0]]))
    assert torch.allclose(avg, torch.tensor([[61 / 4, 2.0], [3.0, 22.0]]))
    assert not torch.allclose(avg[0, 0], torch.tensor((1 + 20) / 2))     # not the mean of per-view means
    # weights pi_v: v2 weighted 0.5 -> (1 + 0.5 * 60) / (1 + 0.5 * 3)
    avg_w, mass_w = unpermuted_mean(maps, corr, torch.tensor([1.0, 0.5]))
    assert torch.allclose(avg_w[0, 0], torch.tensor(31 / 2.5)) and torch.allclose(mass_w[0, 0], torch.tensor(2.5))
    # a pixel no view copied gets 0 and mass 0
    avg0, mass0 = unpermuted_mean(maps[1:], Correspondence(torch.tensor([[0, 0, 0, 3]]), (2, 2), 1))
    assert mass0[0, 1] == 0 and avg0[0, 1] == 0 and avg0[0, 0] == 20


def test_unpermuted_mean_matches_dense_adjoint_with_7x7_patches():
    """Random 3 x 3-patch correspondences on 9 x 10: H = sum_v w_v P_v^T L_v / sum_v w_v P_v^T 1
    with P_v as explicit matrices."""
    g = torch.Generator().manual_seed(0)
    size, p = (9, 10), 3
    gh, gw = size[0] - p + 1, size[1] - p + 1
    corr = Correspondence(torch.randint(0, gh * gw, (3, gh * gw), generator=g), size, p)
    maps = torch.rand(3, *size, generator=g)
    w = torch.tensor([1.0, 0.3, 2.0])
    avg, mass = unpermuted_mean(maps, corr, w)
    num = torch.zeros(size[0] * size[1], dtype=torch.float64)
    den = torch.zeros_like(num)
    for v in range(3):
        pv = dense(Correspondence(corr.index[v:v + 1], size, p))
        num += w[v] * pv.T @ maps[v].double().reshape(-1)
        den += w[v] * pv.T @ torch.ones_like(num)
    want = torch.where(den > 0, num / den.clamp_min(1e-12), 0.0).view(size)
    assert torch.allclose(mass.double(), den.view(size), atol=1e-5)
    assert torch.allclose(avg.double(), want, atol=1e-5)


def test_running_update_equals_one_average_over_all_variations():
    g = torch.Generator().manual_seed(1)
    size, p = (12, 11), 3
    gh, gw = size[0] - p + 1, size[1] - p + 1
    idx = torch.randint(0, gh * gw, (5, gh * gw), generator=g)
    maps = torch.rand(5, *size, generator=g)
    whole, whole_m = unpermuted_mean(maps, Correspondence(idx, size, p))
    avg, m = torch.zeros(size), torch.zeros(size)
    for part in (slice(0, 2), slice(2, 3), slice(3, 5)):
        new, new_m = unpermuted_mean(maps[part], Correspondence(idx[part], size, p))
        avg, m = running_update(avg, m, new, new_m)
    assert torch.allclose(avg, whole, atol=1e-6) and torch.allclose(m, whole_m, atol=1e-5)


def test_identity_correspondences_give_back_the_maps_mean():
    maps = torch.rand(3, 8, 9)
    avg, mass = unpermuted_mean(maps, Correspondence.identity(3, (8, 9), 7))
    assert torch.allclose(mass, torch.full((8, 9), 3.0), atol=1e-5)
    assert torch.allclose(avg, maps.mean(0), atol=1e-6)


def test_median_option_filters_each_unpermuted_map():
    maps = torch.zeros(1, 9, 9)
    maps[0, 4, 4] = 5.0                                            # an isolated spike
    plain, _ = unpermuted_mean(maps, Correspondence.identity(1, (9, 9), 1))
    filtered, _ = unpermuted_mean(maps, Correspondence.identity(1, (9, 9), 1), median=3)
    assert plain[4, 4] == 5 and filtered.abs().max() == 0


# ----------------------------------------------------------------------------------------------
# phase 2


def test_ridge_is_the_closed_form_and_sklearn_ridge():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(60, 7, generator=g), torch.randn(60, generator=g)
    w, b = ridge(x, y, alpha=0.5, intercept=False)
    xd, yd = x.double(), y.double()
    closed = torch.linalg.solve(xd.T @ xd + 0.5 * torch.eye(7, dtype=torch.float64), xd.T @ yd)
    assert torch.allclose(w.double(), closed, atol=1e-6) and b == 0
    from sklearn.linear_model import Ridge
    ref = Ridge(alpha=0.5).fit(x.numpy(), y.numpy())
    w, b = ridge(x, y, alpha=0.5)
    assert torch.allclose(w, torch.from_numpy(ref.coef_).float(), atol=1e-5)
    assert abs(float(b) - float(ref.intercept_)) < 1e-5


def test_ridge_alpha0_is_least_squares_with_an_intercept_column():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 5, generator=g), torch.randn(40, generator=g)
    w, b = ridge(x, y, alpha=0.0)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(40, 1)], 1).double(), y.double()[:, None]).solution[:, 0]
    assert torch.allclose(w.double(), sol[:5], atol=1e-5) and abs(float(b) - float(sol[5])) < 1e-5


def test_ridge_recovers_a_planted_linear_map():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(500, 12, generator=g)
    w_true, b_true = torch.randn(12, generator=g), 0.7
    w, b = ridge(x, x @ w_true + b_true, alpha=1e-4)
    assert torch.allclose(w, w_true, atol=1e-4) and abs(float(b) - b_true) < 1e-4


def test_standardise_uses_unbiased_sd_and_keeps_constant_channels():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    xs, mu, sd = standardise(x)
    assert torch.allclose(mu, torch.tensor([3.0, 5.0])) and torch.allclose(sd, torch.tensor([2.0, 1.0]))
    assert torch.allclose(xs[:, 0], torch.tensor([-1.0, 0.0, 1.0])) and (xs[:, 1] == 0).all()


def test_phase2_map_recovers_a_planted_map_clips_it_and_drops_the_intercept():
    """targets = X w* + 3 on standardised features: the fit finds w*, the source's map is
    clip(X_src w*, 0) (the intercept 3 left out, negative parts cut)."""
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(6, 4, 5, 5, generator=g) * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1) + 1.0
    w_true = torch.tensor([0.5, -1.0, 2.0, 0.25])
    x = feats.permute(0, 2, 3, 1).reshape(-1, 4)
    xs, mu, sd = standardise(x)
    targets = (xs @ w_true + 3.0).view(6, 5, 5)
    source = torch.randn(4, 5, 5, generator=g)
    out, fit = phase2_map(feats, targets, source, alpha=1e-6)
    assert torch.allclose(fit.weights, w_true, atol=1e-4) and abs(fit.intercept - 3.0) < 1e-4
    assert fit.r2 > 0.9999 and fit.rows == 150
    want = (((source.permute(1, 2, 0).reshape(-1, 4) - mu) / sd) @ w_true).clamp_min(0).view(5, 5)
    assert torch.allclose(out, want, atol=1e-4)
    assert (out == 0).any() and (out > 0).any()                 # the clip acted


def test_combine_layers_mean_max_product():
    a = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    b = torch.tensor([[[4.0, 0.0], [0.0, 2.0]]])
    na, nb = a / 4, b / 4
    assert torch.allclose(combine_layers([a, b], (2, 2), "mean"), minmax((na + nb) / 2))
    assert torch.allclose(combine_layers([a, b], (2, 2), "max"), minmax(torch.maximum(na, nb)))
    prod = torch.sigmoid(a / 4 - 0.5) * torch.sigmoid(b / 4 - 0.5)
    assert torch.allclose(combine_layers([a, b], (2, 2), "product"), minmax(prod))
    # layers of different sizes: the smaller is upsampled before combining
    c = torch.rand(1, 4, 4)
    assert torch.allclose(combine_layers([a, c], (4, 4), "mean"),
                          minmax((minmax(upsample(a, (4, 4))) + minmax(c)) / 2), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# the method on a tiny model


def test_identity_variations_give_the_base_cam(model, images01, monkeypatch):
    """GPNN replaced by exact copies (identity correspondences): phase 1 is the base CAM of the
    source, with or without the source itself counted."""
    def copies(image, n, *, seed, params=None):
        h, w = image.shape[1:]
        return GPNNResult(image[None].expand(n, -1, -1, -1).clone(),
                          Correspondence.identity(n, (h, w), 7), params, seed)

    monkeypatch.setattr(gc, "gpnn_variations", copies)
    x = normalise(images01)
    base = CAM("gradcam", model, "feat")(x, [1, 3])
    for include in (True, False):
        e = GPNNCAM(model, "feat", n=3, super_iters=2, regression_layers=(), preprocess=Pre,
                    include_source=include).explain(x, [1, 3])
        assert torch.allclose(e.phase1, base, atol=1e-5)
        assert torch.allclose(e.maps, minmax(base), atol=1e-5)
        assert torch.allclose(e.mass, torch.full_like(e.mass, 6.0 + include), atol=1e-4)


@pytest.fixture(scope="module")
def run(model, images01):
    g = GPNNCAM(model, "feat", n=4, super_iters=2, gpnn=SMALL, regression_layers=["low", "feat"],
                preprocess=Pre, chunk=3, keep_variations=True, seed=7)
    return g, g.explain(normalise(images01), [1, 3])


def test_end_to_end_phase1_is_the_mass_weighted_mean_of_the_variation_cams(run, model, images01):
    """Recompute H from what the run kept: the source's CAM (mass 1) plus every variation's CAM
    unpermuted, over the total coverage; and each kept CAM is the base CAM of that variation."""
    g, e = run
    assert e.valid.all() and e.maps.min() >= 0 and e.maps.max() <= 1
    for i, cls in enumerate([1, 3]):
        cams, corrs = e.variation_cams[i], e.correspondences[i]
        assert cams.shape[0] == 8 and len(corrs) == 2
        direct = CAM("gradcam", model, "feat")(normalise(e.variations[i]), cls)
        assert torch.allclose(cams, direct, atol=1e-5)              # chunks of 3 views, right class
        num, den = e.source_cam[i].clone(), torch.ones_like(e.source_cam[i])
        for s, corr in enumerate(corrs):
            part = cams[4 * s:4 * s + 4]
            num += unpermute(part, corr).sum(0)
            den += coverage(corr).sum(0)
        assert torch.allclose(e.phase1[i], num / den, atol=1e-5)
        assert torch.allclose(e.mass[i], den, atol=1e-4)
        assert torch.allclose(e.phase1_steps[-1][i], e.phase1[i])
    # the variations really re-arrange the image: some correspondence is not the identity
    ident = Correspondence.identity(4, (24, 24), 7).index
    assert any(not torch.equal(c.index, ident) for c in e.correspondences[0])


def test_end_to_end_phase2_regresses_on_the_carried_phase1_map(run, model, images01):
    g, e = run
    i = 1
    for name, shape in (("low", (24, 24)), ("feat", (12, 12))):
        feats = [e.evidence.layers[name].A[i:i + 1]]
        from sycam.evidence.capture import capture
        ev = capture(model, normalise(e.variations[i]), [name], [3] * 8, needs=("A",))
        feats.append(ev.layers[name].A)
        carried = torch.cat([e.phase1[i][None]] + [c.apply(e.phase1[i][None])[:, 0] for c in e.correspondences[i]])
        y = F.interpolate(carried[:, None], size=shape, mode="bilinear", align_corners=False, antialias=True)[:, 0]
        want, fit = phase2_map(torch.cat(feats), y, e.evidence.layers[name].A[i], 1e-4)
        assert torch.allclose(e.layer_maps[name][i], want, atol=1e-4)
        assert e.fits[i][name].rows == 9 * shape[0] * shape[1]
    assert torch.allclose(e.maps, combine_layers([e.layer_maps["low"], e.layer_maps["feat"]], (24, 24)), atol=1e-6)


def test_end_to_end_is_deterministic_and_seeded(run, model, images01):
    g, e = run
    x = normalise(images01)
    again = GPNNCAM(model, "feat", n=4, super_iters=2, gpnn=SMALL, regression_layers=["low", "feat"],
                    preprocess=Pre, chunk=8, seed=7).explain(x, [1, 3])
    assert torch.allclose(again.maps, e.maps, atol=1e-5)          # other chunking, same result
    # without images01, the pictures are x un-normalised with the preprocess's mean/std (GPNN's
    # search is discontinuous in its input, so compare the pictures, not the runs)
    assert torch.allclose(g._to01(x), images01, atol=1e-6)
    recon = GPNNCAM(model, "feat", n=4, super_iters=1, gpnn=SMALL, regression_layers=(), preprocess=Pre,
                    seed=7).explain(x[:1], [1])
    other = GPNNCAM(model, "feat", n=4, super_iters=1, gpnn=SMALL, regression_layers=(), preprocess=Pre,
                    seed=8).explain(x[:1], [1])
    assert not torch.allclose(other.phase1, recon.phase1, atol=1e-3)


def test_reachable_by_name_and_through_explain_many(model, images01):
    x = normalise(images01)
    assert get_meta("GPNN-CAM").name == "gpnncam"
    cams = {"gradcam": make_cam("gradcam", model, "feat"),
            "gpnncam": make_cam("gpnncam", model, "feat", preprocess=Pre, n=2, super_iters=1, gpnn=SMALL,
                                regression_layers=("low",), fuse=None)}
    assert isinstance(cams["gpnncam"], GPNNCAM) and isinstance(cams["gradcam"], CAM)
    out = explain_many(cams, x, torch.tensor([1, 3]))
    assert torch.allclose(out["gradcam"].maps, CAM("gradcam", model, "feat")(x, [1, 3]))
    assert torch.allclose(out["gpnncam"].logits, model(x), atol=1e-5)
    assert torch.equal(out["gpnncam"].classes, torch.tensor([1, 3]))
    with pytest.raises(Exception, match="meta-method"):
        CAM("gpnncam", model, "feat")
