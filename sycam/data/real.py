"""Real photographs with checked ground truth (``real_boxes.json``, a package resource).

Each entry names a photo either fetched into the sycam cache (Debian darknet, opencv-doc,
palapeli-data; the imgaug wheel) or shipped inside an installed package
(scikit-image, matplotlib: the *fallback* photos, usable without ``sycam data fetch``).
Boxes were drawn by hand and each was checked by overlay (see the file's ``_doc``);
the quokka polygon and the plant's alpha matte give exact masks.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from ..errors import DataError
from .cache import FETCH_HINT, cache_dir, is_complete
from .images import polygon_mask, read_image, read_mask
from .sample import AnnotatedObject, ImageSet, Sample, clip_box, mask_box

PACKAGED = ("skimage", "matplotlib")


@lru_cache(maxsize=1)
def box_table() -> dict:
    """The parsed ``real_boxes.json``."""
    return json.loads(resources.files("sycam.data").joinpath("real_boxes.json").read_text())


def accepted(obj: dict) -> list[int]:
    """The label plus the acceptable alternatives of an entry's object ("a-b" = a range)."""
    acc = obj.get("accept", [])
    if isinstance(acc, str):
        lo, hi = (int(v) for v in acc.split("-"))
        acc = list(range(lo, hi + 1))
    return sorted({obj["label"], *acc}) if obj.get("label") is not None else []


def _package_dir(name: str) -> Path:
    if name == "skimage":
        import skimage  # deferred: only to find its bundled photos; its modules load on use, slowly

        return Path(skimage.__file__).parent
    if name == "matplotlib":
        import matplotlib  # deferred: matplotlib costs 0.1 s; only to find its bundled photos

        return Path(matplotlib.get_data_path())
    raise DataError(f"unknown photo origin {name!r}")


def _path(entry_from: str, rel: str, root: Path) -> Path:
    return root / rel if entry_from == "fetched" else _package_dir(entry_from) / rel


def real_photos(which: str = "all", root: str | Path | None = None) -> ImageSet:
    """The annotated real photos as samples.

    ``which``: ``"fallback"`` (only photos inside installed packages; no fetch needed),
    ``"fetched"`` (only the fetched ones) or ``"all"``. Fetched photos need
    ``sycam data fetch``; a :class:`DataError` says so if they are missing.
    """
    if which not in ("all", "fallback", "fetched"):
        raise DataError(f"which must be 'all', 'fallback' or 'fetched', not {which!r}")
    base = cache_dir(root)
    entries = [e for e in box_table()["images"]
               if which == "all" or (e["from"] in PACKAGED) == (which == "fallback")]
    groups = sorted({e["file"].split("/")[0] for e in entries if e["from"] == "fetched"})
    missing = [g for g in groups if not is_complete(g, base)]
    if missing:
        raise DataError(f"real photos need fetched material ({', '.join(missing)}) in {base}: {FETCH_HINT}")
    return ImageSet([_sample(e, base) for e in entries])


def _sample(entry: dict, root: Path) -> Sample:
    path = _path(entry["from"], entry["file"], root)
    image = read_image(path)
    size = (int(image.shape[1]), int(image.shape[2]))
    objects = []
    for o in entry["objects"]:
        mask = None
        if "mask_file" in o:
            mask = read_mask(_path(entry["from"], o["mask_file"], root), size)
        elif "polygon_file" in o:
            mask = _imgaug_polygon(_path(entry["from"], o["polygon_file"], root), size)
        box = tuple(float(v) for v in o["box"]) if "box" in o else mask_box(mask)
        box = clip_box(box, size, f"{entry['file']} {o['name']}")
        if box is None:
            raise DataError(f"real_boxes.json: {entry['file']} {o['name']} has no box inside the image")
        objects.append(AnnotatedObject(o["label"], box, mask, o["name"]))
    name = entry["file"] if entry["from"] == "fetched" else f"{entry['from']}/{entry['file']}"
    return Sample(image, objects, name, entry["source"])


def _imgaug_polygon(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """The union of the polygons of an imgaug annotation file, as an (H,W) mask."""
    data = json.loads(path.read_text())
    polys = [[c for kp in p["keypoints"] for c in (kp["x"], kp["y"])] for p in data.get("polygons", [])]
    if not polys:
        raise DataError(f"{path}: no polygons")
    return polygon_mask(polys, size)
