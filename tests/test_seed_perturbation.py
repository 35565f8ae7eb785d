"""Seeds that need more than one pass: Score-CAM family, Ablation-CAM, MI-CAM, CAMERAS,
Smooth Grad-CAM++. Hand-computed on the 2x2 example where the arithmetic is short."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sycam
from conftest import agree
from tiny import GapHead, example_input, spatial_model


def gap_model():
    # class 0: y = mean(A_0) - 0.5 mean(A_1); class 1: y = mean(A_1)
    return GapHead(torch.tensor([[1.0, -0.5], [0.0, 1.0]]))


def raw(method, model, target=0, **options):
    return sycam.CAM(method, model, "feat", options=options or None).explain(example_input(), target).layer_maps["feat"][0]


def test_scorecam_uses_probabilities_of_masked_inputs():
    # M_0 = minmax(A_0) = [[0,1/3],[2/3,1]], M_1 = minmax(A_1) = [[1,0],[0,1/4]]
    # x*M_0 -> channel means (5/3, 1/4): y = (1.5417, 0.25), p_0 = 0.7844
    # x*M_1 -> channel means (1/2, 17/16): y = (-0.03125, 1.0625), p_0 = 0.2509
    # L = relu(0.7844 A_0 + 0.2509 A_1)
    got = raw("scorecam", gap_model())
    assert torch.allclose(got, torch.tensor([[1.7880, 1.5688], [2.3532, 3.3885]]), atol=2e-3), got


def test_ablationcam_relative_drop():
    # y = 2.5 - 0.625 = 1.875; zeroing A_0 gives -0.625 (w_0 = 4/3), zeroing A_1 gives 2.5 (w_1 = -1/3)
    got = raw("ablationcam", gap_model())
    assert torch.allclose(got, torch.tensor([[0.0, 8 / 3], [4.0, 5.0]]), atol=1e-4), got


def test_iscam_and_sscam_reduce_to_scorecam_weights_in_the_limit():
    # one IS step with scale 1 is Score-CAM on the logit, then softmax over channels
    model = gap_model()
    iscam = raw("iscam", model, is_n=1, is_schedule="linear")
    scorecam_softmax = sycam.CAM("relu(sum(softmax(score, k) * A, k))", model, "feat").explain(
        example_input(), 0).layer_maps["feat"][0]
    assert torch.allclose(iscam, scorecam_softmax, atol=1e-5)
    # SS-CAM with no noise is Score-CAM
    sscam = raw("sscam", model, ss_n=3, ss_sigma=0.0)
    assert torch.allclose(sscam, raw("scorecam", model), atol=1e-5)


def test_smooth_gradcampp_without_noise_is_gradcampp_and_with_noise_averages():
    model = spatial_model()
    assert torch.allclose(raw("smoothgradcampp", model, noise_sigma=0.0), raw("gradcampp", model), atol=1e-5)
    # the spatial model is linear: G does not depend on the input, so noise changes nothing either
    assert torch.allclose(raw("smoothgradcampp", model, noise_sigma=0.5), raw("gradcampp", model), atol=1e-5)


class Quadratic(nn.Module):
    """y = sum(V * A^2) / 2: G = V * A depends on the input, so noise matters."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Identity()
        self.register_buffer("v", torch.tensor([[[1.0, -1.0], [0.5, 2.0]], [[0.3, 0.0], [1.0, -0.2]]]))

    def forward(self, x):
        a = self.feat(x)
        return torch.stack([(self.v * a * a).sum((1, 2, 3)) / 2, a.mean((1, 2, 3))], dim=1)


def test_smooth_gradcampp_averages_gradient_powers_over_noise():
    model = Quadratic().eval()
    x = example_input()
    n, sigma = 3, 0.4
    got = sycam.CAM("smoothgradcampp", model, "feat", options={"noise_n": n, "noise_sigma": sigma}).explain(
        x, 0).layer_maps["feat"][0]
    # independent computation: the same noise draws, G = V * (x + noise)
    gen = torch.Generator().manual_seed(0)
    noisy = x[:, None] + sigma * torch.randn((1, n, *x.shape[1:]), generator=gen)
    G = model.v * noisy[0]                             # (n, k, h, w)
    g2, g3, g = (G ** 2).mean(0), (G ** 3).mean(0), G.mean(0)
    A = x[0]
    den = 2 * g2 + A.sum((1, 2), keepdim=True) * g3
    alpha = torch.where(den != 0, g2 / den, 0.0)   # alpha := 0 where G = 0 (V = 0 here)
    w = (alpha * torch.relu(g)).sum((1, 2))
    expected = torch.relu((w[:, None, None] * A).sum(0))
    assert torch.allclose(got, expected, atol=1e-5)


def test_cameras_averages_resized_evidence_over_kept_scales():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(1, 3, 16, 16)
    scales = (16, 24, 32)
    got = sycam.CAM("cameras", model, "3", options={"scales": scales, "scale_size": "input"}).explain(x, 1)
    # independent computation, following the CAMERAS paper
    base = int(model(x).argmax())
    acts, grads = [], []
    for s in scales:
        xs = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        feats = model[:4](xs).requires_grad_(True)
        out = model[4:](feats)
        if int(out.argmax()) != base:
            continue
        (g,) = torch.autograd.grad(out[0, 1], feats)
        acts.append(F.interpolate(feats.detach(), size=(16, 16), mode="bilinear", align_corners=False))
        grads.append(F.interpolate(g, size=(16, 16), mode="bilinear", align_corners=False))
    expected = torch.relu((torch.stack(acts).mean(0) * torch.stack(grads).mean(0)).sum(1))[0]
    assert agree(got.layer_maps["3"][0], expected, 0.9999)


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_scorecam_softmax_variant_matches_gradcam_and_torchcam(small_cnn):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    expr = "relu(sum(softmax(score, k) * A, k))"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ScoreCAM(model=small_cnn, target_layers=[small_cnn[4]]) as cam:
            theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(2)] * 2))
        ours = sycam.CAM(expr, small_cnn, "4", options={"score_variant": "gradcam"})(x, 2)
        for i in range(2):
            assert agree(ours[i], theirs[i])
        with TorchcamScoreCAM(small_cnn, target_layer="4", input_shape=(3, 24, 24)) as extractor:
            small_cnn(x)
            tc = extractor(class_idx=[2, 2])[0]
        ours_tc = sycam.CAM(expr, small_cnn, "4", options={"score_variant": "torchcam"}).explain(x, 2)
        for i in range(2):
            assert agree(ours_tc.layer_maps["4"][i], tc[i])


def test_ablationcam_matches_gradcam(small_cnn):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with AblationCAM(model=small_cnn, target_layers=[small_cnn[4]]) as cam:
            theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * 2))
    ours = sycam.CAM("ablationcam", small_cnn, "4")(x, 1)
    for i in range(2):
        assert agree(ours[i], theirs[i])


def test_micam_weights_are_mutual_information(small_cnn):
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    exp = sycam.CAM("micam", small_cnn, "4").explain(x, 0)
    mi = exp.evidence.layers["4"].terms["mi"][0]
    A = exp.evidence.layers["4"].A
    assert ((mi >= 0) & (mi <= 1 + 1e-6)).all()
    assert torch.allclose(exp.layer_maps["4"], torch.relu((mi[:, :, None, None] * A).sum(1)), atol=1e-6)


def test_unknown_evidence_option_is_a_clear_error(small_cnn):
    from sycam.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="ss_n"):
        sycam.CAM("sscam", small_cnn, "4", options={"ss_m": 3})
