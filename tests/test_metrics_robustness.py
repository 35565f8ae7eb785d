"""Noise robustness, equivariance and the model-randomisation sanity check.

Explainers here are small closed-form functions of the input (or of the model's weights), so
the similarity each metric must report is known: an equivariant explainer scores 1, a map that
ignores the model passes no sanity check (Spearman 1), an inverted input gives Pearson -1.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sycam.data.batch import Batch
from sycam.metrics import (
    CascadingRandomisation,
    Equivariance,
    NoiseRobustness,
    get_metric,
    input_affine,
    parameter_layers,
)
from sycam.metrics.robustness import NOISES

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
S = 16


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: on a shared 2-core machine OpenMP barriers cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def imagenet_batch(images: torch.Tensor, labels: list[int] | None = None) -> Batch:
    return Batch((images - MEAN) / STD, images, torch.tensor(labels or [0] * images.shape[0]))


def mm(t: torch.Tensor) -> torch.Tensor:
    lo = t.flatten(-2).amin(-1)[..., None, None]
    hi = t.flatten(-2).amax(-1)[..., None, None]
    return (t - lo) / (hi - lo).clamp_min(1e-12)


def brightness(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A flip/shift/scale-equivariant 'explainer': min-max normalised channel mean of the input."""
    return mm(x.mean(1))


class Brightness(nn.Module):
    """Predicts class 0 if the image (in pixels) is brighter than 0.5, else class 1."""

    def forward(self, x):
        m = (x * STD + MEAN).mean((1, 2, 3))
        return torch.stack([m - 0.5, 0.5 - m], 1) * 100


class Constant(nn.Module):
    def forward(self, x):
        return torch.tensor([[1.0, 0.0]]).expand(x.shape[0], 2)


def pearson(a, b):
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


# ---------------------------------------------------------------------- noise robustness
def test_consistency_when_the_prediction_is_kept():
    torch.manual_seed(0)
    images = torch.rand(2, 3, S, S)
    batch = imagenet_batch(images)
    maps = brightness(batch.x, batch.labels)
    flip = lambda im, level, gen: im.flip(-1)  # noqa: E731 - a deterministic "noise"
    out = NoiseRobustness("consistency", noise=flip, samples=2)(maps, batch, model_fn=Constant(), explainer=brightness)
    expected = [pearson(maps[i], maps[i].flip(-1)) for i in range(2)]
    assert out.tolist() == pytest.approx(expected, abs=1e-5)
    resp = NoiseRobustness("responsiveness", noise=flip)(maps, batch, model_fn=Constant(), explainer=brightness)
    assert torch.isnan(resp).all()  # nothing changed the prediction: undefined, not 0


def test_responsiveness_and_combined_when_the_prediction_flips():
    torch.manual_seed(1)
    images = torch.rand(2, 3, S, S) * 0.4  # dark: class 1
    images[1] += 0.55                      # bright: class 0
    batch = imagenet_batch(images)
    maps = brightness(batch.x, batch.labels)

    def invert_first(im, level, gen):  # inverting flips the prediction; image 1 is left alone
        out = im.clone()
        out[0] = 1 - im[0]
        return out

    model = Brightness()
    resp = NoiseRobustness("responsiveness", noise=invert_first, samples=3)(maps, batch, model_fn=model,
                                                                          explainer=brightness)
    assert resp[0].item() == pytest.approx(2.0, abs=1e-5)  # Pearson(L, 1 - L) = -1
    assert torch.isnan(resp[1])
    comb = NoiseRobustness("combined", noise=invert_first, samples=3)(maps, batch, model_fn=model,
                                                                     explainer=brightness)
    assert comb.tolist() == pytest.approx([2.0, 1.0], abs=1e-5)  # flipped: 1 - sim; kept: sim


def test_noise_is_applied_in_pixel_space_and_mapped_to_the_input():
    torch.manual_seed(2)
    images = torch.full((1, 3, S, S), 0.5)
    batch = imagenet_batch(images)
    seen = []

    def spy(x, labels):
        seen.append(x)
        return brightness(x, labels)

    NoiseRobustness("combined", noise="salt_and_pepper", level=0.3, samples=4)(
        torch.rand(1, S, S), batch, model_fn=Brightness(), explainer=spy)
    pixels = input_affine(batch).to_pixels(torch.cat(seen))
    changed = (pixels - 0.5).abs().amax(1) > 0.1  # (4,S,S): salted or peppered pixels, all channels
    values = pixels.amin(1)[changed]
    assert 0.2 < changed.float().mean().item() < 0.4
    assert set(values.round().tolist()) == {0.0, 1.0}
    gen = torch.Generator().manual_seed(0)
    gray = torch.full((1, 3, 64, 64), 0.5)
    assert (NOISES["gaussian"](gray, 0.05, gen) - gray).std().item() == pytest.approx(0.05, rel=0.05)
    assert (NOISES["speckle"](gray, 0.1, gen) - gray).std().item() == pytest.approx(0.05, rel=0.05)
    uni = NOISES["uniform"](gray, 0.1, gen) - gray
    assert uni.abs().max().item() <= 0.1 and uni.std().item() == pytest.approx(0.1 / 3 ** 0.5, rel=0.05)


# ---------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("name,amount", [("equivariance_flip", None), ("equivariance_shift", 3),
                                         ("equivariance_scale", 1.5), ("equivariance_scale", 0.75)])
def test_equivariant_explainer_scores_one(name, amount):
    torch.manual_seed(3)
    batch = imagenet_batch(torch.rand(2, 3, S, S))
    maps = brightness(batch.x, batch.labels)
    kwargs = {} if amount is None else {"amount": amount}
    out = get_metric(name, **kwargs)(maps, batch, explainer=brightness)
    assert out.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)


def test_input_blind_explainer_is_not_flip_equivariant():
    batch = imagenet_batch(torch.rand(1, 3, S, S))
    ramp = torch.linspace(0, 1, S).expand(S, S)[None]  # ignores the input: always brightest on the right
    out = Equivariance("hflip")(ramp, batch, explainer=lambda x, labels: ramp.expand(x.shape[0], -1, -1))
    assert out.item() == pytest.approx(-1.0, abs=1e-6)  # flipped ramp vs ramp


# ---------------------------------------------------------------------- sanity check
def small_net() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()


def saliency_factory(model):
    def explain(x, labels):
        x = x.clone().requires_grad_(True)
        out = model(x).gather(1, labels[:, None]).sum()
        (g,) = torch.autograd.grad(out, x)
        return mm(g.abs().sum(1))
    return explain


def test_sanity_check_never_touches_the_callers_model_and_cascades_from_the_logits():
    model = small_net()
    model.train()  # must stay as the caller left it
    before = copy.deepcopy(model.state_dict())
    batch = imagenet_batch(torch.rand(2, 3, S, S), labels=[0, 2])
    maps = saliency_factory(model)(batch.x, batch.labels)
    assert [n for n, _ in parameter_layers(model)] == ["6", "2", "0"]
    metric = CascadingRandomisation(stages=["6", "2"])
    details = metric.details(maps[None], batch, _res(model))
    assert details["layers"] == [["6"], ["6", "2"]]
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    score = metric(maps, batch, model=model, explainer_factory=saliency_factory)
    assert score.shape == (2,) and (score < 0.9).all()  # the map depends on the weights


def test_sanity_check_known_answers():
    batch = imagenet_batch(torch.rand(2, 3, S, S), labels=[1, 0])
    model = small_net()
    blind = lambda m: (lambda x, labels: brightness(x, labels))  # noqa: E731 - ignores the model
    maps = brightness(batch.x, batch.labels)
    out = get_metric("sanity_cascading", stages=3)(maps, batch, model=model, explainer_factory=blind)
    assert out.tolist() == pytest.approx([1.0, 1.0])  # identical maps after every stage: fails the check
    # one linear layer y = W vec(x): the gradient map is |W_c| -> after re-initialisation |W'_c|
    from scipy.stats import spearmanr

    torch.manual_seed(5)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * S * S, 2))
    grad_map = lambda m: (lambda x, labels: m[1].weight[labels].view(-1, 3, S, S).abs().sum(1).detach())  # noqa: E731
    maps = grad_map(lin)(batch.x, batch.labels)
    score = CascadingRandomisation(stages=1, seed=7)(maps, batch, model=lin, explainer_factory=grad_map)
    fresh = copy.deepcopy(lin)
    torch.manual_seed(7)  # the metric re-initialises the first layer it randomises with seed + 0
    fresh[1].reset_parameters()
    new = grad_map(fresh)(batch.x, batch.labels)
    expected = [spearmanr(maps[i].flatten().numpy(), new[i].flatten().numpy()).statistic for i in range(2)]
    assert score.tolist() == pytest.approx(expected, abs=1e-5)


def _res(model):
    from sycam.metrics import Resources

    return Resources(model=model, explainer_factory=saliency_factory)
