"""LRP relevance (terminal R) and the Relevance-CAM seed, on hand-built networks.

Hand-worked network (``_two_layer``): input x = (1, 2) (two channels, one pixel), 1x1 conv
W1 = [[1, -1], [3, -0.5]] (no bias) -> z1 = (-1, 2), ReLU -> a1 = (0, 2), linear head
V = [[0.5, 1], [1, -1]] (no bias) -> y = (2, -2); class 0 is explained, S = y_0 = 2.
"""
import pytest
import torch
from tiny import example_input, spatial_model
from torch import nn

import sycam
from sycam.errors import SycamError
from sycam.evidence.capture import capture
from sycam.evidence.layers import resolve_layers
from sycam.evidence.relevance import lrp_mode, relevance
from sycam.evidence.targets import ClassLogit


class _TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Identity()
        self.c1 = nn.Conv2d(2, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.c1.weight.copy_(torch.tensor([[1.0, -1.0], [3.0, -0.5]])[:, :, None, None])
            self.fc.weight.copy_(torch.tensor([[0.5, 1.0], [1.0, -1.0]]))

    def forward(self, x):
        return self.fc(self.relu(self.c1(self.inp(x))).flatten(1))


X = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)


def _rel(model, x, layers, **options):
    refs = resolve_layers(model, layers)
    return relevance(model, x, refs, ClassLogit(0), options=options)


def _close(actual, expected, atol=1e-5):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual.flatten(), expected.flatten(), atol=atol), actual.flatten()


def test_epsilon_rule_by_hand():
    r = _rel(_TwoLayer().eval(), X, ["relu", "inp"], lrp_rule="epsilon", lrp_epsilon=1e-9, lrp_contrast="none")
    # head: R_a1 = a1 * V_0 * y_0 / z_0 = (0, 2); conv: R_x = x_j W1_1j R_1 / z1_1 = (3, -1) * 2 / 2
    _close(r["relu"], [0.0, 2.0])
    _close(r["inp"], [3.0, -1.0])
    assert float(r["inp"].sum()) == pytest.approx(2.0, abs=1e-6)     # conservation: sum R = S


def test_zplus_rule_by_hand():
    r = _rel(_TwoLayer().eval(), X, ["inp"], lrp_rule="zplus", lrp_contrast="none")
    # conv row 1: contributions (3, -1) -> positive part (3, 0), z+ = 3: R_x = (3, 0) * 2 / 3
    _close(r["inp"], [2.0, 0.0])


def test_clrp_subtracts_the_dual_by_hand():
    r = _rel(_TwoLayer().eval(), X, ["relu"], lrp_rule="epsilon", lrp_epsilon=1e-9, lrp_contrast="clrp")
    # output relevance (2, 0) minus the dual: 2 / C = 1 on class 1 -> (2, -1); class 1 part at a1:
    # a1 * V_1 * (-1) / y_1 = (0, -2) * (-1) / (-2) = (0, -1); total (0, 2) + (0, -1)
    _close(r["relu"], [0.0, 1.0])


def test_relevancecam_seed_is_its_formula_by_hand():
    # SpatialHead: A = x, S = sum(V_0 * A) = 1; epsilon rule: R = A * V_0, w = sum_hw R = (5, -4)
    cam = sycam.CAM("relevancecam", spatial_model(), "feat",
                    options={"lrp_rule": "epsilon", "lrp_epsilon": 1e-9, "lrp_contrast": "none"})
    exp = cam.explain(example_input(), 0)
    layer = exp.evidence.layers["feat"]
    _close(layer.terms["R"][0], [[[1.0, 0.0], [0.0, 4.0]], [[-4.0, 0.0], [0.0, 0.0]]])
    _close(exp.layer_maps["feat"], [[0.0, 10.0], [15.0, 16.0]])              # relu(5 A_0 - 4 A_1)
    # z+: only positive contributions (channel 0), z+ = 5: w = (1, 0), L = A_0
    zplus = sycam.CAM("relevancecam", spatial_model(), "feat", options={"lrp_contrast": "none"})
    _close(zplus.explain(example_input(), 0).layer_maps["feat"], [[1.0, 2.0], [3.0, 4.0]])
    # the defaults (z+, CLRP): the dual (0.5 on class 1, y_1 = 0.75) has positive contributions only,
    # R_dual = A * V_1 * 0.5 / 0.75 -> w = (1 - 1/3, -1/6) = (2/3, -1/6)
    default = sycam.CAM("relevancecam", spatial_model(), "feat")
    a0, a1 = example_input()[0]
    _close(default.explain(example_input(), 0).layer_maps["feat"], torch.relu(2 / 3 * a0 - 1 / 6 * a1))


def test_seed_map_equals_formula_on_evidence():
    torch.manual_seed(0)
    model = _Stack().eval()
    x = torch.rand(2, 3, 8, 8)
    exp = sycam.CAM("relevancecam", model, "block").explain(x)
    R, A = exp.evidence.layers["block"].terms["R"][0], exp.evidence.layers["block"].A
    expected = torch.relu((R.sum((2, 3), keepdim=True) * A).sum(1))
    assert torch.allclose(exp.layer_maps["block"], expected, atol=1e-6)


class _Stack(nn.Module):
    """1x1 / 3x3 convs with zero biases, BN (zero shift), ReLU6, a residual add, max and avg pooling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.act = nn.ReLU6()
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Conv2d(6, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.c2 = nn.Conv2d(6, 5, 1, bias=False)
        self.fc = nn.Linear(5, 4, bias=False)
        with torch.no_grad():
            for bn in (self.bn1, self.block[1]):
                bn.weight.uniform_(0.5, 3.0)                  # scales, no shift: biases stay zero
                bn.running_var.uniform_(0.2, 2.0)
                bn.bias.zero_()
            self.c1.weight.mul_(8)                           # some activations above 6 (ReLU6 saturates)

    def forward(self, x):
        h = self.pool(self.act(self.bn1(self.c1(x))))
        h = h + self.block(h)                                # residual
        return self.fc(self.c2(h).mean((2, 3)))


def test_conservation_through_bn_relu6_residual_and_pooling():
    torch.manual_seed(0)
    model = _Stack().eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert (model.act(model.bn1(model.c1(x))) >= 6).any()
        scores = model(x).max(1).values
    refs = resolve_layers(model, ["c1", "bn1", "act", "pool", "c2"])   # (not "block": the residual branch)
    r = relevance(model, x, refs, ClassLogit(None),
                  options={"lrp_rule": "epsilon", "lrp_epsilon": 1e-9, "lrp_contrast": "none"})
    for name, rel in r.items():
        assert torch.allclose(rel.sum((1, 2, 3)), scores, rtol=1e-4), name
    # z+ with CLRP removes relevance (negative contributions, the dual) but stays finite
    r = relevance(model, x, refs, ClassLogit(None))
    assert all(torch.isfinite(v).all() for v in r.values())


def test_model_is_left_as_it_was():
    model = _Stack().eval()
    x = torch.rand(1, 3, 8, 8)
    before = model(x)
    with lrp_mode(model, "epsilon"):
        assert "forward" in model.c1.__dict__
        inside = model(x)
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert torch.equal(before, model(x)) and torch.allclose(before, inside)
    assert all(p.requires_grad for p in model.parameters())


def _small_resnet():
    """torchvision's ResNet with one BasicBlock per stage (in-place ReLUs, `out += identity`)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()


def test_resnet_inplace_relu_and_merged_bn_conserve():
    torch.manual_seed(0)
    model = _small_resnet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 1.5)
        model.fc.bias.zero_()
    x = torch.randn(2, 3, 32, 32)
    scores = model(x).max(1).values.detach()
    r = _rel_top(model, x, ["maxpool", "layer2", "layer3"], lrp_rule="epsilon", lrp_epsilon=1e-9, lrp_contrast="none")
    for rel in r.values():
        assert torch.allclose(rel.sum((1, 2, 3)), scores, rtol=1e-4)


def _rel_top(model, x, layers, **options):
    return relevance(model, x, resolve_layers(model, layers), ClassLogit(None), options=options)


def test_capture_shares_R_and_refuses_unknown_rules():
    model = spatial_model()
    ev = capture(model, example_input(), "feat", 0, needs={"A", "G", "R"}, options={"lrp_contrast": "none"})
    assert set(ev.layers["feat"].terms) >= {"A", "G", "R", "S"}
    with pytest.raises(SycamError, match="LRP rule"):
        sycam.CAM("relevancecam", model, "feat", options={"lrp_rule": "alpha2beta1"})(example_input())


# ---------------------------------------------------------------------- optional: zennit parity
def _zennit_relevance(model, x, layer, rule, canonizers):
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Norm, Pass, ZPlus
    from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear

    conv_rule = ZPlus() if rule in ("zplus", "epsilon_plus") else Epsilon()
    linear_rule = ZPlus() if rule == "zplus" else Epsilon()
    composite = LayerMapComposite([(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm()), (BatchNorm, Pass()),
                                   (Convolution, conv_rule), (Linear, linear_rule)], canonizers=canonizers)
    store = {}

    def keep(_module, _inputs, out):
        out.register_hook(lambda g: store.__setitem__("R", g))   # zennit carries relevance as the gradient

    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(keep)
    try:
        with Gradient(model=model, composite=composite) as attributor:
            logits = model(x).detach()
            c = logits.argmax(1, keepdim=True)
            attributor(x, torch.zeros_like(logits).scatter_(1, c, logits.gather(1, c)))   # relevance y_c on c
    finally:
        handle.remove()
    return store["R"]


@pytest.mark.parametrize("rule", ["zplus", "epsilon_plus"])
def test_matches_zennit_on_resnet(rule):
    pytest.importorskip("zennit")
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    model = _small_resnet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32)
    ours = _rel_top(model, x, ["layer3"], lrp_rule=rule, lrp_contrast="none")["layer3"]
    theirs = _zennit_relevance(model, x, "layer3", rule, [ResNetCanonizer()])
    assert (ours - theirs).abs().max() <= 1e-3 * theirs.abs().max()
