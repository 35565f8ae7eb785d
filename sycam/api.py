"""The Python API: explain images with a seed method or any expression.

    with sycam.CAM("gradcam", model, layers="layer4") as cam:
        maps = cam(x)                      # (b, H, W) in [0, 1], on x's device
        maps = cam(x, targets=[281, 7])    # one class per image, or a callable
    cam.last.logits                        # the last Explanation stays readable after the block

    bundle = sycam.load_model("resnet50", "resnet50.pth")
    cam = sycam.CAM("gradcam", bundle)     # its default layer, class names and preprocessing
    maps = cam(x, targets=["tabby", 281])  # class names or indices

    maps = sycam.explain("gradcam", model, x, "layer4", eigen_smooth=True, aug_smooth=True)   # grad-cam's switches
    maps = cam(x, targets=sycam.SegmentationTarget(8, mask))        # a segmentation model's class over a mask

``method`` is a seed name (``sycam seeds``) or expression text such as
``"relu(sum(mean(G, hw) * A, k))"``; an expression with channel-weight axes {b, k} is
turned into the heatmap relu(sum(w * A, k)). :func:`make_cam` also builds the meta-methods
(``gpnncam``, ``metacam``); every method is an :class:`Explainer`.

This module only gathers the public names; they live in :mod:`sycam.methods` (``cam``,
``explainer``, ``build``), which is what the rest of the package imports.
"""
from .methods.build import explain, make_cam
from .methods.cam import CAM, as_batch, class_index, explain_many, resolve_targets
from .methods.explainer import Explainer, Explanation
from .methods.smoothing import AugSmooth

__all__ = ["CAM", "AugSmooth", "Explainer", "Explanation", "as_batch", "class_index", "explain", "explain_many",
           "make_cam", "resolve_targets"]
