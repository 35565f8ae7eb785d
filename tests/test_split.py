"""split_model: the suffix reproduces the model exactly and runs only the layers after the cut."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, vgg11

from sycam.errors import SycamError, UnknownNameError
from sycam.evidence.split import split_model

torch.set_num_threads(1)


def _hooked_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    seen = []
    h = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: seen.append(o.clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen[0]


def _calls(module: nn.Module) -> list[int]:
    count = [0]
    module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return resnet18().eval()


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_resnet18_suffix_equals_model(resnet, layer):
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fast path must not warn
        s = split_model(resnet, layer, x)
    assert s.fast and s.cached == ()
    with torch.no_grad():
        want = resnet(x)
        assert torch.equal(s.activations, _hooked_output(resnet, layer, x))
        assert torch.allclose(s(s.activations), want, rtol=1e-5, atol=1e-6)
        idx = torch.tensor([1, 1, 0])  # rows may repeat and reorder images
        assert torch.allclose(s(s.activations[idx], idx), want[idx], rtol=1e-5, atol=1e-6)


def test_suffix_runs_only_after_the_layer(resnet):
    x = torch.randn(1, 3, 32, 32)
    s = split_model(resnet, "layer4", x, check=False)
    stem, head = _calls(resnet.conv1), _calls(resnet.fc)
    with torch.no_grad():
        s(s.activations.repeat(3, 1, 1, 1), torch.zeros(3, dtype=torch.long))
    resnet._forward_hooks.clear()
    resnet.conv1._forward_hooks.clear()
    resnet.fc._forward_hooks.clear()
    assert stem == [0] and head == [1]


@pytest.fixture(scope="module")
def vgg():
    """torchvision vgg11 with a 32-wide classifier: same graph, but no 100M-weight init (seconds)."""
    torch.manual_seed(0)
    with torch.device("meta"):
        v = vgg11()
    v.features = v.features.to_empty(device="cpu")
    for mod in v.features:
        if isinstance(mod, nn.Conv2d):
            mod.reset_parameters()
    v.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))
    return v.eval()


@pytest.mark.parametrize("layer", ["features.18", "features.13"])
def test_vgg11_features(vgg, layer):
    x = torch.randn(1, 3, 32, 32)
    s = split_model(vgg, layer, x)
    assert s.fast
    # features.N is followed by ReLU(inplace=True): the suffix (already run once by the
    # check) must not have clipped the caller's activations
    assert torch.equal(s.activations, _hooked_output(vgg, layer, x))
    assert (s.activations < 0).any()
    with torch.no_grad():
        assert torch.allclose(s(s.activations), vgg(x), rtol=1e-5, atol=1e-6)
    assert (s.activations < 0).any()


class Skip(nn.Module):
    """The output adds a value computed *before* the layer (a skip around it)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        y = torch.relu(self.block(h)) + h
        return self.fc(y.mean(dim=(2, 3)))


def test_skip_connection_is_cached_per_image():
    torch.manual_seed(1)
    m, x = Skip().eval(), torch.randn(3, 3, 8, 8)
    s = split_model(m, "block", x)
    assert s.fast and len(s.cached) == 1
    h = torch.relu(m.stem(x)).detach()
    stem = _calls(m.stem)
    idx = torch.tensor([2, 0, 2, 1])
    a = torch.randn(4, 4, 8, 8)  # any activations: the skip must come from image idx[j]
    with torch.no_grad():
        got = s(a, idx)
        want = m.fc((torch.relu(a) + h[idx]).mean(dim=(2, 3)))
    assert stem == [0]
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


class Untraceable(nn.Module):
    """Control flow on a tensor value: symbolic tracing fails."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        if h.abs().sum() >= 0:  # always true, but data-dependent for fx
            h = torch.relu(h)
        return self.fc(torch.relu(self.b(h)).mean(dim=(2, 3)))


def test_untraceable_model_falls_back_with_a_warning():
    torch.manual_seed(2)
    m, x = Untraceable().eval(), torch.randn(2, 3, 6, 6)
    with pytest.warns(RuntimeWarning, match="symbolic tracing failed.*hook fallback"):
        s = split_model(m, "b", x)
    assert not s.fast and "control flow" in s.reason
    idx = torch.tensor([1, 0, 1])
    a = torch.randn(3, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(s(s.activations), m(x))
        assert torch.allclose(s(a, idx), m.fc(torch.relu(a).mean(dim=(2, 3))), rtol=1e-5, atol=1e-6)
    assert not m.b._forward_hooks  # the replacing hook is removed again


class TracesDifferently(nn.Module):
    """Traces without error, but the trace is not what runs eagerly."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        h = self.a(x).mean(dim=(2, 3))
        if not torch.fx._symbolic_trace.is_fx_tracing():
            h = h * 2
        return self.fc(h)


def test_check_catches_a_wrong_trace():
    m, x = TracesDifferently().eval(), torch.randn(2, 3, 4, 4)
    # the cut is at `a`: the eager-only `h * 2` comes after it and is lost by the trace
    with pytest.warns(RuntimeWarning, match="did not reproduce"):
        s = split_model(m, "a", x)
    assert not s.fast
    with torch.no_grad():
        assert torch.equal(s(s.activations), m(x))


def test_bad_layers_are_refused(resnet):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(UnknownNameError, match="layer4"):
        split_model(resnet, "layer5", x)
    with pytest.raises(SycamError, match="called 2 times"):  # BasicBlock reuses its ReLU
        split_model(resnet, "layer4.1.relu", x)
    s = split_model(resnet, "layer4", x, check=False)
    with pytest.raises(SycamError, match="index="):
        s(s.activations.repeat(2, 1, 1, 1))
