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

Mask files are PNGs the size of their image (see :mod:`sycam.data.images`). Paths are
relative: resolved against the annotation file's folder, then the image folder; absolute
paths and paths that climb out with ``..`` are refused. Every field is checked: a wrong
type or value is a :class:`~sycam.errors.DataError` naming the file, the entry and the field.
"""
from __future__ import annotations

import csv
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

FORMATS = ("voc", "coco", "json", "csv")

Box = tuple[float, float, float, float]


@dataclass
class RawObject:
    label: int | str | None
    box: Box | None = None
    mask_file: Path | None = None
    polygons: list[list[float]] | None = None
    rle: list[int] | None = None            # COCO run lengths (compressed strings decoded)
    name: str = ""


@dataclass
class RawImage:
    file: Path
    objects: list[RawObject] = field(default_factory=list)
    size: tuple[int, int] | None = None   # (H, W) as declared by the annotation, if any


# ---------------------------------------------------------------- checked fields
def _show(value) -> str:
    """A value as the user wrote it (JSON), shortened for messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _get(entry: dict, key: str, where: str, types: tuple[type, ...], what: str, required: bool = False):
    """``entry[key]`` if it is one of ``types`` (None when absent and not required)."""
    if key not in entry:
        if required:
            raise DataError(f"{where}: '{key}' is missing ({what})")
        return None
    value = entry[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        raise DataError(f"{where}: '{key}' must be {what}, got {_show(value)}")
    return value


def _entries(data, key: str, where: str) -> list[dict]:
    """``data[key]``: a list of JSON objects."""
    items = _get(data, key, where, (list,), "a list", required=True)
    for i, e in enumerate(items):
        if not isinstance(e, dict):
            raise DataError(f"{where}: {key}[{i}] must be an object {{...}}, got {_show(e)}")
    return items


def _number(value, where: str, what: str, text: bool = False) -> float:
    """A finite number (JSON), or the text of one (``text``: VOC, CSV)."""
    number = value
    if text and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise DataError(f"{where}: {what} must be a finite number, got {_show(value)}")
    return float(number)


def _box(values, where: str, text: bool = False) -> Box:
    """Four numbers given as a list (x0, y0, x1, y1, or whatever the format's order is)."""
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        raise DataError(f"{where}: box must be a list of 4 numbers, got {_show(values)}")
    x0, y0, x1, y1 = (_number(v, where, "each box coordinate", text) for v in values)
    return x0, y0, x1, y1


def _label(value, where: str) -> int | str | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise DataError(f"{where}: 'label' must be a class index, a class name or null, got {_show(value)}")
    return value


def _resolve(name, where: str, *dirs: Path) -> Path:
    """``name``, a relative path, in the first of ``dirs`` that holds it (else in the first).

    Absolute paths and paths that climb out of their folder (``../x``) are refused.
    """
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise DataError(f"{where}: must be a file name (a string), got {_show(name)}")
    p = Path(name)
    if p.is_absolute():
        raise DataError(f"{where}: {name!r} is an absolute path; paths in annotations are relative "
                        "to the dataset folder")
    if os.path.normpath(name).split(os.sep)[0] == os.pardir:
        raise DataError(f"{where}: {name!r} leaves the dataset folder")
    for d in dirs:
        if (d / p).exists():
            return d / p
    return dirs[0] / p


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
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
        fname = (root.findtext("filename") or "").strip()
        if not fname:
            raise DataError(f"{xml}: no <filename>")
        size = None
        if root.find("size") is not None:
            try:
                size = (int(root.findtext("size/height")), int(root.findtext("size/width")))
            except (TypeError, ValueError):
                size = None
        rec = RawImage(_resolve(fname, f"{xml} <filename>", image_dir / "JPEGImages", xml.parent, image_dir),
                       size=size)
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if bb is None:
                raise DataError(f"{xml}: object {name!r} has no <bndbox>")
            x0, y0, x1, y1 = _box([bb.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")],
                                  f"{xml} object {name!r} <bndbox>", text=True)
            rec.objects.append(RawObject(name, (x0 - 1, y0 - 1, x1, y1), name=name))
        out.append(rec)
    return out


# ---------------------------------------------------------------- COCO
def decode_coco_counts(s: str) -> list[int]:
    """COCO's compressed RLE string (as written by pycocotools) -> run lengths.

    DataError for characters outside ``'0'..'o'``, a string that stops inside a number,
    or a negative run.
    """
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise DataError("compressed RLE counts end inside a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise DataError(f"compressed RLE counts hold {s[p]!r} at {p} (expected '0'..'o')")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise DataError(f"compressed RLE counts decode to a negative run ({x})")
        counts.append(x)
    return counts


def _rle(seg: dict, where: str) -> list[int]:
    """COCO RLE ``counts``: a list of non-negative ints or a compressed string."""
    counts = _get(seg, "counts", where, (list, str), "a list of run lengths or a compressed RLE string",
                  required=True)
    if isinstance(counts, str):
        try:
            return decode_coco_counts(counts)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise DataError(f"{where}: 'counts' must hold non-negative integers, got {_show(counts)}")
    return counts


def _polygons(seg: list, where: str) -> list[list[float]]:
    if not all(isinstance(p, list) for p in seg):
        raise DataError(f"{where}: 'segmentation' must be a list of polygons [x0, y0, x1, y1, ...] "
                        f"or an RLE object, got {_show(seg)}")
    return [[_number(v, where, "each polygon coordinate") for v in p] for p in seg]


def parse_coco(path: Path, image_dir: Path) -> list[RawImage]:
    """A COCO instances JSON -> records; the category name is the label."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO file is an object with images, annotations and categories")
    cats = {}
    for i, c in enumerate(_entries(data, "categories", str(path))):
        where = f"{path} categories[{i}]"
        cats[_get(c, "id", where, (int, str), "an integer or a string", required=True)] = \
            _get(c, "name", where, (str,), "a class name", required=True)
    images: dict = {}
    for i, im in enumerate(_entries(data, "images", str(path))):
        where = f"{path} images[{i}]"
        key = _get(im, "id", where, (int, str), "an integer or a string", required=True)
        h = _get(im, "height", where, (int,), "an integer")
        w = _get(im, "width", where, (int,), "an integer")
        file = _resolve(_get(im, "file_name", where, (str,), "a file name", required=True),
                        f"{where} 'file_name'", path.parent, image_dir)
        images[key] = RawImage(file, size=(h, w) if h is not None and w is not None else None)
    for i, a in enumerate(_entries(data, "annotations", str(path))):
        where = f"{path} annotations[{i}]"
        image_id = _get(a, "image_id", where, (int, str), "an image id", required=True)
        category = _get(a, "category_id", where, (int, str), "a category id", required=True)
        if image_id not in images:
            raise DataError(f"{where}: image_id {_show(image_id)} is not one of the images")
        if category not in cats:
            raise DataError(f"{where}: category_id {_show(category)} is not one of the categories")
        bbox = a.get("bbox")
        box = None
        if bbox is not None and bbox != []:
            x, y, w, h = _box(bbox, f"{where} 'bbox'")
            box = (x, y, x + w, y + h)
        seg = a.get("segmentation")
        polys = rle = None
        if isinstance(seg, dict):
            rle = _rle(seg, f"{where} 'segmentation'")
        elif isinstance(seg, list):
            polys = _polygons(seg, f"{where} 'segmentation'") or None
        elif seg is not None:
            raise DataError(f"{where}: 'segmentation' must be a list of polygons or an RLE object, got {_show(seg)}")
        label = cats[category]
        images[image_id].objects.append(RawObject(label, box, polygons=polys, rle=rle, name=label))
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
        if not isinstance(e, dict):
            raise DataError(f"{where}: each image must be an object {{'file': ..., 'objects': [...]}}, got {_show(e)}")
        file = _get(e, "file", where, (str,), "a file name", required=True)
        rec = RawImage(_resolve(file, f"{where} 'file'", path.parent, image_dir))
        for k, o in enumerate(_get(e, "objects", where, (list,), "a list of objects") or []):
            at = f"{where} object {k}"
            if not isinstance(o, dict):
                raise DataError(f"{at}: must be an object {{'label': ..., 'box': [...]}}, got {_show(o)}")
            box = _box(o["box"], f"{at} 'box'") if o.get("box") is not None else None
            mask = _get(o, "mask", at, (str, type(None)), "a mask file name or null")
            if box is None and mask is None:
                raise DataError(f"{at}: each object needs a 'box' and/or a 'mask'")
            label = _label(o.get("label"), at)
            mask = _resolve(mask, f"{at} 'mask'", path.parent, image_dir) if mask is not None else None
            rec.objects.append(RawObject(label, box, mask, name=str(o.get("name", label if label is not None else ""))))
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
        file = (row.get("file") or "").strip()
        if file not in records:
            records[file] = RawImage(_resolve(file, f"{where} 'file'", path.parent, image_dir))
        rec = records[file]
        coords = [(row.get(k) or "").strip() for k in ("x0", "y0", "x1", "y1")]
        box = _box(coords, where, text=True) if any(coords) else None
        mask = (row.get("mask") or "").strip()
        if box is None and not mask:
            raise DataError(f"{where}: row needs x0,y0,x1,y1 and/or a mask file")
        label = (row.get("label") or "").strip() or None
        rec.objects.append(RawObject(label, box, _resolve(mask, f"{where} 'mask'", path.parent, image_dir)
                                     if mask else None, name=label or ""))
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
