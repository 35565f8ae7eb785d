"""pytorch-grad-cam's switches on any method (issue 12, item 4): ``eigen_smooth`` (the map's channel
sum becomes its first principal component) and ``aug_smooth`` (the mean over flipped and scaled
views). Hand-computed maps on the hand-built models of tests/tiny.py, the rewrite on every seed,
the meta-methods, and parity with grad-cam 1.5.7 on random resnet18."""
import math
import warnings

import pytest
import torch
import torchvision
from conftest import agree, pearson
from test_targets_dense import PixelHead
from tiny import A0, A1, G0, G1, GapHead, SpatialHead, example_input, spatial_model

from sycam.api import CAM, AugSmooth, explain, make_cam
from sycam.commands.explain import method_cost
from sycam.errors import ExpressionTypeError, SycamError
from sycam.evidence.detection import DetectionTarget
from sycam.evidence.targets import SegmentationTarget
from sycam.grammar import parse, to_text
from sycam.grammar.checker import eigen_smooth
from sycam.methods.metacam import MetaCAM


def _flat(m):
    return [v for row in m for v in row]


def pc1_by_hand(X):
    """Projections of positions (rows of X, 2 channels) on the first principal direction of the
    centred data, from the 2 x 2 scatter matrix in closed form; the sign making the largest |value|
    positive (sycam's convention)."""
    n = len(X)
    mx, my = sum(p[0] for p in X) / n, sum(p[1] for p in X) / n
    C = [(p[0] - mx, p[1] - my) for p in X]
    a, b, c = sum(u * u for u, _ in C), sum(u * v for u, v in C), sum(v * v for _, v in C)
    lam = (a + c) / 2 + math.sqrt(((a - c) / 2) ** 2 + b * b)
    v = (b, lam - a) if abs(b) > 0 else ((1.0, 0.0) if a >= c else (0.0, 1.0))
    norm = math.hypot(*v)
    p = [(u * v[0] + w * v[1]) / norm for u, w in C]
    top = max(p, key=abs)
    return [-q for q in p] if top < 0 else p


# ---------------------------------------------------------------------- eigen_smooth: the rewrite
@pytest.mark.parametrize("text,smoothed", [
    ("relu(sum(mean(G, hw) * A, k))", "relu(pc1(mean(G, hw) * A))"),
    ("relu(mean(relu(G) * A, k))", "relu(pc1(relu(G) * A))"),
    ("-sum(G * A, k)", "-pc1(G * A)"),
    ("relu(pc1(A))", "relu(pc1(A))"),
])
def test_eigen_smooth_replaces_the_channel_sum_by_its_first_component(text, smoothed):
    assert to_text(eigen_smooth(parse(text))) == smoothed


@pytest.mark.parametrize("text", ["relu(sum(G * A, k)) * 2", "sum(A, khw) * mean(A, k)", "relu(max(A, k))"])
def test_eigen_smooth_refuses_a_map_without_a_channel_sum_on_top(text):
    with pytest.raises(ExpressionTypeError, match="eigen_smooth replaces a map's sum over channels"):
        eigen_smooth(parse(text))


@pytest.mark.parametrize("seed,smoothed", [
    ("gradcampp", "relu(pc1(sum(G2 / (2 * G2 + sum(A, hw) * G3) * relu(G), hw) * A))"),
    ("scorecam", "relu(pc1(score * A))"),
    ("cam", "pc1(W * A)"),
    ("eigencam", "relu(pc1(A))"),
])
def test_seeds_are_eigen_smoothed_where_their_channels_are_summed(seed, smoothed):
    assert CAM(seed, spatial_model(), "feat", eigen_smooth=True).text == smoothed


# ---------------------------------------------------------------------- eigen_smooth: by hand
def test_eigen_smoothed_hirescam_by_hand():
    # HiResCAM's X = G * A; G = V_0 = (G0, G1) for SpatialHead's class 0
    X = list(zip(_flat([[g * a for g, a in zip(gr, ar)] for gr, ar in zip(G0, A0)]),
                 _flat([[g * a for g, a in zip(gr, ar)] for gr, ar in zip(G1, A1)])))
    want = [max(p, 0.0) for p in pc1_by_hand(X)]
    got = CAM("hirescam", spatial_model(), "feat", eigen_smooth=True).explain(example_input(), 0)
    assert got.layer_maps["feat"][0].flatten().tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert max(want) > 0 and sum(w == 0 for w in want) >= 1      # the relu cut some positions


def test_eigen_smoothed_gradcam_projects_the_weighted_activations_by_hand():
    model = GapHead(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))      # G_k = w_0k / 4 everywhere
    w = (1.0 / 4, 2.0 / 4)                                       # Grad-CAM: mean_hw(G)
    X = [(w[0] * a0, w[1] * a1) for a0, a1 in zip(_flat(A0), _flat(A1))]
    want = [max(p, 0.0) for p in pc1_by_hand(X)]
    got = CAM("gradcam", model, "feat", eigen_smooth=True).explain(example_input(), 0)
    assert got.layer_maps["feat"][0].flatten().tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_eigen_smooth_goes_to_the_components_of_meta_methods_and_survives_with_model():
    meta = make_cam("metacam", spatial_model(), "feat", components=["gradcam", "layercam"], eigen_smooth=True)
    assert [c.text for c in meta.cams.values()] == ["relu(pc1(mean(G, hw) * A))", "relu(pc1(relu(G) * A))"]
    again = meta.with_model(spatial_model())
    assert [c.text for c in again.cams.values()] == [c.text for c in meta.cams.values()]
    gpnn = make_cam("gpnncam", spatial_model(), "feat", eigen_smooth=True)
    assert gpnn.base.text == "relu(pc1(mean(G, hw) * A))"
    assert gpnn.with_model(spatial_model()).base.text == gpnn.base.text
    assert "pc1" not in make_cam("metacam", spatial_model(), "feat", components=["gradcam"]).cams["gradcam"].text


# ---------------------------------------------------------------------- aug_smooth: by hand
def _flip_test_model():
    """SpatialHead whose class 1 wins only on the mirrored image: V_1 = (0, [[0, 1], [0, 0]]).
    Logits y_0 = 1, y_1 = 0 on the example; y_0 = 3, y_1 = 4 on its mirror."""
    v0 = torch.tensor([G0, G1])
    v1 = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])
    return SpatialHead(torch.stack([v0, v1])).eval()


def test_aug_smoothed_hirescam_by_hand_with_the_class_fixed_on_the_image():
    # G = V_0 whatever the input, so a view (flip f, factor m) gives relu(V_0 . m f(x)); brought back:
    # minmax(relu(V_0 . x)) = [[0, 0], [0, 1]] unflipped, minmax(relu(f(V_0) . x)) = [[0, 2/3], [1, 2/3]]
    # flipped; 3 views each: mean [[0, 1/3], [1/2, 5/6]], min-max [[0, 0.4], [0.6, 1]]. The mirrored
    # views' own top-1 is class 1 (grad-cam would explain it there): here class 0, the image's.
    want = torch.tensor([[0.0, 0.4], [0.6, 1.0]])
    cam = make_cam("hirescam", _flip_test_model(), "feat", aug_smooth=True)
    assert isinstance(cam, AugSmooth) and len(cam.views) == 6
    for targets in (None, 0):
        got = cam(example_input(), targets)[0]
        assert torch.allclose(got, want, atol=1e-6), targets
    class1 = cam(example_input(), 1)[0]
    assert not torch.allclose(class1, want, atol=1e-3)


def test_a_segmentation_mask_flips_with_the_image():
    # a 1x1 convolution commutes with the flip, so with the mask flipped too every view gives
    # relu(M * y_0) = [[0, 2], [0, 3]] back in the image's frame; with the mask left in place the
    # mirrored views would give relu(f(M) * y_0) = [[0, 2], [3, 0]]
    mask = [[1.0, 1.0], [0.0, 1.0]]
    got = make_cam("hirescam", PixelHead(), "feat", aug_smooth=True)(example_input(), SegmentationTarget(0, mask))
    assert torch.allclose(got[0], torch.tensor([[0.0, 2 / 3], [0.0, 1.0]]), atol=1e-6)
    # the predicted pixels of the image (not of each view) are the region: [[0, 1], [1, 0]] for class 0
    got = make_cam("hirescam", PixelHead(), "feat", aug_smooth=True)(example_input(), SegmentationTarget(0))
    assert torch.allclose(got[0], torch.tensor([[0.0, 2 / 3], [1.0, 0.0]]), atol=1e-6)


def test_aug_smooth_wraps_meta_methods():
    model, x = spatial_model(), torch.rand(2, 2, 2, 2, generator=torch.Generator().manual_seed(0)) + 0.5
    meta = MetaCAM(["gradcam", "hirescam"], model, "feat", k=0.5)
    views = []
    for flip in (False, True):
        for m in (1.0, 0.9, 1.1):
            xv = (x * m).flip(-1) if flip else x * m
            out = meta(xv, [0, 1])
            views.append(out.flip(-1) if flip else out)
    mean = torch.stack(views).mean(0)
    lo, hi = mean.amin((1, 2), keepdim=True), mean.amax((1, 2), keepdim=True)
    got = AugSmooth(meta)(x, [0, 1])
    assert torch.allclose(got, (mean - lo) / (hi - lo), atol=1e-6)
    assert AugSmooth(meta).with_model(spatial_model()).text.startswith("aug_smooth(metacam(gradcam, hirescam")


def test_aug_smooth_costs_one_run_per_view_and_refuses_what_it_cannot_flip():
    cam = make_cam("gradcam", spatial_model(), "feat", aug_smooth=True)
    cost = method_cost(cam, {"feat": 2}, 2)
    assert cost.forwards == 6 * 2 and "6 augmented views" in cost.what
    assert len(AugSmooth(CAM("gradcam", spatial_model(), "feat"), flip=False, factors=(1.0,)).views) == 1
    with pytest.raises(SycamError, match="positive numbers"):
        AugSmooth(cam.inner, factors=(0.0,))
    with pytest.raises(SycamError, match="already augmentation-smoothed"):
        AugSmooth(cam)
    with pytest.raises(SycamError, match=r"aug_smooth wraps any explainer: sycam.AugSmooth\(sycam.CAM"):
        CAM("gradcam", spatial_model(), "feat", aug_smooth=True)
    with pytest.raises(SycamError, match="cannot move a detection target's boxes"):
        cam(example_input(), DetectionTarget([0.0, 0.0, 1.0, 1.0]))


# ---------------------------------------------------------------------- parity with pytorch-grad-cam
CLASSES = [3, 7]


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def _gradcam(model, x, **kw):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with GradCAM(model=model, target_layers=[model.layer4]) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLASSES], **kw))


def test_eigen_smooth_matches_gradcam_up_to_the_sign_of_the_component(resnet18):
    """grad-cam projects w * A on numpy's SVD direction, whose sign is arbitrary; ours makes the largest
    |projection| positive. The projections agree up to that sign, and writing grad-cam's sign into
    the expression reproduces its map."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    smoothed = CAM("gradcam", resnet18, "layer4", eigen_smooth=True)
    assert smoothed.text == "relu(pc1(mean(G, hw) * A))"
    e = smoothed.explain(x, CLASSES)
    lay = e.evidence.layers["layer4"]
    weighted = lay.terms["G"][0].mean((2, 3), keepdim=True) * lay.A
    theirs_projection = torch.from_numpy(get_2d_projection(weighted.numpy()))
    ours_projection = CAM("pc1(mean(G, hw) * A)", resnet18, "layer4").explain(x, CLASSES).layer_maps["layer4"]
    ref = _gradcam(resnet18, x, eigen_smooth=True)
    for i in range(2):
        r = pearson(ours_projection[i], theirs_projection[i])
        assert abs(r) >= 0.9999
        theirs_sign = "relu(pc1(mean(G, hw) * A))" if r > 0 else "relu(-pc1(mean(G, hw) * A))"
        assert agree(CAM(theirs_sign, resnet18, "layer4")(x[i:i + 1], CLASSES[i])[0], ref[i])
        if r > 0:
            assert agree(e.maps[i], ref[i])


def test_aug_smooth_matches_gradcam(resnet18):
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    ref = _gradcam(resnet18, x, aug_smooth=True)
    ours = explain("gradcam", resnet18, x, "layer4", CLASSES, aug_smooth=True)
    for i in range(2):
        assert float(ref[i].std()) > 0.05
        assert pearson(ours[i], ref[i]) >= 0.999
