"""Composite images: real photo cut-outs pasted onto real backgrounds, with exact ground truth.

A composite is a crop of a real background photo or texture (scikit-image grass,
gravel and brick; palapeli-data textures; opencv-doc lake, meadow and aerial photos),
resized to a square canvas, with one or two Tux Paint stamps (photo cut-outs with alpha,
see :mod:`sycam.data.stamps`) pasted at a random position and scale inside the region
that the model's crop keeps. Ground truth is exact: an object's mask is its resized alpha
above 127 minus whatever a later object covers, its box is that mask's bounding box. The
two objects of a two-object image have different classes and overlap lightly at most (at
most ``max_hidden`` of the lower object is covered), and both masks are recorded.

Everything is deterministic from the seed: image ``i`` of seed ``s`` depends only on
``(s, i)``, the stamp list and the backgrounds. :func:`composite_set` keeps only images the
default model recognises (**top-1** correct for one-object images, **each object in the
top-5** for two-object images; ``rule="top5"`` relaxes one-object images to top-5 too)
and can cache the kept images as PNG + JSON under ``<cache>/composites/``. The keep
decision reads the model's output (one image per forward pass, so it never depends on
batching); a platform whose float results differ in the last bits could flip a borderline
top-5 decision, which is what the cache is for: it pins the kept set.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..models import load_model
from .cache import cache_dir, group_path
from .geometry import visible_region
from .images import open_image, pil_to_tensor, read_image, read_mask
from .sample import AnnotatedObject, Sample, mask_box
from .stamps import Stamp, load_stamp_images

ALPHA_THRESHOLD = 127
RULES = ("top1", "top5", "none")

# (origin, path): origin "skimage" = installed package, else the fetched group's folder
BACKGROUNDS = [
    ("skimage", "data/grass.png"), ("skimage", "data/gravel.png"), ("skimage", "data/brick.png"),
    ("palapeli", "backgrounds/Eliminator-Funk-2.jpg"), ("palapeli", "backgrounds/Rear-Admiral-Diplomat-1.jpg"),
    ("palapeli", "backgrounds/Time-For-Lunch-2.jpg"), ("palapeli", "backgrounds/gon-defends-the-critters-1.jpg"),
    ("palapeli", "backgrounds/mahogany-handjob-1.jpg"),
    ("opencv", "hfs/data/001.jpg"), ("opencv", "hfs/data/002.jpg"), ("opencv", "data/aero1.jpg"),
]


@dataclass(frozen=True)
class Layout:
    """How composites are drawn. Scales are an object's size (square root of its box area,
    longer side at most 95% of the region) / the region's side."""

    canvas: int = 256
    region: tuple[int, int, int, int] | None = None   # x0,y0,x1,y1 objects must stay in; None = canvas
    one_scale: tuple[float, float] = (0.45, 0.7)
    two_scale: tuple[float, float] = (0.35, 0.5)
    two_objects: float = 0.5                           # probability of a two-object image
    max_hidden: float = 0.1                            # most of the lower object a later one may cover
    bg_crop: tuple[float, float] = (0.5, 1.0)          # background crop side / its shorter side

    @classmethod
    def for_preprocess(cls, preprocess, **kw) -> "Layout":
        """Canvas of the preprocessing's resize size; objects inside what its crop keeps."""
        side = preprocess.resize or preprocess.size
        x0, y0, x1, y1 = visible_region(preprocess, (side, side))
        region = (int(np.ceil(x0)), int(np.ceil(y0)), int(np.floor(x1)), int(np.floor(y1)))
        return cls(side, region, **kw)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.region if self.region is not None else (0, 0, self.canvas, self.canvas)


def load_backgrounds(root: str | Path | None = None) -> list[tuple[str, Image.Image]]:
    """The background photos/textures as RGB images (DataError telling to fetch if missing)."""
    import skimage  # deferred: only its bundled photos are read; its modules load on use, slowly

    out = []
    for origin, rel in BACKGROUNDS:
        base = Path(skimage.__file__).parent if origin == "skimage" else group_path(origin, root)
        out.append((f"{origin}/{rel}", open_image(base / rel).convert("RGB")))
    return out


def _resize_rgba(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize with premultiplied alpha, so edges do not pick up the transparent colour."""
    return im.convert("RGBa").resize(size, Image.BICUBIC).convert("RGBA")


def make_composite(seed: int, index: int, stamps: list[tuple[Stamp, Image.Image]],
                   backgrounds: list[tuple[str, Image.Image]], layout: Layout = Layout()) -> Sample | None:
    """Composite number ``index`` of ``seed``; None if its objects could not be placed."""
    rng = random.Random(seed * 1_000_003 + index)
    two = rng.random() < layout.two_objects
    bg_name, bg = backgrounds[rng.randrange(len(backgrounds))]
    side = int(rng.uniform(*layout.bg_crop) * min(bg.size))
    bx, by = rng.randint(0, bg.width - side), rng.randint(0, bg.height - side)
    c = layout.canvas
    canvas = bg.crop((bx, by, bx + side, by + side)).resize((c, c), Image.BICUBIC).convert("RGBA")
    first = stamps[rng.randrange(len(stamps))]
    chosen = [first]
    if two:
        others = [s for s in stamps if s[0].label != first[0].label]
        chosen.append(others[rng.randrange(len(others))])
    rx0, ry0, rx1, ry1 = layout.box
    masks: list[np.ndarray] = []
    placed = []
    for stamp, im in chosen:
        frac = rng.uniform(*(layout.two_scale if two else layout.one_scale))
        region = min(rx1 - rx0, ry1 - ry0)
        scale = min(frac * region / (im.width * im.height) ** 0.5, 0.95 * region / max(im.size))
        w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
        piece = _resize_rgba(im, (w, h))
        alpha = np.asarray(piece.getchannel("A")) > ALPHA_THRESHOLD
        if not alpha.any() or w > rx1 - rx0 or h > ry1 - ry0:
            return None
        for _ in range(50):
            x, y = rng.randint(rx0, rx1 - w), rng.randint(ry0, ry1 - h)
            m = np.zeros((c, c), dtype=bool)
            m[y:y + h, x:x + w] = alpha
            if all((mm & m).sum() <= layout.max_hidden * mm.sum() for mm in masks):
                break
        else:
            return None
        canvas.alpha_composite(piece, (x, y))
        masks = [mm & ~m for mm in masks] + [m]
        placed.append({"stamp": stamp.path, "xywh": [x, y, w, h]})
    objects = [AnnotatedObject(s.label, mask_box(torch.from_numpy(m)), torch.from_numpy(m), s.name)
               for (s, _), m in zip(chosen, masks)]
    meta = {"seed": seed, "index": index, "background": bg_name, "bg_crop": [bx, by, side], "layout": placed}
    return Sample(pil_to_tensor(canvas), objects, f"composite-s{seed}-{index:05d}", "composite", meta)


def generate(seed: int, stamps: list[tuple[Stamp, Image.Image]], backgrounds: list[tuple[str, Image.Image]],
             layout: Layout = Layout(), start: int = 0) -> Iterator[Sample]:
    """The endless, deterministic stream of composites of ``seed`` (unplaceable ones skipped)."""
    index = start
    while True:
        sample = make_composite(seed, index, stamps, backgrounds, layout)
        if sample is not None:
            yield sample
        index += 1


def composites(n: int, seed: int = 0, root: str | Path | None = None, layout: Layout = Layout()) -> list[Sample]:
    """The first ``n`` composites of ``seed``, unfiltered (needs ``sycam data fetch``).

    The default layout places objects anywhere on the canvas; pass
    ``Layout.for_preprocess(pre)`` to keep them inside a model's crop.
    """
    stream = generate(seed, load_stamp_images(root=root), load_backgrounds(root), layout)
    return [next(stream) for _ in range(n)]


@dataclass
class CompositeSet:
    """Kept composites and how many were generated to find them."""

    samples: list[Sample]
    generated: int
    rule: str
    cached: bool = False
    path: Path | None = field(default=None, repr=False)

    @property
    def kept(self) -> int:
        return len(self.samples)

    def items(self) -> list[tuple[Sample, int]]:
        return [it for s in self.samples for it in s.items()]

    def __str__(self) -> str:
        how = {"top1": "top-1 (one object) / top-5 (each of two)", "top5": "top-5", "none": "unfiltered"}[self.rule]
        return (f"composites: kept {self.kept} of {self.generated} generated ({how}), "
                f"{len(self.items())} items{' (from cache)' if self.cached else ''}")


def recognised(samples: list[Sample], bundle, rule: str = "top1") -> list[bool]:
    """Whether the model recognises every object of each sample under ``rule``.

    One forward pass per image (batch of one), so the answer for an image never depends
    on which other images are classified with it.
    """
    out = []
    pre = bundle.preprocess
    for s in samples:
        if rule == "none":
            out.append(True)
            continue
        x = pre.normalise(pre.geometry(s.image).clamp(0, 1))[None]
        with torch.no_grad():
            top5 = bundle.model(x)[0].topk(5).indices.tolist()
        labels = [s.objects[k].label for _, k in s.items()]
        if len(labels) == 1 and rule == "top1":
            out.append(top5[0] == labels[0])
        else:
            out.append(all(lab in top5 for lab in labels))
    return out


def composite_set(n_items: int, bundle=None, *, seed: int = 0, root: str | Path | None = None,
                  layout: Layout | None = None, rule: str = "top1", cache: bool = True,
                  max_generated: int | None = None) -> CompositeSet:
    """The first composites of ``seed`` the model recognises, holding at least ``n_items`` objects.

    ``bundle``: the model (default: :func:`sycam.models.load_model`); ``layout``: default
    :meth:`Layout.for_preprocess` of the model; ``rule``: see the module docstring. The
    kept images are a prefix of one deterministic sequence per (seed, rule, layout, stamp
    list, model), so asking for more extends it and asking for fewer truncates it. With
    ``cache``, that sequence is stored under ``<cache>/composites/<key>/`` and grown on demand.
    """
    if rule not in RULES:
        raise DataError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
    if n_items < 1:
        raise DataError(f"n_items must be positive, not {n_items}")
    if bundle is None:
        bundle = load_model()
    layout = layout or Layout.for_preprocess(bundle.preprocess)
    stamps = load_stamp_images(root=root)
    folder = cache_dir(root) / "composites" / _key(seed, rule, layout, [s for s, _ in stamps], bundle)
    done = _load(folder) if cache and (folder / "index.json").is_file() else CompositeSet([], 0, rule)
    kept, generated = list(done.samples), done.generated
    items = sum(len(s.items()) for s in kept)
    grown = items < n_items
    if grown:
        backgrounds = load_backgrounds(root)
        limit = generated + (max_generated if max_generated is not None else 30 * n_items + 100)
        while items < n_items:
            if generated >= limit:
                raise DataError(f"only {items} of {n_items} composite items recognised after {generated} "
                                f"composites (rule {rule}); is this the right model?")
            s = make_composite(seed, generated, stamps, backgrounds, layout)
            generated += 1
            if s is not None and recognised([s], bundle, rule)[0]:
                kept.append(s)
                items += len(s.items())
        if cache:
            _save(CompositeSet(kept, generated, rule), folder)
    # the shortest prefix that holds n_items, and how many composites it took to find it
    prefix, count = [], 0
    for s in kept:
        if count >= n_items:
            break
        prefix.append(s)
        count += len(s.items())
    used = prefix[-1].meta["index"] + 1
    return CompositeSet(prefix, used, rule, cached=not grown, path=folder if cache else None)


def _key(seed, rule, layout, stamps, bundle) -> str:
    spec = {"v": 1, "seed": seed, "rule": rule, "layout": asdict(layout),
            "stamps": [(s.path, s.label) for s in stamps], "backgrounds": BACKGROUNDS,
            "model": getattr(bundle, "name", type(bundle).__name__), "size": bundle.preprocess.size}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _save(cs: CompositeSet, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        entries = []
        for i, s in enumerate(cs.samples):
            img = Image.fromarray((s.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            img.save(tmp / f"{i:04d}.png")
            objs = []
            for k, o in enumerate(s.objects):
                Image.fromarray(o.mask.numpy()).save(tmp / f"{i:04d}_m{k}.png")
                objs.append({"label": o.label, "name": o.name, "box": list(o.box), "mask": f"{i:04d}_m{k}.png"})
            entries.append({"file": f"{i:04d}.png", "name": s.name, "objects": objs, "meta": s.meta})
        index = {"generated": cs.generated, "rule": cs.rule, "images": entries}
        (tmp / "index.json").write_text(json.dumps(index, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> CompositeSet:
    index = json.loads((folder / "index.json").read_text())
    samples = []
    for e in index["images"]:
        image = read_image(folder / e["file"])
        size = (int(image.shape[1]), int(image.shape[2]))
        objs = [AnnotatedObject(o["label"], tuple(o["box"]), read_mask(folder / o["mask"], size), o["name"])
                for o in e["objects"]]
        samples.append(Sample(image, objs, e["name"], "composite", e["meta"]))
    return CompositeSet(samples, index["generated"], index["rule"], cached=True, path=folder)
