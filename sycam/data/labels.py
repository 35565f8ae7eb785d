"""Class labels given as an ImageNet index, an index string or a class name.

Names are the 1000 torchvision ImageNet-1k names (``sycam.models.imagenet_classes()``),
matched case-insensitively with ``_``/``-``/extra spaces ignored, so ``"Tiger_Cat"``,
``"tiger cat"`` and ``282`` all mean class 282. No WordNet ids are needed.

:func:`resolve_label` is the one place a class name becomes an index: annotation folders, the
command line's ``--target`` and the Python API's ``targets=`` all use it, so a name means the same
class everywhere. A name that several classes share (ImageNet's 264 "Cardigan", the corgi, and 474
"cardigan", the sweater) is an :class:`AmbiguousNameError` listing them: give the index.
"""
from __future__ import annotations

import re
from functools import lru_cache

from ..errors import DataError, SycamError, UnknownNameError
from ..models import imagenet_classes


class AmbiguousNameError(SycamError, KeyError):
    """A class name that several classes share (case and ``_``/``-``/spaces ignored); lists them."""

    def __init__(self, name: str, candidates: list[tuple[int, str]]):
        self.name, self.candidates = name, candidates
        listed = ", ".join(f"{i} ({c})" for i, c in candidates)
        super().__init__(f"class name {name!r} names {len(candidates)} classes: {listed}; give the index")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


@lru_cache(maxsize=4)
def _index(classes: tuple[str, ...]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        out.setdefault(_key(c), []).append(i)
    return out


def resolve_label(label: int | str, classes: list[str] | tuple[str, ...] | None = None) -> int:
    """The class index meant by ``label`` (an int, a digit string or a class name).

    Raises :class:`UnknownNameError` (with close matches) for an unknown name,
    :class:`AmbiguousNameError` (listing the indices and names) for a name several classes share
    and :class:`DataError` for an index out of range.
    """
    if classes is None:
        classes = imagenet_classes()
    classes = tuple(str(c) for c in classes)
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
    if not found:
        raise UnknownNameError("class", label, classes)
    if len(found) > 1:
        raise AmbiguousNameError(label, [(i, classes[i]) for i in found])
    return found[0]
