"""Class labels given as an ImageNet index, an index string or a class name.

Names are the 1000 torchvision ImageNet-1k names (``sycam.models.imagenet_classes()``),
matched case-insensitively with ``_``/``-``/extra spaces ignored, so ``"Tiger_Cat"``,
``"tiger cat"`` and ``282`` all mean class 282. No WordNet ids are needed.
"""
from __future__ import annotations

import re
from functools import lru_cache

from ..errors import DataError, UnknownNameError


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


@lru_cache(maxsize=4)
def _index(classes: tuple[str, ...]) -> dict[str, int]:
    return {_key(c): i for i, c in enumerate(classes)}


def resolve_label(label: int | str, classes: list[str] | tuple[str, ...] | None = None) -> int:
    """The class index meant by ``label`` (an int, a digit string or a class name).

    Raises :class:`UnknownNameError` (with close matches) for an unknown name and
    :class:`DataError` for an index out of range.
    """
    if classes is None:
        from ..models import imagenet_classes

        classes = imagenet_classes()
    classes = tuple(classes)
    if isinstance(label, bool):
        raise DataError(f"class label {label!r} is not an index or a name")
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label.strip())
    if isinstance(label, int):
        if not 0 <= label < len(classes):
            raise DataError(f"class index {label} outside 0..{len(classes) - 1}")
        return label
    if not isinstance(label, str):
        raise DataError(f"class label {label!r} is not an index or a name")
    found = _index(classes).get(_key(label))
    if found is None:
        raise UnknownNameError("class", label, classes)
    return found
