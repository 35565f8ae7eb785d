"""sycam: synthesise, evaluate and ablate Class Activation Map expressions.

The public names load on first use (PEP 562 ``__getattr__``), so ``import sycam`` and the
command line's help start without torch, torchvision or sympy.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> (module, attribute), imported when first read
_LAZY = {
    "CAM": ("sycam.api", "CAM"),
    "Explanation": ("sycam.api", "Explanation"),
    "explain": ("sycam.api", "explain"),
    "SycamError": ("sycam.errors", "SycamError"),
    "Evidence": ("sycam.evidence.capture", "Evidence"),
    "capture": ("sycam.evidence.capture", "capture"),
    "ClassLogit": ("sycam.evidence.targets", "ClassLogit"),
    "ClassProbability": ("sycam.evidence.targets", "ClassProbability"),
    "FinerContrast": ("sycam.evidence.targets", "FinerContrast"),
    "SegmentationTarget": ("sycam.evidence.targets", "SegmentationTarget"),
    "EmbeddingSimilarity": ("sycam.evidence.targets", "EmbeddingSimilarity"),
    "AugSmooth": ("sycam.api", "AugSmooth"),
    "make_cam": ("sycam.api", "make_cam"),
    "parse": ("sycam.grammar", "parse"),
    "to_text": ("sycam.grammar", "to_text"),
    "SEEDS": ("sycam.methods", "SEEDS"),
    "get_seed": ("sycam.methods", "get_seed"),
    "overlay": ("sycam.report.overlay", "overlay"),
    "load_model": ("sycam.models", "load_model"),
    "read_image": ("sycam.data.images", "read_image"),
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:            # a sub-package (sycam.grammar, sycam.kernels, ...) on first use
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'sycam' has no attribute {name!r}") from None
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value          # later reads skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
