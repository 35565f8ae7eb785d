"""ShapleyCAM, FullGrad, Guided Backpropagation and Guided Grad-CAM: their terminals (HA, X, Gx, FB,
GB) and the resize operator, against formulas worked out by hand on hand-built models (numbers in
the comments), independent float64 autograd references, the passes they cost, and their errors."""
import copy

import pytest
import torch
from PIL import Image
from tiny import G0, G1, example_input
from torch import nn

import sycam
from sycam.api import explain_many
from sycam.cli import main
from sycam.errors import EvidenceError, ExpressionTypeError
from sycam.evidence.fullgrad import bias_probes, effective_bias
from sycam.evidence.targets import ClassReST
from sycam.grammar import check, parse
from sycam.kernels import evaluate, to_layout
from sycam.methods import SEEDS


def layer_map(method, model, layer, x, target=0):
    return sycam.CAM(method, model, layer).explain(x, target).layer_maps[layer][0]


def close(actual, expected):
    assert torch.allclose(actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-5), actual


# ----------------------------------------------------------------------------------------- ShapleyCAM

class QuadraticHead(nn.Module):
    """A = x (the identity layer ``feat``); y_c = sum(V_c A) + (sum(U_c A))^2 / 2, so
    G = V_c + (U_c . A) U_c and H = U_c U_c^T: H A = (U_c . A) U_c."""

    def __init__(self, V: torch.Tensor, U: torch.Tensor):
        super().__init__()
        self.feat = nn.Identity()
        self.V, self.U = nn.Parameter(V), nn.Parameter(U)

    def forward(self, x):
        a = self.feat(x).flatten(1)
        return a @ self.V.flatten(1).T + 0.5 * (a @ self.U.flatten(1).T) ** 2


def quadratic_model(dtype=torch.float32):
    V = torch.stack([torch.tensor([G0, G1]), torch.tensor([[[0.5, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.25]]])])
    U = torch.zeros(2, 2, 2, 2)
    U[0, 0, 0, 1] = 1.0                      # U_0 . A = A_0[0, 1] = 2 on the example
    return QuadraticHead(V.to(dtype), U.to(dtype)).eval()


def test_ha_is_the_hessian_times_a_and_shapleycam_its_formula_with_the_logit():
    model, x = quadratic_model(), example_input()
    ev = sycam.capture(model, x, "feat", 0, needs={"HA"})
    terms = ev.layers["feat"].terms
    U0 = torch.zeros(2, 2, 2)
    U0[0, 0, 1] = 1.0
    assert torch.allclose(terms["G"][0][0], torch.tensor([G0, G1]) + 2 * U0)      # V_0 + (U_0 . A) U_0
    assert torch.allclose(terms["HA"][0][0], 2 * U0)                               # (U_0 . A) U_0
    # G - HA / 2 = V_0 + U_0: w_0 = mean([[1,1],[0,1]]) = 0.75, w_1 = mean(G1) = 0; L = relu(0.75 A_0)
    close(layer_map("relu(sum(mean(G - 0.5 * HA, hw) * A, k))", model, "feat", x), [[0.75, 1.5], [2.25, 3.0]])
    # Grad-CAM reads G alone: w_0 = mean([[1,2],[0,1]]) = 1
    close(layer_map("gradcam", model, "feat", x), [[1.0, 2.0], [3.0, 4.0]])


def test_shapleycam_seed_equals_its_formula_with_the_rest_target_from_a_full_float64_hessian():
    model, x = quadratic_model(torch.float64), example_input().double()

    def rest(a):   # S = y_0 + log softmax(y)_0, as a function of the flattened layer
        y = model(a.reshape(1, 2, 2, 2))
        return (y[:, 0] + y.log_softmax(1)[:, 0]).sum()

    a = x.flatten()
    G = torch.autograd.functional.jacobian(rest, a)
    H = torch.autograd.functional.hessian(rest, a)            # the whole 8 x 8 Hessian
    w = (G - 0.5 * H @ a).reshape(2, 4).mean(1)
    expected = torch.relu((w[:, None, None] * x[0]).sum(0))
    got = layer_map("shapleycam", model.float(), "feat", x.float())
    assert torch.allclose(got.double(), expected, atol=1e-5), (got, expected)
    assert not torch.allclose(got, layer_map("gradcam", model, "feat", x.float()), atol=1e-2)


def test_ha_of_nested_layers_captured_together_equals_each_alone():
    # layer3 feeds layer4: each layer's H A differentiates its own G only (no cross terms)
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    both = sycam.capture(model, x, ["layer3", "layer4"], ClassReST([3, 7]), needs={"HA"})
    for layer in ("layer3", "layer4"):
        alone = sycam.capture(model, x, [layer], ClassReST([3, 7]), needs={"HA"}).layers[layer].terms["HA"][0]
        assert alone.abs().amax() > 0
        assert torch.allclose(both.layers[layer].terms["HA"][0], alone, atol=1e-7)


def test_rest_target_is_the_logit_plus_the_log_probability():
    y = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    expected = y[[0, 1], [0, 2]] + y.log_softmax(1)[[0, 1], [0, 2]]
    assert torch.allclose(ClassReST([0, 2])(y), expected)
    assert torch.allclose(ClassReST()(y), 2 * y.amax(1) - y.logsumexp(1))          # top-1 by default


def test_ha_is_zero_behind_a_piecewise_linear_head_so_shapleycam_with_the_logit_is_gradcam():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    ev = sycam.capture(model, x, "1", [0, 2], needs={"HA"})
    assert torch.equal(ev.layers["1"].terms["HA"][0], torch.zeros(2, 4, 6, 6))
    logit = sycam.CAM("relu(sum(mean(G - 0.5 * HA, hw) * A, k))", model, "1")(x, [0, 2])
    assert torch.allclose(logit, sycam.CAM("gradcam", model, "1")(x, [0, 2]))


# ------------------------------------------------------------------------------------------- FullGrad

class BiasNet(nn.Module):
    """z1 = conv1x1(x) = x_0 - x_1 + 0.5; a = relu(z1); z2 = bn(a) = a - 0.75 (mu 1, var 4, eps 0,
    gamma 2, beta 0.25: effective bias -0.75); y_c = sum(V_c z2)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 1)
        self.relu = nn.ReLU(inplace=inplace)
        self.bn = nn.BatchNorm2d(1, eps=0.0)
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1))
            self.conv.bias.fill_(0.5)
            self.bn.running_mean.fill_(1.0)
            self.bn.running_var.fill_(4.0)
            self.bn.weight.fill_(2.0)
            self.bn.bias.fill_(0.25)
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0, -1.0, 1.0], [0.0, 1.0, 1.0, 0.0]]))
        self.eval()

    def forward(self, x):
        return self.fc(self.bn(self.relu(self.conv(x))).flatten(1))


def bias_input():
    # x_0 = [[1,0],[2,1]], x_1 = [[0,1],[0,2]]: z1 = [[1.5,-0.5],[2.5,-0.5]], ReLU open at the left column
    return torch.tensor([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [0.0, 2.0]]]])


@pytest.mark.parametrize("inplace", [False, True])
def test_fullgrad_terms_and_map_by_hand(inplace):
    # V_0 = [[1,2],[-1,1]], mask m = [[1,0],[1,0]]: dS/dz2 = V, dS/dz1 = V m;
    # Gx_0 = V m = [[1,0],[-1,0]], Gx_1 = -V m
    model, x = BiasNet(inplace), bias_input()
    ev = sycam.capture(model, x, "bn", 0, needs={"Gx", "FB", "X"})
    terms = ev.layers["bn"].terms
    close(terms["Gx"][0][0], [[[1.0, 0.0], [-1.0, 0.0]], [[-1.0, 0.0], [1.0, 0.0]]])
    # FB: conv |0.5 V m| = [[.5,0],[.5,0]] -> minmax [[1,0],[1,0]];
    #     bn |-0.75 V| = .75 [[1,2],[1,1]] -> minmax [[0,1],[0,0]]
    close(terms["FB"][0][0], [[1.0, 1.0], [1.0, 0.0]])
    # input term: |Gx * x| = [[1,0],[2,0]] (colour 0) -> [[.5,0],[1,0]]; colour 1 is 0 everywhere
    close(layer_map("fullgrad", model, "bn", x), [[1.5, 1.0], [2.0, 0.0]])
    assert torch.equal(terms["X"][0], x)


def float64_resnet18():
    """A random resnet18 in float64 whose BatchNorms have non-zero effective biases (torchvision's
    initialisation makes them 0: mean 0, beta 0)."""
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
    return model


def test_bias_probes_give_the_full_gradient_decomposition():
    # completeness (ReLU networks, eval-mode BatchNorm): y = sum(dy/dx * x) + sum_l sum(b_l * dy/dz_l),
    # on resnet18 (in-place ReLUs overwrite every BatchNorm output) with the logit of class 3; the
    # linear head's bias adds itself (it has no grid, so the map leaves it out)
    model = float64_resnet18()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    with bias_probes(model) as probes:
        y = model(x)[0, 3]
    grads = torch.autograd.grad(y, [x] + [p.delta for p in probes])
    assert len(probes) == 20                                      # every BatchNorm2d (its convs have no bias)
    total = (grads[0] * x).sum() + sum((g * p.bias[:, None, None]).sum() for p, g in zip(probes, grads[1:]))
    total = total + model.fc.bias[3]
    assert torch.allclose(total.detach(), y.detach(), rtol=1e-9), (float(total), float(y))
    assert not model.conv1._forward_hooks and all(not m._forward_hooks for m in model.modules())
    bn = model.bn1
    manual = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(effective_bias(bn), manual)


# --------------------------------------------------------------------- Guided Backpropagation and Grad-CAM

class GuidedNet(nn.Module):
    """Per position j: h = relu(W1 x_j), W1 = [[1,-1],[-1,2]]; z_j = h_0 - h_1; y_0 = z_0 + 2 z_1."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(2, 1, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 2.0]]).reshape(2, 2, 1, 1))
            self.conv2.weight.copy_(torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [1.0, 0.0]]))
        self.eval()

    def forward(self, x):
        return self.fc(self.conv2(self.relu(self.conv1(x))).flatten(1))


def guided_input():
    # positions 0 and 1 of a 1 x 2 grid: x_0 = (1, 0), x_1 = (0, 1) -> W1 x = (1, -1), (-1, 2)
    return torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_backprop_by_hand(inplace):
    # dy/dh_j = P_j (1, -1) with P = (1, 2): (1, -1) at position 0, (2, -2) at position 1.
    # Plain: masks (1, 0), (0, 1) -> (1, 0), (0, -2) -> dy/dx = W1^T: (1, -1), (2, -4).
    # Guided: relu first -> (1, 0), (2, 0), masked -> (1, 0), (0, 0) -> (1, -1), (0, 0).
    model, x = GuidedNet(inplace), guided_input()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    ev = sycam.capture(model, x, "conv2", 0, needs={"Gx", "GB"})
    terms = ev.layers["conv2"].terms
    close(terms["Gx"][0][0], [[[1.0, 2.0]], [[-1.0, -4.0]]])
    close(terms["GB"][0][0], [[[1.0, 0.0]], [[-1.0, 0.0]]])
    close(layer_map("guidedbp", model, "conv2", x), [[1.0, 0.0]])                 # max_k |GB|
    close(layer_map("sum(abs(GB), k)", model, "conv2", x), [[2.0, 0.0]])
    # the model is untouched: the same ReLU modules, no hooks, no parameter gradients
    assert [m for m in model.modules() if isinstance(m, nn.ReLU)] == relus and relus[0].inplace == inplace
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_guided_gradcam_by_hand():
    # at the ReLU's output (the input's grid): A_0 = (1, 0), A_1 = (0, 2); G = dy/dh: G_0 = (1, 2),
    # G_1 = (-1, -2); w = (1.5, -1.5): L = relu(1.5 A_0 - 1.5 A_1) = (1.5, 0); map = max_k |GB L|
    model, x = GuidedNet(), guided_input()
    close(layer_map("gradcam", model, "relu", x), [[1.5, 0.0]])
    close(layer_map("guidedgradcam", model, "relu", x), [[1.5, 0.0]])


def test_guided_gradcam_resamples_the_layer_map_to_the_input_grid():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    e = sycam.CAM("guidedgradcam", model, "4").explain(x, [0, 1])
    terms = e.evidence.layers["4"].terms
    L = torch.relu((terms["G"][0].mean((2, 3), keepdim=True) * terms["A"][0]).sum(1))       # (2, 4, 4)
    up = torch.nn.functional.interpolate(L[:, None], size=(8, 8), mode="bilinear", align_corners=False)
    expected = (terms["GB"][0] * up).abs().amax(1)
    assert torch.allclose(e.layer_maps["4"], expected, atol=1e-6)


def test_resize_is_half_pixel_bilinear_and_typed():
    # [a, b] on a 1 x 2 grid -> 1 x 4: a, 3a/4 + b/4, a/4 + 3b/4, b (the edges clamp)
    x = torch.tensor([[[[2.0, 6.0]]]])
    like = torch.zeros(1, 3, 1, 4)
    got = evaluate(parse("resize(A, X)"), {"A": to_layout(x, "bkhw"), "X": to_layout(like, "bkhw")},
                   {"A": "bkhw", "X": "bkhw"})
    close(got[0, 0], [[2.0, 3.0, 5.0, 6.0]])
    axes = {"A": "bkhw", "X": "bkhw", "S": "b"}
    assert check(parse("resize(sum(A, k), X)"), axes) == frozenset("bhw")
    with pytest.raises(ExpressionTypeError, match="no grid"):
        check(parse("resize(mean(A, hw), X)"), axes)
    with pytest.raises(ExpressionTypeError, match="which has no"):
        check(parse("resize(A, S)"), axes)


# ----------------------------------------------------------------------------------------- costs

@pytest.fixture
def passes(monkeypatch):
    """Counts of model forwards (calls of the top-level module) and of autograd backward calls."""
    counts = {"forward": 0, "backward": 0}
    grad = torch.autograd.grad

    def counted(*args, **kwargs):
        counts["backward"] += 1
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)
    return counts


@pytest.mark.parametrize("method,backwards", [("gradcam", 1), ("shapleycam", 2), ("fullgrad", 1),
                                              ("guidedbp", 1), ("guidedgradcam", 2)])
def test_each_method_costs_one_forward_and_its_backwards(passes, method, backwards):
    model, x = BiasNet(), bias_input()
    model.register_forward_pre_hook(lambda *_: passes.__setitem__("forward", passes["forward"] + 1))
    sycam.CAM(method, model, "bn").explain(x, 0)
    assert passes == {"forward": 1, "backward": backwards}, SEEDS[method].cost


def test_methods_explained_together_share_the_first_pass(passes):
    model, x = BiasNet(), bias_input()
    model.register_forward_pre_hook(lambda *_: passes.__setitem__("forward", passes["forward"] + 1))
    cams = {m: sycam.CAM(m, model, "bn") for m in ("gradcam", "fullgrad", "guidedbp", "guidedgradcam", "shapleycam")}
    out = explain_many(cams, x, 0)
    # ShapleyCAM explains another target (ReST): two first passes; the logit one takes G, Gx and FB
    # from one backward and GB from a second, ShapleyCAM's has its backward and one Hessian-vector product
    assert passes == {"forward": 2, "backward": 4}
    assert torch.allclose(out["fullgrad"].maps, cams["fullgrad"](x, 0))


# ----------------------------------------------------------------------------------------- errors

def test_guided_backprop_needs_relu_modules():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(EvidenceError, match=r"nn.ReLU.*SiLU.*max\(abs\(Gx\), k\)"):
        sycam.CAM("guidedbp", model.eval(), "0")(torch.randn(1, 3, 6, 6))
    assert all(not m._forward_hooks for m in model.modules())
    assert sycam.CAM("max(abs(Gx), k)", model, "0")(torch.randn(1, 3, 6, 6)).shape == (1, 6, 6)


def test_a_layer_term_times_an_input_term_names_resize():
    model = copy.deepcopy(GuidedNet())
    x = torch.randn(1, 2, 1, 2)
    # the layer is at the input's grid here, but has 2 channels against 2 colours: legal
    assert sycam.CAM("sum(GB * A, k)", model, "relu")(x).shape == (1, 1, 2)
    small = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    with pytest.raises(ExpressionTypeError, match=r"`Gx \* A` combines values of different sizes.*resize\(x, like\)"):
        sycam.CAM("sum(Gx * A, k)", small, "1")(torch.randn(1, 3, 9, 9))


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save(p)
        paths.append(str(p))
    return paths


def test_cli_runs_the_methods_and_reports_a_grid_mismatch_without_traceback(tmp_path, images, capsys):
    out = tmp_path / "out"
    assert main(["explain", "--model", "resnet18", "--layer", "layer3", "--method", "shapleycam", "--method",
                 "fullgrad", "--method", "guidedgradcam", "--device", "cpu", "--out", str(out), *images]) == 0
    assert len(list((out / "overlays").glob("*.png"))) == 6
    capsys.readouterr()
    assert main(["explain", "--model", "resnet18", "--layer", "layer3", "--method", "sum(Gx * A, k)",
                 "--device", "cpu", "--out", str(tmp_path / "bad"), *images]) == 2
    err = capsys.readouterr().err
    assert "combines values of different sizes" in err and "Traceback" not in err
