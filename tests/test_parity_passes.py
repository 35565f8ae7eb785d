"""ShapleyCAM, FullGrad, Guided Backpropagation and Guided Grad-CAM against pytorch-grad-cam 1.5.7.

Random-weight resnet18 and vgg11 (seed 0), two images with different target classes.
- ShapleyCAM: grad-cam's with ClassifierOutputReST targets is our seed; with its default
  ClassifierOutputTarget (the logit) it is the seed's recipe (H A = 0 behind these heads then, so
  it equals Grad-CAM; the ReST version does not).
- FullGrad: torchvision initialises every bias of these models to 0 (BatchNorm mean 0 and beta 0,
  conv biases 0), which leaves FullGrad's bias term empty; the biases are randomised here.
  grad-cam min-maxes each channel with an absolute 1e-7 in the denominator and resizes with
  OpenCV; the maps agree to r >= 0.999.
- Guided Backpropagation: grad-cam's GuidedBackpropReLUModel swaps the model's ReLU modules (and
  puts back new, not in-place ones), so it runs on a copy; its gradient image equals our GB.
- Guided Grad-CAM: grad-cam's cam.py multiplies GB by the min-max normalised Grad-CAM map, the
  seed's recipe; the seed (the paper's GB * Up(L)) gives the same maps where L has zeros.
"""
import copy
import warnings

import pytest
import torch
import torchvision
from conftest import agree, pearson
from torch import nn

import sycam
from sycam.evidence.layers import resolve_layer
from sycam.methods import SEEDS

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import FullGrad, GradCAM, GuidedBackpropReLUModel, ShapleyCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget  # noqa: E402

CLASSES = [3, 7]
SLOW = pytest.mark.slow      # (each case takes 10-30 s on a busy 2-core CPU: one per method runs by default)
CASES = [("resnet18", "layer4", 112), pytest.param("resnet18", "layer3", 160, marks=SLOW),
         pytest.param("vgg11", "features.19", 128, marks=SLOW), pytest.param("vgg11", "features.14", 128, marks=SLOW)]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: getattr(torchvision.models, name)().eval() for name in ("resnet18", "vgg11")}


def images(size, seed):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def theirs(cls, model, layers, x, target=ClassifierOutputTarget):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model=model, target_layers=layers) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=[target(c) for c in CLASSES]))


@pytest.mark.parametrize("arch,layer,size", CASES)
def test_shapleycam_matches_gradcam_shapleycam(models, arch, layer, size):
    model, x = models[arch], images(size, 1)
    module = [resolve_layer(model, layer).module]
    rest = theirs(ShapleyCAM, model, module, x, ClassifierOutputReST)
    logit = theirs(ShapleyCAM, model, module, x)
    ours = sycam.CAM("shapleycam", model, layer)(x, CLASSES)
    recipe = sycam.CAM(SEEDS["shapleycam"].recipes[0].expression, model, layer)(x, CLASSES)
    gradcam = sycam.CAM("gradcam", model, layer)(x, CLASSES)
    for i in range(2):
        assert agree(ours[i], rest[i]), (arch, layer, i, pearson(ours[i], rest[i]))
        assert agree(recipe[i], logit[i]), (arch, layer, i, pearson(recipe[i], logit[i]))
        assert agree(gradcam[i], logit[i])
    if arch == "resnet18":    # the ReST target's Hessian makes a difference here
        assert min(pearson(gradcam[i], rest[i]) for i in range(2)) < 0.99


def randomised_biases(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.out_channels, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("vgg11", marks=SLOW)])
def test_fullgrad_matches_gradcam_fullgrad(models, arch):
    model, x = randomised_biases(models[arch]), images(112, 2)
    ref = theirs(FullGrad, model, [], x)
    cam = sycam.CAM("fullgrad", model)
    ours = cam(x, CLASSES)
    assert cam.last.evidence.layers[cam.layers[0].name].terms["FB"][0].amax() > 1    # the bias term is there
    for i in range(2):
        assert agree(ours[i], ref[i]), (arch, i, pearson(ours[i], ref[i]))


def guided_gradients(model, x):
    """grad-cam's guided-backpropagation gradient images, (b, 3, H, W), one image per call as it works."""
    gb = GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")      # it swaps the ReLU modules
    return torch.stack([torch.from_numpy(gb(x[i:i + 1].clone(), target_category=c)).permute(2, 0, 1)
                        for i, c in enumerate(CLASSES)])


@pytest.mark.parametrize("arch,layer,size", [CASES[0], CASES[2]])   # vgg11's ReLUs are in place
def test_guided_backprop_and_guided_gradcam_match_gradcam(models, arch, layer, size):
    model, x = models[arch], images(size, 3)
    gb = guided_gradients(model, x)
    cams = {m: sycam.CAM(m, model, layer) for m in ("guidedbp", "guidedgradcam")}
    recipe = sycam.CAM(SEEDS["guidedgradcam"].recipes[0].expression, model, layer)
    ours = {m: c(x, CLASSES) for m, c in {**cams, "recipe": recipe}.items()}
    GB = cams["guidedbp"].last.evidence.layers[layer].terms["GB"][0]
    assert torch.allclose(GB, gb, rtol=1e-4, atol=1e-6 * float(gb.abs().max()))
    plain = sycam.capture(model, x, layer, CLASSES, needs={"Gx"}).layers[layer].terms["Gx"][0]
    assert pearson(GB, plain) < 0.9                                                    # guiding changes it
    mask = theirs(GradCAM, model, [resolve_layer(model, layer).module], x)            # (b, H, W) in [0, 1]
    their_guided = (mask[:, None] * gb).abs().amax(1)                                  # their cam.py, as a heatmap
    for i in range(2):
        assert agree(ours["guidedbp"][i], gb[i].abs().amax(0))
        assert agree(ours["recipe"][i], their_guided[i]), (arch, i, pearson(ours["recipe"][i], their_guided[i]))
        assert agree(ours["guidedgradcam"][i], their_guided[i])
