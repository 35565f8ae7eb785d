"""Tux Paint stamps: real photo cut-outs with alpha, each tied to one ImageNet class.

The list ``tux_stamps.tsv`` (a package resource) names stamps of the Debian package
``tuxpaint-stamps-default`` (GPL-2+) by their path under
``/usr/share/tuxpaint/stamps``, with the ImageNet class and the probability the default
EfficientNet-Lite0 gives it. Every listed stamp was checked: pasted alone on a plain grey
canvas, the default model's top-1 is the listed class (``experiments/data/check_stamps.py``
regenerates the list). :func:`sycam.data.fetch` extracts exactly these files.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image

from ..errors import DataError
from .cache import group_path
from .images import open_image

GROUP = "tuxpaint"
DEB_ROOT = "usr/share/tuxpaint/stamps"


@dataclass(frozen=True)
class Stamp:
    path: str        # relative to the stamps folder, e.g. "animals/birds/duck.png"
    label: int       # ImageNet class index
    name: str        # class name
    p_top1: float    # default model's probability on a grey canvas (informative)


def read_stamp_list(path: str | Path | None = None) -> list[Stamp]:
    """The stamps of a TSV (path, imagenet index, class name, p); the packaged list by default."""
    if path is None:
        text = resources.files("sycam.data").joinpath("tux_stamps.tsv").read_text()
    else:
        text = Path(path).read_text()
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            out.append(Stamp(parts[0], int(parts[1]), parts[2], float(parts[3])))
        except (IndexError, ValueError) as err:
            raise DataError(f"stamp list line {n}: expected path<TAB>index<TAB>name<TAB>p ({err})") from err
    return out


def stamp_files(stamps: list[Stamp] | None = None) -> list[str]:
    """Paths of the stamp files inside the fetched ``tuxpaint`` group."""
    return [f"stamps/{s.path}" for s in (stamps if stamps is not None else read_stamp_list())]


def load_stamp_images(stamps: list[Stamp] | None = None, root: str | Path | None = None
                      ) -> list[tuple[Stamp, Image.Image]]:
    """Each stamp as an RGBA PIL image cropped to its alpha's bounding box.

    Raises :class:`DataError` (telling to run ``sycam data fetch``) if not fetched.
    """
    stamps = stamps if stamps is not None else read_stamp_list()
    folder = group_path(GROUP, root, stamp_files(stamps))
    out = []
    for s in stamps:
        im = open_image(folder / "stamps" / s.path).convert("RGBA")
        bbox = im.getchannel("A").point(lambda a: 255 if a > 127 else 0).getbbox()
        if bbox is None:
            raise DataError(f"stamp {s.path} is fully transparent")
        out.append((s, im.crop(bbox)))
    return out
