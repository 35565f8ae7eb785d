"""Every seed's map equals its paper formula, worked out by hand on a 2-channel 2x2 example.

A_0 = [[1,2],[3,4]], A_1 = [[4,0],[0,1]] and, for class 0, G_0 = [[1,0],[0,1]],
G_1 = [[-1,-1],[2,0]] (see tests/tiny.py). The expected raw maps below were computed on
paper from the formulas in the docstrings; the test compares the layer-resolution maps.
"""
import math

import pytest
import torch
from tiny import GapHead, SpatialHead, example_input, spatial_model

import sycam
from sycam.evidence.targets import FinerContrast
from sycam.kernels import upsample


def raw_map(method, model=None, target=0):
    model = model or spatial_model()
    cam = sycam.CAM(method, model, "feat")
    return cam.explain(example_input(), target).layer_maps["feat"][0]


def close(actual, expected):
    assert torch.allclose(actual, torch.tensor(expected), atol=1e-5), actual


def test_gradcam_mean_gradient_weights():
    # w = mean_hw G = (0.5, 0); L = relu(0.5 A_0)
    close(raw_map("gradcam"), [[0.5, 1.0], [1.5, 2.0]])


def test_hirescam_elementwise_product():
    # sum_k G_k A_k = [[1,0],[0,4]] + [[-4,0],[0,0]] -> relu
    close(raw_map("hirescam"), [[0.0, 0.0], [0.0, 4.0]])


def test_layercam_positive_gradients():
    # relu(G_0) A_0 + relu(G_1) A_1 = [[1,0],[0,4]] + [[0,0],[2*0,0]]
    close(raw_map("layercam"), [[1.0, 0.0], [0.0, 4.0]])


def test_xgradcam_activation_weighted_gradients():
    # w_0 = (1*1 + 4*1)/10 = 0.5, w_1 = (4*-1)/5 = -0.8; relu(0.5 A_0 - 0.8 A_1)
    close(raw_map("xgradcam"), [[0.0, 1.0], [1.5, 1.2]])


def test_gradcampp_alpha_closed_form():
    # alpha = 1 / (2 + sum(A_k) G) where G != 0: channel 0 -> 1/12 at the two ones, w_0 = 2/12;
    # channel 1 -> alpha = 1/12 at G = 2, w_1 = 2/12 (negative G killed by relu(G));
    # L = (A_0 + A_1) / 6
    close(raw_map("gradcampp"), [[5 / 6, 2 / 6], [3 / 6, 5 / 6]])


def test_ssgradcam_space_map():
    # S_k = |G_k| / max|G_k|: S_0 = G_0, S_1 = [[.5,.5],[1,0]]; w = (0.5, 0)
    close(raw_map("ssgradcam"), [[0.5, 0.0], [0.0, 2.0]])


def test_ssgradcampp_space_map_with_plusplus_weights():
    # w = (1/6, 1/6): (S_0 A_0 + S_1 A_1) / 6 = ([[1,0],[0,4]] + [[2,0],[0,0]]) / 6
    close(raw_map("ssgradcampp"), [[3 / 6, 0.0], [0.0, 4 / 6]])


def test_eigencam_first_principal_component():
    # positions as samples: X = [[1,4],[2,0],[3,0],[4,1]], centred; covariance [[5,-4.5],[-4.5,10.75]];
    # v1 = (0.4804, -0.8771); projections (-3.1327, 0.8562, 1.3366, 0.9399), sign flipped so the
    # largest magnitude is positive, then relu
    got = raw_map("pc1(A)")
    assert torch.allclose(got, torch.tensor([[3.1327, -0.8562], [-1.3366, -0.9399]]), atol=2e-4), got
    assert torch.allclose(raw_map("eigencam"), torch.tensor([[3.1327, 0.0], [0.0, 0.0]]), atol=2e-4)


def test_eigengradcam_first_principal_component_of_gradient_times_activation():
    # G * A per position (channels 0, 1): (1,-4), (0,0), (0,0), (4,0); centred: (-.25,-3), (-1.25,1) twice,
    # (2.75,1); scatter [[10.75, 1], [1, 12]], l_1 = (22.75 + sqrt(5.5625)) / 2, v_1 ~ (1, l_1 - 10.75);
    # projections (-2.7451, 0.2687, 0.2687, 2.2078), sign flipped (the largest |value| is the first), then relu
    l1 = (22.75 + math.sqrt(5.5625)) / 2
    v = torch.tensor([1.0, l1 - 10.75]) / math.hypot(1.0, l1 - 10.75)
    centred = torch.tensor([[-0.25, -3.0], [-1.25, 1.0], [-1.25, 1.0], [2.75, 1.0]])
    projection = -(centred @ v).reshape(2, 2)
    assert torch.allclose(projection, torch.tensor([[2.7451, -0.2687], [-0.2687, -2.2078]]), atol=1e-4)
    close(raw_map("pc1(G * A)"), projection.tolist())
    close(raw_map("eigengradcam"), [[float(projection[0, 0]), 0.0], [0.0, 0.0]])


def test_gradcam_elementwise_relu_before_the_channel_sum():
    # relu(G_0 A_0) + relu(G_1 A_1) = [[1,0],[0,4]] + relu([[-4,0],[0,0]]); HiResCAM sums first: [[0,0],[0,4]]
    close(raw_map("gradcamelementwise"), [[1.0, 0.0], [0.0, 4.0]])
    close(raw_map("hirescam"), [[0.0, 0.0], [0.0, 4.0]])


def three_alike_and_one_apart():
    """A = x with 2 channels on 2x2: positions a = (1, 0) three times and b = (1, 4). Centred, a' = (0, -1)
    and b' = (0, 3). Three equal rows make the centred kernel matrix rank one: its eigenvector is
    (1, 1, 1, -3) / sqrt(12) with l_1 = 3 D / 4, D = k(a,a) - 2 k(a,b) + k(b,b), so the projection
    sqrt(l_1) v_1 (sign flipped) is (-1, -1, -1, 3) sqrt(D) / 4."""
    model = SpatialHead(torch.zeros(1, 2, 2, 2)).eval()
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 4.0]]]])
    return model, x


@pytest.mark.parametrize("kernel, D", [
    # gamma = 1 / K = 1/2. rbf: k(a,a) = k(b,b) = 1, k(a,b) = exp(-|a - b|^2 / 2) = exp(-8)
    ("rbf", 2 - 2 * math.exp(-8)),
    # sigmoid on the centred vectors: tanh(a'.a' / 2 + 1) = tanh(1.5), tanh(b'.b' / 2 + 1) = tanh(5.5),
    # tanh(a'.b' / 2 + 1) = tanh(-0.5)
    ("sigmoid", math.tanh(1.5) + math.tanh(5.5) + 2 * math.tanh(0.5)),
])
def test_kernel_pca_first_component(kernel, D):
    model, x = three_alike_and_one_apart()
    got = sycam.CAM(f"kpc1_{kernel}(A)", model, "feat").explain(x, 0).layer_maps["feat"][0]
    close(got, (torch.tensor([[-1.0, -1.0], [-1.0, 3.0]]) * math.sqrt(D) / 4).tolist())
    if kernel == "sigmoid":        # KPCA-CAM: grad-cam's (the authors') default kernel, then relu
        seed = sycam.CAM("kpcacam", model, "feat").explain(x, 0).layer_maps["feat"][0]
        close(seed, [[0.0, 0.0], [0.0, 3 * math.sqrt(D) / 4]])


def test_fem_weighs_the_k_sigma_masks_by_the_channel_means():
    # A_0: one 9 among 0s: mean 1, std sqrt(8), threshold 1 + 2 sqrt(8) = 6.66: the 9 passes, weight 1.
    # A_1: 2s and one 8: mean 8/3, std sqrt(32) / 3, threshold 6.44: the 8 passes, weight 8/3.
    # A_2: constant 5: std 0, nothing exceeds the mean. FEM = 1 * mask_0 + 8/3 * mask_1
    model = SpatialHead(torch.zeros(1, 3, 3, 3)).eval()
    a0 = torch.zeros(3, 3)
    a0[1, 1] = 9.0
    a1 = torch.full((3, 3), 2.0)
    a1[2, 2] = 8.0
    x = torch.stack([a0, a1, torch.full((3, 3), 5.0)])[None]
    got = sycam.CAM("fem", model, "feat").explain(x, 0).layer_maps["feat"][0]
    close(got, [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 8 / 3]])
    # grad-cam's FEM: each channel weighted by the fraction of its positions in the mask (1/9, 1/9, 0)
    recipe = sycam.SEEDS["fem"].recipes[0].expression
    theirs = sycam.CAM(recipe, model, "feat").explain(x, 0).layer_maps["feat"][0]
    close(theirs, ((a0 + a1) / 9).tolist())


def test_cam_uses_classifier_row_and_equals_gradcam_before_relu():
    # GAP head with w_0 = (1, -0.5): CAM = A_0 - 0.5 A_1 = [[-1,2],[3,3.5]] (no relu);
    # G_k = w_k / 4, so Grad-CAM's pre-relu map is CAM / 4
    model = GapHead(torch.tensor([[1.0, -0.5], [0.0, 1.0]]))
    close(raw_map("cam", model), [[-1.0, 2.0], [3.0, 3.5]])
    close(raw_map("sum(mean(G, hw) * A, k)", model), [[-0.25, 0.5], [0.75, 0.875]])
    close(raw_map("gradcam", model), [[0.0, 0.5], [0.75, 0.875]])


def test_finercam_contrasts_the_most_similar_class():
    # logits: y_0 = sum(V_0 A) = 5 - 4 = 1, y_1 = 0.5*1 + 0.25*1 = 0.75: class 1 is the reference.
    # S' = p_1 (y_0 - y_1) / (p_1 + 1e-9); p_1 stays in the graph as in the reference code, so the
    # expected gradient comes from autograd of S' written out here, then Grad-CAM's formula.
    model = spatial_model()
    x = example_input()
    target = FinerContrast(classes=[0], gamma=1.0, n_refs=1)
    assert target.references(model(x)).tolist() == [[1]]
    a = x.clone().requires_grad_(True)
    s = target(model(a))
    (g,) = torch.autograd.grad(s.sum(), a)
    expected = torch.relu((g.mean(dim=(2, 3), keepdim=True) * x).sum(1))[0]
    cam = sycam.CAM("finercam", model, "feat", n_refs=1)
    got = cam.explain(x, [0]).layer_maps["feat"][0]
    assert torch.allclose(got, expected, atol=1e-6)
    # by hand: p_1 / (p_1 + 1e-9) is ~1 with ~0 derivative, so G = V_0 - V_1, w = (0.375, -0.0625),
    # L = relu(0.375 A_0 - 0.0625 A_1)
    close(got, [[0.125, 0.75], [1.125, 1.4375]])
    # and it differs from plain Grad-CAM of class 0
    assert not torch.allclose(got, raw_map("gradcam"), atol=1e-3)


def test_weights_expression_becomes_generic_cam():
    # an expression of axes {b, k} is channel weights w and gives relu(sum(w * A, k))
    close(raw_map("mean(G, hw)"), [[0.5, 1.0], [1.5, 2.0]])


class Downsampled(torch.nn.Module):
    """A 2x average pooling before the hand-built model: its layer is half the input's size. (The
    ReLU, the identity on these non-negative inputs, is there for guided backpropagation.)"""

    def __init__(self, inner):
        super().__init__()
        self.relu, self.pool, self.inner = torch.nn.ReLU(), torch.nn.AvgPool2d(2), inner

    def forward(self, x):
        return self.inner(self.pool(self.relu(x)))


#: seeds whose maps are computed at the input's resolution, whatever the layer
INPUT_RESOLUTION = ("fullgrad", "guidedbp", "guidedgradcam")


@pytest.mark.parametrize("method", list(sycam.SEEDS))
def test_final_maps_are_normalised_upsampled_raw_maps(method):
    # CAM needs a GAP head; CAMERAS resizes the input, which the fixed-size flatten head cannot take
    gap = method in ("cam", "cameras")
    model = Downsampled(GapHead(torch.tensor([[1.0, -0.5], [0.0, 1.0]])) if gap else spatial_model()).eval()
    x = torch.nn.functional.interpolate(example_input(), size=(4, 4))        # the layer sees 2 x 2
    exp = sycam.CAM(method, model, "inner.feat").explain(x, [0])
    assert exp.maps.shape[-2:] == (4, 4)
    if method in INPUT_RESOLUTION:
        assert exp.layer_maps["inner.feat"].shape[-2:] == (4, 4)
    elif method != "cameras":        # (CAMERAS's layer maps are at its largest input scale)
        assert exp.layer_maps["inner.feat"].shape[-2:] == (2, 2)
    raw = upsample(exp.layer_maps["inner.feat"], tuple(x.shape[-2:]))
    lo, hi = raw.amin(), raw.amax()
    expected = (raw - lo) / (hi - lo) if hi > lo else torch.zeros_like(raw)
    assert torch.allclose(exp.maps, expected, atol=1e-6)
