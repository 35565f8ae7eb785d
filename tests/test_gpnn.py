"""GPNN (sycam.evidence.gpnn): search, re-assembly operator and its adjoint, generation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sycam.evidence.gpnn import (
    Correspondence,
    GPNNParams,
    coverage,
    gaussian_pyramid,
    gpnn_variations,
    local_normalised_nn,
    normalised_nn,
    permute,
    save_variation_grid,
    unpermute,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    """A real photo (skimage's chelsea), 40 x 48: non-square to catch transposed axes."""
    from skimage import data
    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    return F.interpolate(x[None], size=(40, 48), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def _int_data(n, nq, nk, d, seed=0):
    """Integer-valued vectors: squared distances are exact in float32, whatever the summation order."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 200, (n, nq, d), generator=g).float(),
            torch.randint(0, 200, (nk, d), generator=g).float())


def _reference_scores(q, k, alpha):
    """S straight from the definition, one image at a time, in float64, the whole matrix at once."""
    q, k = q.double(), k.double()
    dist = ((q[:, :, None, :] - k[None, None]) ** 2).sum(-1).sqrt()  # (n, Nq, Nk)
    return dist / (alpha + dist.min(1, keepdim=True).values)


def _assert_is_argmin(nn, scores):
    """nn picks a minimiser of each row; with alpha << D, S = D/(alpha + m) has genuine near-ties
    (S ~ 1 - alpha/D for every key whose closest query is i), so allow a float32-sized slack."""
    picked = scores.gather(2, nn[..., None])[..., 0]
    best = scores.min(2).values
    assert torch.all(picked <= best * (1 + 1e-6))
    assert (nn == scores.argmin(2)).float().mean() > 0.98


# ---------------------------------------------------------------------------- search


def test_normalised_nn_matches_definition():
    q, k = _int_data(2, 150, 170, 6)
    alpha = 0.005
    nn = normalised_nn(q, k, alpha)
    _assert_is_argmin(nn, _reference_scores(q, k, alpha))
    # the completeness normalisation matters: plain nearest neighbours differ on this data
    plain = ((q[:, :, None] - k[None, None]) ** 2).sum(-1).argmin(2)
    assert (nn != plain).float().mean() > 0.2


def test_normalised_nn_is_per_image_in_a_batch():
    q, k = _int_data(3, 90, 110, 5, seed=1)
    batched = normalised_nn(q, k, 0.005)
    for v in range(3):
        assert torch.equal(batched[v], normalised_nn(q[v:v + 1], k, 0.005)[0])


@pytest.mark.parametrize("memory_mb", [1e-3, 3e-3, 0.05])
def test_chunked_distances_give_the_same_nn_as_unchunked(memory_mb):
    q, k = _int_data(2, 301, 257, 7, seed=2)
    whole = normalised_nn(q, k, 0.005, memory_mb=1e3)  # one block per pass
    chunked = normalised_nn(q, k, 0.005, memory_mb=memory_mb)  # many blocks, ragged edges
    assert torch.equal(chunked, whole)


def test_chunked_nn_on_real_patches():
    x = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(3))
    keys = F.unfold(x[None], 7)[0].t()
    queries = (keys + 0.05 * torch.randn(keys.shape, generator=torch.Generator().manual_seed(4)))[None]
    whole = normalised_nn(queries, keys, 0.005, memory_mb=1e3)
    assert torch.equal(normalised_nn(queries, keys, 0.005, memory_mb=0.002), whole)
    _assert_is_argmin(whole, _reference_scores(queries, keys, 0.005))


def test_local_search_with_all_keys_is_the_global_search():
    q, k = _int_data(2, 80, 90, 5, seed=5)
    every = torch.arange(90).expand(2, 80, 90)
    assert torch.equal(local_normalised_nn(q, k, every, 0.005, memory_mb=1e-3),
                       normalised_nn(q, k, 0.005))


def test_local_search_picks_among_candidates_with_restricted_normalisation():
    q, k = _int_data(1, 60, 70, 4, seed=6)
    g = torch.Generator().manual_seed(7)
    cand = torch.randint(0, 70, (1, 60, 5), generator=g)
    nn = local_normalised_nn(q, k, cand, 0.005)
    # reference: D on the candidate graph, m_j over the queries that hold j as a candidate
    d = ((q[0][:, None, :] - k[cand[0]]) ** 2).sum(-1).sqrt()  # (60, 5)
    m = torch.full((70,), math.inf)
    for i in range(60):
        for c in range(5):
            m[cand[0, i, c]] = min(m[cand[0, i, c]], d[i, c])
    ref = cand[0].gather(1, (d / (0.005 + m[cand[0]])).argmin(1, keepdim=True))[:, 0]
    assert torch.equal(nn[0], ref)


# ---------------------------------------------------------------------------- P_I and adjoint


def _random_corr(n, size, p, seed):
    gh, gw = size[0] - p + 1, size[1] - p + 1
    g = torch.Generator().manual_seed(seed)
    return Correspondence(torch.randint(0, gh * gw, (n, gh * gw), generator=g), size, p)


@pytest.mark.parametrize("size,p", [((13, 17), 7), ((9, 8), 3), ((7, 7), 7)])
def test_adjoint_property(size, p):
    corr = _random_corr(3, size, p, seed=8)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, *size, generator=g, dtype=torch.float64)
    y = torch.randn(3, 3, *size, generator=g, dtype=torch.float64)
    lhs = (permute(x, corr) * y).sum()
    rhs = (x * unpermute(y, corr).sum(0)).sum()  # one source shared by all variations
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    xs = torch.randn(3, 3, *size, generator=g, dtype=torch.float64)  # one source per variation
    assert torch.allclose((permute(xs, corr) * y).sum(), (xs * unpermute(y, corr)).sum(),
                          rtol=1e-12, atol=1e-12)


def test_unpermute_is_the_autograd_adjoint():
    """GPNN-CAM computes unpermute as d/dx <P_I x, cam>; ours must agree."""
    corr = _random_corr(2, (12, 10), 5, seed=10)
    cam = torch.rand(2, 12, 10, generator=torch.Generator().manual_seed(11))
    x = torch.ones(1, 12, 10, requires_grad=True)
    (permute(x, corr)[:, 0] * cam).sum().backward()
    assert torch.allclose(unpermute(cam, corr).sum(0), x.grad, atol=1e-6)


def test_identity_correspondence_is_the_identity():
    g = torch.Generator().manual_seed(12)
    x = torch.rand(3, 11, 14, generator=g)
    y = torch.rand(2, 1, 11, 14, generator=g)
    ident = Correspondence.identity(2, (11, 14), 7)
    assert torch.allclose(permute(x, ident), x.expand(2, -1, -1, -1), atol=1e-6)
    assert torch.allclose(unpermute(y, ident), y, atol=1e-6)
    assert torch.allclose(coverage(ident), torch.ones(2, 11, 14), atol=1e-6)


def test_reassembly_is_the_mean_of_covering_patches():
    """Copying one source patch everywhere: each pixel averages that patch's pixels at the
    offsets that cover it, e.g. the top-left output pixel is exactly the patch's top-left."""
    x = torch.arange(2 * 9 * 9, dtype=torch.float64).view(2, 9, 9)
    corr = Correspondence(torch.full((1, 9), 4), (9, 9), 7)  # patch at (1, 1) of a 3x3 grid
    y = permute(x, corr)[0]
    assert y[0, 0, 0] == x[0, 1, 1] and y[1, 8, 8] == x[1, 7, 7]
    assert torch.isclose(y[0, 0, 1], (x[0, 1, 1] + x[0, 1, 2]) / 2)
    assert torch.isclose(coverage(corr).sum(), torch.tensor(81.0, dtype=coverage(corr).dtype))


# ---------------------------------------------------------------------------- pyramid


def test_pyramid_levels_and_constant_image():
    sizes = [tuple(t.shape[-2:]) for t in gaussian_pyramid(torch.rand(3, 224, 224))]
    # N = ceil(log(224/14)/log(4/3)) = 10 -> 11 levels, coarsest short side 14
    assert len(sizes) == 11 and sizes[0] == (224, 224) and sizes[-1] == (14, 14)
    assert all(1.2 < a[0] / b[0] < 1.45 for a, b in zip(sizes[:-1], sizes[1:]))
    flat = gaussian_pyramid(torch.full((3, 40, 48), 0.3))
    assert min(flat[-1].shape[-2:]) == 14 and flat[-1].shape[-1] > flat[-1].shape[-2]
    assert all(torch.allclose(t, torch.full_like(t, 0.3), atol=1e-6) for t in flat)


# ---------------------------------------------------------------------------- generation

SMALL = dict(iters=3, fine_iters=2, fine_patches=300)  # coarse and fine (windowed) levels at 40 x 48


def test_deterministic_from_seed(cat):
    a = gpnn_variations(cat, 2, seed=5, **SMALL)
    b = gpnn_variations(cat, 2, seed=5, **SMALL)
    c = gpnn_variations(cat, 2, seed=6, **SMALL)
    assert torch.equal(a.images, b.images) and torch.equal(a.correspondence.index, b.correspondence.index)
    assert (a.images - c.images).abs().mean() > 0.02
    assert (a.images[0] - a.images[1]).abs().mean() > 0.02  # variations differ from each other
    assert a.params == GPNNParams(**SMALL) and a.seed == 5


def test_variation_does_not_depend_on_batch_size(cat):
    two = gpnn_variations(cat, 2, seed=1, **SMALL)
    three = gpnn_variations(cat, 3, seed=1, **SMALL)
    assert torch.equal(two.correspondence.index, three.correspondence.index[:2])
    assert torch.allclose(two.images, three.images[:2], atol=1e-6)


@pytest.mark.parametrize("search", [dict(fine_search="global"), dict(fine_search="window")])
def test_zero_noise_reproduces_the_source(cat, search):
    r = gpnn_variations(cat, 1, seed=0, sigma=0.0, iters=3, fine_patches=300, **search)
    assert torch.allclose(r.images[0], cat, atol=1e-5)
    # and does so by copying every patch from where it is (up to exact duplicates)
    assert (r.correspondence.index == Correspondence.identity(1, (40, 48), 7).index).float().mean() > 0.95


def test_images_are_the_reassembled_source(cat):
    r = gpnn_variations(cat, 2, seed=3, **SMALL)
    assert torch.allclose(r.images, permute(cat, r.correspondence), atol=1e-6)


def test_memory_budget_does_not_change_variations(cat):
    small = gpnn_variations(cat, 2, seed=4, memory_mb=0.01, **SMALL)
    large = gpnn_variations(cat, 2, seed=4, memory_mb=500.0, **SMALL)
    assert torch.equal(small.correspondence.index, large.correspondence.index)
    assert torch.equal(small.images, large.images)


def test_variations_copy_coherent_regions_and_use_most_of_the_source(cat):
    """Re-arrangement, not noise: neighbouring output patches mostly copy neighbouring source
    patches (a random correspondence would almost never), and small alpha (completeness) uses more
    of the source than plain nearest neighbours (alpha large)."""
    r = gpnn_variations(cat, 3, seed=2, sigma=0.75, **SMALL)
    xy = r.correspondence.coords()  # (n, 2, gh, gw)
    same_shift = (xy[..., 1:] - xy[..., :-1] == torch.tensor([0, 1]).view(1, 2, 1, 1)).all(1)
    assert same_shift.float().mean() > 0.5
    assert (r.images - cat).abs().mean() > 0.03  # not a copy of the source
    used = (coverage(r.correspondence) > 0).float().mean()
    greedy = gpnn_variations(cat, 3, seed=2, sigma=0.75, alpha=1e3, **SMALL)
    assert used > (coverage(greedy.correspondence) > 0).float().mean()


def test_bad_input_is_refused(cat):
    from sycam.errors import SycamError
    with pytest.raises(SycamError):
        gpnn_variations(cat[:1], 1, seed=0)
    with pytest.raises(SycamError):
        gpnn_variations(cat[:, :10, :10], 1, seed=0)
    with pytest.raises(SycamError):
        GPNNParams(patch_size=6)
    with pytest.raises(SycamError):
        unpermute(torch.zeros(2, 5, 5), Correspondence.identity(1, (9, 9), 7))


def test_saved_grid_shows_the_source_first(cat, tmp_path):
    from PIL import Image
    r = gpnn_variations(cat, 3, seed=0, **SMALL)
    path = save_variation_grid(cat, r.images, tmp_path / "grid.png", ncols=2, gap=4)
    img = torch.from_numpy(__import__("numpy").array(Image.open(path).convert("RGB")))
    assert tuple(img.shape) == (2 * (40 + 4) + 4, 2 * (48 + 4) + 4, 3)
    src = (cat * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert torch.equal(img[4:44, 4:52], src)
    var = (r.images[2].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert torch.equal(img[48:88, 56:104], var)


def test_coarse_correspondence_propagates_to_the_finer_grid():
    """Identity stays identity; a coarse shift (2, 3) becomes a shift of about R * (2, 3)."""
    from sycam.evidence.gpnn import _propagate
    coarse, fine, p = (30, 40), (40, 53), 7
    cg = (coarse[0] - p + 1, coarse[1] - p + 1)
    fg = (fine[0] - p + 1, fine[1] - p + 1)
    ident = Correspondence.identity(1, coarse, p).index
    cy, cx = _propagate(ident, coarse, fine, p)
    rows, cols = torch.meshgrid(torch.arange(fg[0]), torch.arange(fg[1]), indexing="ij")
    assert torch.equal(cy[0], rows.flatten()) and torch.equal(cx[0], cols.flatten())
    r, c = ident // cg[1], ident % cg[1]
    shifted = (r + 2).clamp(max=cg[0] - 1) * cg[1] + (c + 3).clamp(max=cg[1] - 1)
    cy, cx = _propagate(shifted, coarse, fine, p)
    inner = (rows < fg[0] - 8) & (cols < fg[1] - 10)  # away from the clamped border
    dy = (cy[0] - rows.flatten())[inner.flatten()].float()
    dx = (cx[0] - cols.flatten())[inner.flatten()].float()
    sy, sx = fine[0] / coarse[0], fine[1] / coarse[1]
    assert (dy - 2 * sy).abs().max() <= 0.5 + 1e-6 and (dx - 3 * sx).abs().max() <= 0.5 + 1e-6
