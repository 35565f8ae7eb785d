"""Evidence capture: hooks that never leak, no parameter gradients, clear errors."""
import gc
import warnings

import pytest
import torch
from torch import nn

import sycam
from sycam.errors import EvidenceError, SycamError, UnknownNameError
from sycam.evidence.capture import capture
from sycam.evidence.layers import default_layer, list_layers, resolve_layer
from sycam.evidence.targets import ClassProbability, FinerContrast


class Small(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                                      nn.ReLU())
        self.act = nn.ReLU()          # used twice in forward
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = self.act(self.features(x))
        x = self.act(x * 2)
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Small().eval()


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_gradients_are_exact_and_parameters_untouched(model):
    x = torch.randn(2, 3, 8, 8)
    ev = capture(model, x, ["features"], [1, 3], needs={"A", "G", "W"})
    # reference: autograd through an explicit forward
    feats = model.features(x).requires_grad_(True)
    logits = model.fc(model.act(model.act(feats) * 2).mean((2, 3)))
    score = logits[0, 1] + logits[1, 3]
    (g,) = torch.autograd.grad(score, feats)
    assert torch.allclose(ev.layers["features"].terms["G"][0], g, atol=1e-6)
    assert torch.allclose(ev.scores, torch.stack([logits[0, 1], logits[1, 3]]).detach())
    assert torch.allclose(ev.layers["features"].terms["W"][0], model.fc.weight[[1, 3]])
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert hook_count(model) == 0


def test_hooks_are_removed_even_when_the_target_fails(model):
    with pytest.raises(SycamError):
        capture(model, torch.randn(2, 3, 8, 8), ["features"], [1, 2, 3])   # 3 targets for 2 images
    assert hook_count(model) == 0
    with pytest.raises(EvidenceError, match="one score per image"):
        capture(model, torch.randn(2, 3, 8, 8), ["features"], lambda out: out.sum())
    assert hook_count(model) == 0


def test_frozen_model_and_no_grad_context_still_give_gradients(model):
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        ev = capture(model, torch.randn(1, 3, 8, 8), ["features.0"], 0)
    assert ev.layers["features.0"].terms["G"][0].abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_layer_called_twice_takes_the_last_call_unless_told(model):
    x = torch.randn(1, 3, 8, 8)
    last = capture(model, x, ["act"], 0).layers["act"].A
    first = capture(model, x, ["act@0"], 0).layers["act@0"].A
    assert torch.allclose(last, 2 * first)
    with pytest.raises(EvidenceError, match="ran 2 time"):
        capture(model, x, ["act@5"], 0)


def test_a_layer_before_an_in_place_relu_keeps_its_own_output(model):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    x = torch.randn(1, 3, 8, 8)
    ev = capture(net, x, ["0", "1"], 0)
    conv, relu = ev.layers["0"], ev.layers["1"]
    with torch.no_grad():
        assert conv.A.min() < 0 and torch.equal(conv.A, net[0](x)) and torch.equal(relu.A, conv.A.clamp_min(0))
    # the chain rule through the ReLU: dS/dconv = dS/drelu * 1[conv > 0]
    assert torch.equal(conv.terms["G"][0], relu.terms["G"][0] * (conv.A > 0))


def test_layer_names_and_close_matches(model):
    assert resolve_layer(model, "features[-1]").module is model.features[3]
    assert resolve_layer(model, "features.2").module is model.features[2]
    assert resolve_layer(model, model.fc).name == "fc"
    with pytest.raises(UnknownNameError) as err:
        resolve_layer(model, "feature")
    assert "features" in err.value.close
    with pytest.raises(SycamError, match="not part of the model"):
        resolve_layer(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(SycamError, match="out of range"):
        resolve_layer(model, "features[9]")
    with pytest.raises(EvidenceError, match=r"\(b, k, h, w\)"):
        capture(model, torch.randn(1, 3, 8, 8), ["fc"], 0)


def test_layer_listing_and_auto_layer(model):
    x = torch.randn(1, 3, 8, 8)
    info = {i.name: i for i in list_layers(model, x)}
    assert info["act"].calls == 2 and info["features"].shape == (6, 8, 8)
    assert default_layer(model, x) == "act"
    maps = sycam.CAM("gradcam", model)(x)
    assert maps.shape == (1, 8, 8)


def test_output_selectors():
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Small()

        def forward(self, x):
            return {"aux": x.mean(), "logits": self.net(x)}

    class TupleOut(DictOut):
        def forward(self, x):
            return self.net(x), x.mean()

    x = torch.randn(1, 3, 8, 8)
    for net in (DictOut().eval(), TupleOut().eval()):
        ev = capture(net, x, ["net.features"], 2)
        assert ev.logits.shape == (1, 5)
    ev = capture(DictOut().eval(), x, ["net.features"], 0, output=lambda out: out["logits"] * 2)
    assert ev.logits.shape == (1, 5)
    with pytest.raises(SycamError, match="aux"):
        capture(DictOut().eval(), x, ["net.features"], 0, output="scores")


def test_targets(model):
    x = torch.randn(3, 3, 8, 8)
    logits = model(x).detach()
    top = capture(model, x, ["features"]).scores
    assert torch.allclose(top, logits.max(1).values)
    prob = capture(model, x, ["features"], ClassProbability(1)).scores
    assert torch.allclose(prob, logits.softmax(1)[:, 1])
    per_sample = capture(model, x, ["features"], [lambda row: row[0], lambda row: row[1], lambda row: row[4]])
    assert torch.allclose(per_sample.scores, logits[[0, 1, 2], [0, 1, 4]])
    refs = FinerContrast(classes=[0, 0, 0], n_refs=2).references(logits)
    assert refs.shape == (3, 2) and not (refs == 0).any()
    with pytest.raises(SycamError, match="out of range"):
        capture(model, x, ["features"], 7)


def test_training_mode_warns(model):
    model.train()
    with pytest.warns(UserWarning, match="training mode"):
        capture(model, torch.randn(2, 3, 8, 8), ["features"], 0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_a_thousand_explain_calls_keep_memory_flat(model):
    x = torch.randn(2, 3, 16, 16)
    def live_tensors():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # inspecting torch.distributed objects warns
            return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    with sycam.CAM("gradcampp", model, ["features", "act"]) as cam:
        with warnings.catch_warnings():
            warnings.simplefilter("error")    # no warnings from the calls either
            for _ in range(50):
                cam(x)
        before_rss, before_tensors = _rss_mb(), live_tensors()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(1000):
                cam(x)
        after_rss, after_tensors = _rss_mb(), live_tensors()
    assert after_tensors <= before_tensors
    assert after_rss - before_rss < 20, (before_rss, after_rss)
    assert hook_count(model) == 0
