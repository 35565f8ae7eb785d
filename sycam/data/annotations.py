"""Parsers for the annotation formats an image folder may carry.

Each parser returns :class:`RawImage` records (file path, declared size, objects with an
unresolved label and a box and/or mask source); :mod:`sycam.data.folder` reads the
pixels, resolves the labels and repairs the boxes. Box conventions are converted to
sycam's ``(x0, y0, x1, y1)`` pixel edges (``x1``/``y1`` exclusive).

**Pascal VOC XML** (one ``.xml`` per image, in the folder or ``Annotations/``):
``<filename>``, ``<size>``, and per ``<object>`` a ``<name>`` and a ``<bndbox>`` with
1-based inclusive ``xmin ymin xmax ymax`` (converted to ``xmin-1, ymin-1, xmax, ymax``).
Images are looked up in ``JPEGImages/``, next to the XML, or in the folder.

**COCO JSON** (``images``, ``annotations``, ``categories``): ``bbox`` ``[x, y, w, h]``
becomes ``(x, y, x+w, y+h)``; ``segmentation`` may be polygons or RLE (``counts`` as a
list, or as COCO's compressed string). The category *name* is the label.

**Simple JSON** (any other ``.json``)::

    {"images": [                     # or just the list itself
      {"file": "cat.jpg",
       "objects": [{"label": "tabby cat",          # ImageNet index or name; null = distractor
                    "box": [x0, y0, x1, y1],        # pixel edges, x1/y1 exclusive (optional
                    "mask": "cat_mask.png"}]}]}     #   if "mask" is given), mask optional

**CSV** (header row required; one row per object; rows of the same file are grouped)::

    file,label,x0,y0,x1,y1,mask
    cat.jpg,tabby cat,10,20,200,180,
    two.jpg,281,0,0,50,50,two_cat_mask.png
    two.jpg,,60,0,120,50,                 # empty label = distractor, empty box = from mask

Mask files are PNGs the size of their image (see :mod:`sycam.data.images`). Relative
paths are resolved against the annotation file's folder, then the image folder.
"""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

FORMATS = ("voc", "coco", "json", "csv")


@dataclass
class RawObject:
    label: int | str | None
    box: tuple[float, float, float, float] | None = None
    mask_file: Path | None = None
    polygons: list[list[float]] | None = None
    rle: list[int] | str | None = None
    name: str = ""


@dataclass
class RawImage:
    file: Path
    objects: list[RawObject] = field(default_factory=list)
    size: tuple[int, int] | None = None   # (H, W) as declared by the annotation, if any


def _resolve(name: str, *dirs: Path) -> Path:
    p = Path(name)
    if p.is_absolute():
        return p
    for d in dirs:
        if (d / p).exists():
            return d / p
    return dirs[0] / p


def _box(values, where: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: box must be 4 numbers x0,y0,x1,y1, got {values!r}") from err
    return x0, y0, x1, y1


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable JSON ({err})") from err


# ---------------------------------------------------------------- Pascal VOC
def parse_voc(paths: list[Path], image_dir: Path) -> list[RawImage]:
    """VOC XML files -> records (images in ``JPEGImages/``, next to the XML, or ``image_dir``)."""
    out = []
    for xml in sorted(paths):
        try:
            root = ET.parse(xml).getroot()
        except (OSError, ET.ParseError) as err:
            raise DataError(f"{xml}: unreadable VOC XML ({err})") from err
        fname = root.findtext("filename")
        if not fname:
            raise DataError(f"{xml}: no <filename>")
        size = None
        if root.find("size") is not None:
            try:
                size = (int(root.findtext("size/height")), int(root.findtext("size/width")))
            except (TypeError, ValueError):
                size = None
        rec = RawImage(_resolve(fname, image_dir / "JPEGImages", xml.parent, image_dir), size=size)
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if bb is None:
                raise DataError(f"{xml}: object {name!r} has no <bndbox>")
            x0, y0, x1, y1 = _box([bb.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")], str(xml))
            rec.objects.append(RawObject(name, (x0 - 1, y0 - 1, x1, y1), name=name))
        out.append(rec)
    return out


# ---------------------------------------------------------------- COCO
def decode_coco_counts(s: str) -> list[int]:
    """COCO's compressed RLE string (as written by pycocotools) -> run lengths."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def parse_coco(path: Path, image_dir: Path) -> list[RawImage]:
    """A COCO instances JSON -> records; the category name is the label."""
    data = _load_json(path)
    try:
        cats = {c["id"]: c["name"] for c in data["categories"]}
        images = {im["id"]: RawImage(_resolve(im["file_name"], path.parent, image_dir),
                                     size=(int(im["height"]), int(im["width"])) if "height" in im else None)
                  for im in data["images"]}
        for ann in data["annotations"]:
            rec = images[ann["image_id"]]
            label = cats[ann["category_id"]]
            box = None
            if "bbox" in ann and ann["bbox"]:
                x, y, w, h = (float(v) for v in ann["bbox"])
                box = (x, y, x + w, y + h)
            seg = ann.get("segmentation")
            polys = rle = None
            if isinstance(seg, list) and seg:
                polys = [list(map(float, p)) for p in seg]
            elif isinstance(seg, dict):
                rle = seg["counts"]
            rec.objects.append(RawObject(label, box, polygons=polys, rle=rle, name=label))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a valid COCO annotation file ({err!r})") from err
    return list(images.values())


# ---------------------------------------------------------------- simple JSON / CSV
def parse_simple_json(path: Path, image_dir: Path) -> list[RawImage]:
    """sycam's simple JSON (see module docstring) -> records."""
    data = _load_json(path)
    entries = data.get("images") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a list of images or {{'images': [...]}}")
    out = []
    for i, e in enumerate(entries):
        where = f"{path} image {i}"
        if not isinstance(e, dict) or "file" not in e:
            raise DataError(f"{where}: each image needs a 'file'")
        rec = RawImage(_resolve(e["file"], path.parent, image_dir))
        for o in e.get("objects", []):
            if not isinstance(o, dict) or ("box" not in o and "mask" not in o):
                raise DataError(f"{where}: each object needs a 'box' and/or a 'mask'")
            box = _box(o["box"], where) if o.get("box") is not None else None
            mask = _resolve(o["mask"], path.parent, image_dir) if o.get("mask") else None
            rec.objects.append(RawObject(o.get("label"), box, mask, name=str(o.get("name", o.get("label", "")))))
        out.append(rec)
    return out


def parse_csv(path: Path, image_dir: Path) -> list[RawImage]:
    """sycam's CSV of boxes (see module docstring) -> records, one per file."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable CSV ({err})") from err
    if rows and not {"file", "label"} <= set(rows[0]):
        raise DataError(f"{path}: CSV header needs at least 'file' and 'label' (and x0,y0,x1,y1 and/or mask)")
    records: dict[str, RawImage] = {}
    for n, row in enumerate(rows, start=2):
        where = f"{path} line {n}"
        rec = records.setdefault(row["file"], RawImage(_resolve(row["file"], path.parent, image_dir)))
        coords = [(row.get(k) or "").strip() for k in ("x0", "y0", "x1", "y1")]
        box = _box(coords, where) if all(coords) else None
        mask = (row.get("mask") or "").strip()
        if box is None and not mask:
            raise DataError(f"{where}: row needs x0,y0,x1,y1 and/or a mask file")
        label = (row.get("label") or "").strip() or None
        rec.objects.append(RawObject(label, box, _resolve(mask, path.parent, image_dir) if mask else None,
                                     name=label or ""))
    return list(records.values())


# ---------------------------------------------------------------- detection
def sniff(path: Path) -> str:
    """The format of an annotation file or folder: 'voc', 'coco', 'json' or 'csv'."""
    if path.is_dir() or path.suffix.lower() == ".xml":
        return "voc"
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data):
            return "coco"
        return "json"
    raise DataError(f"{path}: unknown annotation format (expected .xml, .json or .csv)")


def find_annotations(folder: Path) -> Path:
    """The annotation file (or VOC XML folder) of an image folder."""
    for d in (folder / "Annotations", folder):
        if d.is_dir() and any(d.glob("*.xml")):
            return d
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".csv"))
    if len(files) == 1:
        return files[0]
    if not files:
        raise DataError(f"{folder}: no annotations found (expected VOC *.xml, a COCO/simple .json or a .csv)")
    raise DataError(f"{folder}: several annotation files ({', '.join(p.name for p in files)}); pass one explicitly")


def parse(path: Path, image_dir: Path, fmt: str | None = None) -> list[RawImage]:
    """Records from an annotation file/folder in format ``fmt`` (sniffed if None)."""
    fmt = fmt or sniff(path)
    if fmt == "voc":
        xmls = sorted(path.glob("*.xml")) if path.is_dir() else [path]
        return parse_voc(xmls, image_dir)
    if fmt == "coco":
        return parse_coco(path, image_dir)
    if fmt == "json":
        return parse_simple_json(path, image_dir)
    if fmt == "csv":
        return parse_csv(path, image_dir)
    raise DataError(f"unknown annotation format {fmt!r}; known: {', '.join(FORMATS)}")
