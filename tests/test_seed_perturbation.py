"""Seeds that need more than one pass: Score-CAM family, Ablation-CAM, MI-CAM, CAMERAS,
Smooth Grad-CAM++. Hand-computed on the 2x2 example where the arithmetic is short."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import agree, pearson
from tiny import GapHead, example_input, spatial_model
from torch import nn

import sycam


def gap_model():
    # class 0: y = mean(A_0) - 0.5 mean(A_1); class 1: y = mean(A_1)
    return GapHead(torch.tensor([[1.0, -0.5], [0.0, 1.0]]))


def raw(method, model, target=0, **options):
    cam = sycam.CAM(method, model, "feat", options=options or None)
    return cam.explain(example_input(), target).layer_maps["feat"][0]


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


def responsive_cnn(act=nn.ReLU, channels=8, scale=30.0):
    """small_cnn's architecture with the head scaled: the logits of masked inputs spread over
    several units, so the peers' softmax channel weights are far from uniform (with nearly
    uniform weights a second softmax changes little and a wrong recipe still "matches")."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, channels, 3, padding=1), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(channels, 4)).eval()
    with torch.no_grad():
        model[7].weight.mul_(scale)
    return model


def gradcam_maps(method, model, x, c):
    """pytorch-grad-cam's final maps of ``method`` (a class name) for class ``c`` at layer "4"."""
    cls = getattr(pytest.importorskip("pytorch_grad_cam"), method)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model=model, target_layers=[model[4]]) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x)))


def recipe(seed, library):
    """The documented recipe (``sycam seeds``) of ``library``'s version of ``seed``."""
    return next(r for r in sycam.methods.get_seed(seed).recipes if r.library.startswith(library))


def same_maps(ours, theirs):
    return all(pearson(a, b) >= 0.999 for a, b in zip(ours, theirs))


def test_scorecam_recipes_match_gradcam_and_torchcam_with_spread_weights():
    TorchcamScoreCAM = pytest.importorskip("torchcam.methods").ScoreCAM

    model = responsive_cnn()
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    gc = recipe("scorecam", "grad-cam")
    ours = sycam.CAM(gc.expression, model, "4", options=gc.options).explain(x, 2)
    w = ours.evidence.layers["4"].terms["score"][0]        # softmax_k of the masked logits (0: dead channel)
    assert all(float(wi[wi > 0].max() / wi[wi > 0].min()) > 5 for wi in w), w   # far from uniform (~13x)
    theirs = gradcam_maps("ScoreCAM", model, x, 2)
    assert same_maps(ours.maps, theirs) and float((ours.maps - theirs).abs().max()) < 1e-4
    # the former recipe, softmax(score, k) with the same options, takes the softmax twice (r ~ 0.93, 0.96)
    twice = "relu(sum(softmax(score, k) * A, k))"
    assert all(pearson(a, b) < 0.99 for a, b in zip(sycam.CAM(twice, model, "4", options=gc.options)(x, 2), theirs))

    tc = recipe("scorecam", "torchcam")
    with TorchcamScoreCAM(model, target_layer="4", input_shape=(3, 24, 24)) as extractor:
        model(x)
        theirs_tc = extractor(class_idx=[2, 2])[0]
    ours_tc = sycam.CAM(tc.expression, model, "4", options=tc.options).explain(x, 2).layer_maps["4"]
    assert same_maps(ours_tc, theirs_tc)
    twice_tc = sycam.CAM(twice, model, "4", options=tc.options).explain(x, 2).layer_maps["4"]
    assert all(pearson(a, b) < 0.99 for a, b in zip(twice_tc, theirs_tc))


def test_scorecam_skip_constant_false_forwards_constant_channels_as_gradcam():
    model = responsive_cnn(act=nn.Identity)             # A = conv output: a constant channel shifts the map
    with torch.no_grad():
        model[3].weight[1] = 0.0
        model[3].bias[1] = 3.0
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    theirs = gradcam_maps("ScoreCAM", model, x, 2)
    options = recipe("scorecam", "grad-cam").options
    skipped = sycam.CAM("relu(sum(score * A, k))", model, "4", options=options)(x, 2)
    assert not same_maps(skipped, theirs)               # w_1 = 0 here, grad-cam weighs S(x * 0)
    kept = sycam.CAM("relu(sum(score * A, k))", model, "4", options={**options, "skip_constant": False})(x, 2)
    assert same_maps(kept, theirs) and float((kept - theirs).abs().max()) < 1e-4


def test_ablationcam_matches_gradcam(small_cnn):
    """A ReLU layer: min(A) = 0, so grad-cam ablates with 0 like the paper; the recipe agrees."""
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    theirs = gradcam_maps("AblationCAM", small_cnn, x, 1)
    assert same_maps(sycam.CAM("ablationcam", small_cnn, "4")(x, 1), theirs)
    gc = recipe("ablationcam", "grad-cam")
    assert same_maps(sycam.CAM(gc.expression, small_cnn, "4", options=gc.options)(x, 1), theirs)


def test_ablationcam_recipe_matches_gradcam_when_activations_go_below_zero():
    """A SiLU layer: min(A) < 0, so grad-cam sets a channel to min(A) - 1e7 (1 + k mod 32); 40
    channels run through two of its 32-row batches."""
    model = responsive_cnn(act=nn.SiLU, channels=40, scale=3.0)
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    theirs = gradcam_maps("AblationCAM", model, x, 1)
    gc = recipe("ablationcam", "grad-cam")
    cam = sycam.CAM(gc.expression, model, "4", options=gc.options)
    ours = cam.explain(x, 1)
    assert (ours.evidence.layers["4"].A.flatten(1).amin(1) < 0).all()
    assert same_maps(ours.maps, theirs) and float((ours.maps - theirs).abs().max()) < 1e-4
    # the paper's value 0 is another method here (r ~ 0.08, 0.06)
    assert all(pearson(a, b) < 0.9 for a, b in zip(sycam.CAM("ablationcam", model, "4")(x, 1), theirs))


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


@pytest.mark.parametrize("options", [{"ablation_value": "min"}, {"ablation_value": float("nan")},
                                     {"ablation_value": None}, {"score_variant": "grad-cam"},
                                     {"skip_constant": "no"}])
def test_bad_evidence_option_values_are_clear_errors(small_cnn, options):
    from sycam.evidence.options import OptionError

    key = next(iter(options))
    with pytest.raises(OptionError, match=key):
        sycam.CAM("ablationcam", small_cnn, "4", options=options)
