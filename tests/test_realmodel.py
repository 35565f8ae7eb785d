"""The pretrained EfficientNet-Lite0 on real photos (marker ``realmodel``)."""
import pytest
import torch

import sycam
from sycam.data import real_photos, to_batch
from sycam.models import load_model

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def bundle():
    return load_model()


@pytest.fixture(scope="module")
def photos(bundle):
    return to_batch(real_photos("fallback").samples, bundle.preprocess)


def test_cam_from_the_linear_head_equals_gradcam_at_the_last_layer(bundle, photos):
    exp = sycam.CAM("cam", bundle.model, "head").explain(photos.x, photos.labels)
    grad = sycam.CAM("sum(mean(G, hw) * A, k)", bundle.model, "head").explain(photos.x, photos.labels)
    # G = W / (h w) everywhere at a GAP + linear head: identical maps (pre-ReLU, and with ReLU)
    assert torch.allclose(exp.maps, grad.maps, atol=1e-4)
    relu_cam = sycam.CAM("relu(sum(W * A, k))", bundle.model, "head")(photos.x, photos.labels)
    gradcam = sycam.CAM("gradcam", bundle.model, "head")(photos.x, photos.labels)
    assert torch.allclose(relu_cam, gradcam, atol=1e-4)


# the clear cases; rocket is not one: its "missile" Grad-CAM peaks on the launch towers beside it
@pytest.mark.parametrize("name", ["coffee", "chelsea", "motorcycle_left", "camera"])
def test_gradcam_peak_falls_inside_the_object(bundle, photos, name):
    row = next(i for i, n in enumerate(photos.names) if name in n)
    one = photos[[row]]
    logits = bundle.model(one.x)
    assert int(one.labels[0]) in logits.topk(5).indices[0].tolist(), "the photo is a clear case"
    maps = sycam.CAM("gradcam", bundle.model, "head")(one.x, one.labels)
    peak = int(maps[0].flatten().argmax())
    y, x = divmod(peak, maps.shape[-1])
    assert bool(one.masks[0, y, x]), f"{name}: peak at ({x}, {y}) is outside the object's box"
