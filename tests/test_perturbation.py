"""Perturbation channel scores: hand-computable models, agreement with torchcam / grad-cam,
the memory budget, constant channels, and Ablation via the split == full re-runs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sycam.errors import SycamError
from sycam.evidence.perturbation import (
    ablation_scores,
    ablation_values,
    is_cam,
    is_coefficients,
    mi_scores,
    score_cam,
    ss_cam,
)
from sycam.evidence.split import split_model
from sycam.evidence.targets import ClassLogit, ClassProbability, PerSample

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- models

class LinearPixels(nn.Module):
    """y = W · vec(x) + bias: every masked score is a dot product we can write down."""

    def __init__(self, W: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.W, self.bias = nn.Parameter(W), nn.Parameter(bias)  # W (classes, C, H, W)

    def forward(self, x):
        return torch.einsum("bchw,nchw->bn", x, self.W) + self.bias


def tiny_cnn() -> nn.Sequential:
    """3 -> 4 -> 5 channels, the explained layer ("4", a ReLU) at half resolution."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()


def layer_output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    h = layer.register_forward_hook(lambda _m, _i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen[0]


def minmax(a: torch.Tensor) -> torch.Tensor:
    lo = a.amin(dim=(-2, -1), keepdim=True)
    return (a - lo) / (a.amax(dim=(-2, -1), keepdim=True) - lo)


def row_counter(module: nn.Module) -> list[int]:
    """Batch sizes of every call of ``module`` (a forward pre-hook)."""
    sizes: list[int] = []
    module.register_forward_pre_hook(lambda _m, inp: sizes.append(inp[0].shape[0]))
    return sizes


@pytest.fixture
def linear_case():
    """x, A at input resolution (so M_k = mm(A_k) exactly), and a linear model."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, generator=g)
    A = torch.rand(2, 3, 4, 4, generator=g)
    model = LinearPixels(torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, generator=g)).eval()
    return model, x, A


def by_hand(model: LinearPixels, x: torch.Tensor, A: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """(b,K) logits of x ⊙ mm(A_k) for each image's class."""
    M = minmax(A)  # (b,K,H,W)
    W = model.W.detach()[classes]  # (b,C,H,W)
    return torch.einsum("bchw,bkhw,bchw->bk", x, M, W) + model.bias.detach()[classes][:, None]


# ----------------------------------------------------------------------------- Score-CAM by hand

def test_score_cam_official_is_the_masked_score(linear_case):
    model, x, A = linear_case
    want = by_hand(model, x, A, [1, 3])
    got = score_cam(model, x, A, ClassLogit([1, 3]))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    # the reference code's probability, and the paper's CIC against a black image (score = bias)
    with torch.no_grad():
        M = minmax(A)
        probs = torch.stack([model(x[i:i + 1] * M[i, :, None]).softmax(1)[:, c] for i, c in enumerate([1, 3])])
    assert torch.allclose(score_cam(model, x, A, ClassProbability([1, 3])), probs, rtol=1e-5, atol=1e-7)
    cic = score_cam(model, x, A, ClassLogit([1, 3]), baseline=0.0)
    assert torch.allclose(cic, want - model.bias.detach()[[1, 3]][:, None], rtol=1e-5, atol=1e-5)


def test_softmax_variants_and_top1_is_bound_on_the_clean_image():
    # class 0 = sum of pixels, class 1 = half the clean image's sum as a bias: x picks class 0,
    # but every masked copy (mask mean < 1/2) would pick class 1 on its own
    x = torch.rand(1, 1, 4, 4) + 0.5
    A = torch.zeros(1, 2, 4, 4)
    A[0, 0, 0, 0] = 1.0
    A[0, 1, :2] = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    W = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)])
    model = LinearPixels(W, torch.tensor([0.0, 0.5 * float(x.sum())])).eval()
    masked_sums = torch.einsum("bchw,bkhw->bk", x, minmax(A))
    assert torch.allclose(score_cam(model, x, A, None), masked_sums, rtol=1e-6)
    for variant in ("torchcam", "gradcam"):
        assert torch.allclose(score_cam(model, x, A, None, variant=variant), masked_sums.softmax(1), rtol=1e-5)


def test_per_image_targets_equal_one_image_at_a_time(linear_case):
    model, x, A = linear_case
    both = score_cam(model, x, A, PerSample([lambda r: r[2], lambda r: r[0]]), variant="gradcam")
    one = [score_cam(model, x[i:i + 1], A[i:i + 1], ClassLogit(c), variant="gradcam") for i, c in [(0, 2), (1, 0)]]
    assert torch.allclose(both, torch.cat(one), rtol=1e-6)


def test_is_cam_by_hand(linear_case):
    model, x, A = linear_case
    model.bias.data.zero_()  # then S(c · x ⊙ M) = c · S(x ⊙ M)
    n = 4
    assert is_coefficients(n) == [i * (i + 1) / (2 * n) for i in range(1, n + 1)] == [0.25, 0.75, 1.5, 2.5]
    scale = sum(is_coefficients(n)) / n  # (n+1)(n+2)/(6n)
    want = (by_hand(model, x, A, [0, 1]) * scale).softmax(1)
    assert torch.allclose(is_cam(model, x, A, ClassLogit([0, 1]), n=n), want, rtol=1e-5)
    lin = (by_hand(model, x, A, [0, 1]) * (n + 1) / (2 * n)).softmax(1)
    assert torch.allclose(is_cam(model, x, A, ClassLogit([0, 1]), n=n, schedule="linear"), lin, rtol=1e-5)


def test_ss_cam_noise_by_hand(linear_case):
    model, x, A = linear_case
    model.bias.data.zero_()
    n, sigma, classes = 3, 0.5, [0, 2]
    W = model.W.detach()[classes]
    # documented draw order: sample-major, then image, then channel; one (1,H,W) map per row
    delta = torch.randn(n, 2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(7)) * sigma
    want = by_hand(model, x, A, classes) + torch.einsum("bchw,nbkhw,bchw->bk", x, delta[:, :, :, 0], W) / n
    got = ss_cam(model, x, A, ClassLogit(classes), n=n, sigma=sigma, max_batch=6,
                 generator=torch.Generator().manual_seed(7))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    # noise on the input, δ (C,H,W) per row
    delta = torch.randn(n, 2, 3, 3, 4, 4, generator=torch.Generator().manual_seed(8)) * sigma
    want = by_hand(model, x, A, classes) + torch.einsum("nbkchw,bkhw,bchw->bk", delta, minmax(A), W) / n
    got = ss_cam(model, x, A, ClassLogit(classes), n=n, sigma=sigma, noise="input", max_batch=6,
                 generator=torch.Generator().manual_seed(8))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    # sigma = 0 is Score-CAM
    assert torch.allclose(ss_cam(model, x, A, ClassLogit(classes), n=2, sigma=0.0),
                          score_cam(model, x, A, ClassLogit(classes)), rtol=1e-6)


# ----------------------------------------------------------------------------- the libraries

@pytest.fixture(scope="module")
def cnn_case():
    model = tiny_cnn()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    A = layer_output(model, model[4], x)  # (2,5,8,8): the masks are upsampled ×2
    assert (A.flatten(2).amax(2) > A.flatten(2).amin(2)).all()  # no constant channel here
    return model, x, A, [0, 2]


def test_torchcam_scorecam_iscam(cnn_case):
    """torchcam 0.5: M = Up(mm(A)) then softmax_k(logit(x⊙M) − logit(x)) (ISCAM: cumulative scales)."""
    tc = pytest.importorskip("torchcam.methods")
    model, x, A, classes = cnn_case
    for cls, ours in [(tc.ScoreCAM, lambda: score_cam(model, x, A, ClassLogit(classes), variant="torchcam")),
                      (tc.ISCAM, lambda: is_cam(model, x, A, ClassLogit(classes), variant="torchcam"))]:
        with cls(model, "4", batch_size=4, input_shape=(3, 16, 16)) as ext:
            with torch.no_grad():
                model(x)
            want = ext._get_weights(classes)[0]  # the per-channel weights (private in 0.5)
        assert torch.allclose(ours(), want, rtol=1e-5, atol=1e-7), cls.__name__


def test_torchcam_sscam_with_the_same_noise(cnn_case):
    """torchcam SSCAM draws N(0, std²) noise for all (b,K,H,W) masks per sample from the global
    RNG; ours draws per row in the same order, so equal seeds give equal noise."""
    tc = pytest.importorskip("torchcam.methods")
    model, x, A, classes = cnn_case
    with tc.SSCAM(model, "4", batch_size=4, num_samples=3, std=2.0, input_shape=(3, 16, 16)) as ext:
        with torch.no_grad():
            model(x)
        torch.manual_seed(11)
        want = ext._get_weights(classes)[0]
    got = ss_cam(model, x, A, ClassLogit(classes), n=3, sigma=2.0, variant="torchcam", skip_constant=False,
                 generator=torch.Generator().manual_seed(11), max_batch=10)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_gradcam_scorecam(cnn_case):
    """grad-cam 1.5.7 ScoreCAM: M = mm(UpsamplingBilinear2d(A)) (align_corners=True), softmax_k(logit)."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model, x, A, classes = cnn_case
    cam = pgc.ScoreCAM(model, [model[4]])
    want = cam.get_cam_weights(x, model[4], [ClassifierOutputTarget(c) for c in classes], A.numpy(), None)
    got = score_cam(model, x, A, ClassLogit(classes), variant="gradcam")
    assert np.allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)
    # the official masks differ (align_corners=False): the variants are really distinct
    assert not torch.allclose(score_cam(model, x, A, ClassLogit(classes), variant="official").softmax(1), got)


def test_gradcam_ablationcam(cnn_case):
    """grad-cam 1.5.7 AblationCAM zeroes the channel when min(A) = 0 and re-runs the model."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model, x, A, classes = cnn_case
    assert float(A.min()) == 0.0  # so grad-cam ablates to 0 as the paper does
    cam = pgc.AblationCAM(model, [model[4]], batch_size=3)
    want = cam.get_cam_weights(x, model[4], [ClassifierOutputTarget(c) for c in classes], A.numpy(), None)
    got = ablation_scores(split_model(model, "4", x), None, ClassLogit(classes), max_batch=3)
    assert np.allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- budget and skipping

def test_memory_budget_is_respected_and_does_not_change_the_result(cnn_case):
    model, x, A, classes = cnn_case
    sizes = row_counter(model)
    results = {}
    for mb in (1, 3, 64):
        sizes.clear()
        results[mb] = ss_cam(model, x, A, ClassLogit(classes), n=3, sigma=0.0, max_batch=mb)
        assert max(sizes) <= mb
        assert sum(sizes) == 2 + 3 * 2 * 5  # the clean images, then N·b·K masked rows
    model._forward_pre_hooks.clear()
    assert torch.allclose(results[1], results[3], rtol=1e-5) and torch.allclose(results[1], results[64], rtol=1e-5)


def test_rows_per_model_call_default_by_device_and_explicit_values_win(cnn_case):
    from sycam.batching import ACCELERATOR_ROWS, CPU_ROWS, model_rows
    from sycam.data.batch import Batch
    from sycam.metrics import Deletion

    assert model_rows("cpu") == CPU_ROWS < ACCELERATOR_ROWS == model_rows(torch.device("cuda", 0))
    assert model_rows("cuda", 3) == 3 and model_rows("cpu", 100) == 100
    model, x, A, classes = cnn_case
    sizes = row_counter(model)
    default = score_cam(model, x, A, ClassLogit(classes))
    assert max(sizes) == CPU_ROWS and sum(sizes) == 2 + 2 * 5
    sizes.clear()
    assert torch.allclose(score_cam(model, x, A, ClassLogit(classes), max_batch=64), default, rtol=1e-5)
    assert max(sizes) == 2 * 5
    sizes.clear()
    Deletion(steps=4)(torch.rand(2, 16, 16), Batch(x, x, torch.tensor(classes)), model_fn=model)
    assert max(sizes) == CPU_ROWS
    model._forward_pre_hooks.clear()


def test_constant_channels_are_skipped(cnn_case):
    model, x, A, classes = cnn_case
    A = A.clone()
    A[0, 1] = 0.0  # a dead channel
    A[1, 3] = 2.5  # a constant non-zero channel
    sizes = row_counter(model)
    w = score_cam(model, x, A, ClassLogit(classes), variant="gradcam", max_batch=4)
    assert sum(sizes) == 2 + 2 * 5 - 2
    sizes.clear()
    full = score_cam(model, x, A, ClassLogit(classes), variant="gradcam", skip_constant=False)
    assert sum(sizes) == 2 + 2 * 5
    model._forward_pre_hooks.clear()
    assert w[0, 1] == 0 and w[1, 3] == 0
    # the other weights of an image keep their ratios (one positive factor per image)
    ratio = w[0] / full[0]
    assert torch.allclose(ratio[[0, 2, 3, 4]], ratio[0].expand(4), rtol=1e-5) and ratio[0] > 1
    # for a dead channel the normalised CAM is unchanged (the exactness argument in the docstring)
    cams = [F.relu((ww[0, :, None, None] * A[0]).sum(0)) for ww in (w, full)]
    assert torch.allclose(minmax(cams[0]), minmax(cams[1]), atol=1e-6)


def test_top_k_forwards_only_the_strongest_channels(cnn_case):
    model, x, A, classes = cnn_case
    sizes = row_counter(model)
    w = score_cam(model, x, A, ClassLogit(classes), top_k=2)
    model._forward_pre_hooks.clear()
    assert sum(sizes) == 2 + 2 * 2
    full = score_cam(model, x, A, ClassLogit(classes))
    top = A.mean(dim=(2, 3)).topk(2, dim=1).indices
    kept = torch.zeros_like(w, dtype=torch.bool).scatter_(1, top, True)
    assert torch.equal(w != 0, kept)
    assert torch.allclose(w[kept], full[kept], rtol=1e-6)


# ----------------------------------------------------------------------------- Ablation

def zeroed_rerun(model: nn.Module, layer: nn.Module, x: torch.Tensor, target, pairs) -> torch.Tensor:
    """Reference: the full model with channel k of the layer zeroed by a hook, image by image."""
    out = []
    for i, k in pairs:
        def zero(_m, _i, o, k=k):
            o = o.clone()
            o[:, k] = 0
            return o
        h = layer.register_forward_hook(zero)
        with torch.no_grad():
            out.append(target(model(x[i:i + 1]))[0])
        h.remove()
    return torch.stack(out)


def test_ablation_by_hand():
    """Head y = v · GAP(A) + c: removing channel k lowers y by v_k · mean(A_k)."""
    torch.manual_seed(4)
    head = nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    A = torch.rand(2, 3, 2, 2)
    s = split_model(head, "0", A)
    v, c = head[3].weight.detach(), head[3].bias.detach()
    y = A.mean(dim=(2, 3)) @ v[1] + c[1]
    want = v[1] * A.mean(dim=(2, 3))
    assert torch.allclose(ablation_scores(s, None, ClassLogit(1), relative=False), want, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ablation_scores(s, None, ClassLogit(1)), want / y[:, None], rtol=1e-5, atol=1e-6)


def test_ablation_split_equals_full_rerun_resnet18():
    from torchvision.models import resnet18
    torch.manual_seed(5)
    model, x = resnet18().eval(), torch.randn(2, 3, 32, 32)
    s = split_model(model, "layer3", x)  # the suffix is layer4 + head
    target = ClassLogit([3, 7])
    blocks = row_counter(model.layer4[0].conv1)  # a leaf: the suffix calls it
    w = ablation_scores(s, None, target, relative=False, max_batch=40)
    model.layer4[0].conv1._forward_pre_hooks.clear()
    assert max(blocks) <= 40 and sum(blocks) == 2 + int((s.activations.flatten(2) != 0).any(2).sum())
    y = target(s.output)
    pairs = [(0, 0), (0, 17), (0, 255), (1, 5), (1, 128), (1, 200)]
    got = torch.stack([w[i, k] for i, k in pairs])
    want = torch.stack([y[i] - zeroed_rerun(model, model.layer3, x, ClassLogit(target.classes[i]), [(i, k)])[0]
                        for i, k in pairs])
    assert (want != 0).sum() >= 3
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6 * float(y.abs().max()))


class Skip(nn.Module):
    """A skip around the explained layer: the suffix needs a cached prefix value."""

    def __init__(self):
        super().__init__()
        self.stem, self.block, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.fc((torch.relu(self.block(h)) + h).mean(dim=(2, 3)))


class Untraceable(Skip):
    """Data-dependent control flow: the split falls back to the hook runner."""

    def forward(self, x):
        h = torch.relu(self.stem(x))
        if h.sum() >= 0:
            h = h * 1.5
        return self.fc((torch.relu(self.block(h)) + h).mean(dim=(2, 3)))


@pytest.mark.parametrize("cls", [Skip, Untraceable])
def test_ablation_with_cached_skip_and_fallback_suffixes(cls):
    """The cut inside a skip (cached prefix value) and the hook fallback equal full re-runs."""
    torch.manual_seed(6)
    model, x = cls().eval(), torch.randn(2, 3, 6, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = split_model(model, "block", x)
    assert s.fast == (cls is Skip) and len(caught) == (cls is Untraceable)
    target = ClassLogit([1, 0])
    w = ablation_scores(s, None, target, max_batch=3)
    y = target(s.output)
    K = s.activations.shape[1]
    ablated = torch.cat([zeroed_rerun(model, model.block, x, ClassLogit(target.classes[i]), [(i, k)])
                         for i in range(2) for k in range(K)]).view(2, K)
    assert torch.allclose(w, (y[:, None] - ablated) / y[:, None], rtol=1e-4, atol=1e-6)


def test_ablation_skips_channels_already_at_the_ablation_value(cnn_case):
    model, x, A, classes = cnn_case
    s = split_model(model, "4", x)
    A = A.clone()
    A[1, 2] = 0.0
    rows = row_counter(model[5])
    w = ablation_scores(s, A, ClassLogit(classes), max_batch=4)
    model[5]._forward_pre_hooks.clear()
    assert sum(rows) == 2 + 2 * 5 - 1 and max(rows) <= 4
    assert w[1, 2] == 0


def test_gradcam_ablation_values_fall_by_1e7_per_row_and_restart_every_32_rows():
    A = torch.ones(3, 40, 2, 2)
    A[0, 3, 0, 0] = -2.0               # min(A) < 0: min(A) - 1e7 (1 + k mod 32)
    A[1, 5] = 0.0                      # min(A) = 0: the paper's 0
    A[2] += 0.5                        # min(A) > 0: also the ladder
    v = ablation_values(A, "gradcam")
    step = 1e7 * (1 + torch.arange(40) % 32)
    assert torch.allclose(v[0], -2.0 - step, rtol=1e-6) and v[0, 32] == v[0, 0]
    assert (v[1] == 0).all()
    assert torch.allclose(v[2], 1.5 - step, rtol=1e-6)
    assert (ablation_values(A, -1.0) == -1.0).all()
    with pytest.raises(SycamError, match="'gradcam'"):
        ablation_values(A, "grad-cam")


def test_ablation_value_is_what_the_channel_is_set_to():
    """Head y = v · GAP(A) + c: setting channel k to the value u lowers y by v_k · (mean(A_k) − u)."""
    torch.manual_seed(4)
    head = nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    A = torch.rand(2, 3, 2, 2) - 0.5
    s = split_model(head, "0", A)
    v = head[3].weight.detach()[1]
    want = v * (A.mean(dim=(2, 3)) - ablation_values(A, "gradcam"))
    assert torch.allclose(ablation_scores(s, None, ClassLogit(1), value="gradcam", relative=False), want, rtol=1e-5)
    want = v * (A.mean(dim=(2, 3)) + 2.0)
    assert torch.allclose(ablation_scores(s, None, ClassLogit(1), value=-2.0, relative=False), want, rtol=1e-5)


# ----------------------------------------------------------------------------- MI-CAM

def test_mi_of_a_map_with_itself_is_its_entropy():
    g = torch.Generator().manual_seed(9)
    A = torch.rand(1, 2, 8, 8, generator=g)
    A[0, 1] = 3.0  # constant: no information
    image = F.interpolate(A[:, :1], size=(8, 8), mode="bilinear", align_corners=False)  # = A_0 itself
    nmi = mi_scores(image, A, bins=4)
    mi = mi_scores(image, A, bins=4, normalized=False)
    q = ((image.flatten() - image.min()) / (image.max() - image.min()) * 4).long().clamp(0, 3)
    p = torch.bincount(q, minlength=4).float() / q.numel()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    assert torch.allclose(nmi, torch.tensor([[1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(mi[0, 0], entropy, rtol=1e-5) and mi[0, 1] == 0


def test_mi_matches_sklearn_on_the_bin_labels():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(10)
    image = torch.rand(2, 3, 12, 12, generator=g)
    A = torch.rand(2, 6, 3, 3, generator=g)
    bins = 5
    got = mi_scores(image, A, bins=bins, max_batch=4)
    raw = mi_scores(image, A, bins=bins, normalized=False, max_batch=7)
    gray = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    up = F.interpolate(A, size=(12, 12), mode="bilinear", align_corners=False)

    def labels(v):
        v = v.flatten().double()
        return ((v - v.min()) / (v.max() - v.min()) * bins).long().clamp(0, bins - 1).numpy()

    for i in range(2):
        for k in range(6):
            a, b = labels(up[i, k]), labels(gray[i])
            assert math.isclose(got[i, k], metrics.normalized_mutual_info_score(a, b), rel_tol=1e-4, abs_tol=1e-6)
            assert math.isclose(raw[i, k], metrics.mutual_info_score(a, b), rel_tol=1e-4, abs_tol=1e-6)


# ----------------------------------------------------------------------------- errors

def test_clear_errors(linear_case):
    model, x, A = linear_case
    with pytest.raises(SycamError, match="cancels"):
        score_cam(model, x, A, 0, variant="torchcam", baseline=0.0)
    with pytest.raises(SycamError, match="unknown variant"):
        is_cam(model, x, A, 0, variant="gradcam")
    with pytest.raises(SycamError, match="activations for 1"):
        score_cam(model, x, A[:1], 0)
    with pytest.raises(SycamError, match="one score per row"):
        score_cam(model, x, A, lambda logits: logits)
