"""Parity with pytorch-grad-cam's ``reshape_transform`` recipe on torchvision's vit_b_16 and swin_t.

Random weights as ``sycam.load_model`` draws them (torch seed 0; torchvision starts ViT's head at
zero, which would make every gradient zero, so that layer is drawn too), two images with different
target classes, the layers sycam picks itself (the last block's first norm). grad-cam gets the
reshape its tutorial writes: ViT's tokens without the class token as a 14x14 grid, Swin's
channel-last (b, h, w, c) permuted. The peers' departures from the papers are those of
tests/test_parity_peers.py: grad-cam's Grad-CAM++ epsilon (matched exactly with their epsilon
written into the expression) and EigenCAM's arbitrary sign.
"""
import warnings

import pytest
import torch
from conftest import agree, pearson

import sycam
from sycam.api import CAM, explain_many

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

pytestmark = pytest.mark.slow      # vit_b_16 and swin_t on a CPU: ~1 min each

GRADCAM_PP_WITH_THEIR_EPS = "relu(sum(sum(G2 / (2 * G2 + sum(A, hw) * G3 + 0.000001) * relu(G), hw) * A, k))"
PEERS = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "layercam": LayerCAM}
CLASSES = [3, 7]


def vit_recipe(t, height=14, width=14):
    """grad-cam's ViT tutorial: drop the class token, tokens -> (b, c, 14, 14)."""
    return t[:, 1:, :].reshape(t.size(0), height, width, t.size(2)).transpose(2, 3).transpose(1, 2)


def swin_recipe(t):
    """torchvision's Swin is channel-last (b, h, w, c)."""
    return t.permute(0, 3, 1, 2)


def theirs(cls, model, module, recipe, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model=model, target_layers=[module], reshape_transform=recipe) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLASSES]))


@pytest.mark.parametrize("name,layer,recipe", [("vit_b_16", "encoder.layers.encoder_layer_11.ln_1", vit_recipe),
                                               ("swin_t", "features.7.1.norm1", swin_recipe)])
def test_gradient_seeds_and_eigencam_match_gradcam_reshape_transform(name, layer, recipe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sycam.load_model(name).model
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    cams = {m: CAM(m, model) for m in [*PEERS, GRADCAM_PP_WITH_THEIR_EPS, "pc1(A)", "relu(pc1(A))", "relu(-pc1(A))"]}
    ours = explain_many(cams, x, CLASSES)
    ref = cams["gradcam"].layers[0]
    assert ref.name == layer                                  # sycam's own default layer, reshaped automatically
    for method, cls in PEERS.items():
        peer = theirs(cls, model, ref.module, recipe, x)
        same = ours[GRADCAM_PP_WITH_THEIR_EPS if method == "gradcampp" else method].maps
        for i in range(2):
            assert peer[i].std() > 0.05 and agree(same[i], peer[i]), (name, method, i, pearson(same[i], peer[i]))

    # EigenCAM: our first principal component is grad-cam's projection up to its sign, then the same map
    A = ours["pc1(A)"].evidence.layers[layer].A
    projection = torch.from_numpy(get_2d_projection(A.numpy().copy()))
    peer = theirs(EigenCAM, model, ref.module, recipe, x)
    for i in range(2):
        r = pearson(ours["pc1(A)"].layer_maps[layer][i], projection[i])
        assert abs(r) >= 0.9999, (name, i, r)
        flipped = ours["relu(pc1(A))" if r > 0 else "relu(-pc1(A))"].maps[i]
        assert peer[i].std() > 0.05 and agree(flipped, peer[i]), (name, i, pearson(flipped, peer[i]))
