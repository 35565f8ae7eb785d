"""Keep rates of the composite benchmark and a contact sheet of kept composites.

Generates the first N composites of a seed (default 200, seed 0), classifies each with the
default EfficientNet-Lite0 and prints how many are kept under each rule, split by one- and
two-object images; writes the first 16 kept images (top1 rule) with mask outlines and boxes.
Needs `sycam data fetch`.

usage: python experiments/data/composite_stats.py [N] [SEED] [OUT_IMAGE]
"""
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from sycam.data.composite import Layout, generate, load_backgrounds, recognised
from sycam.data.stamps import load_stamp_images
from sycam.models import load_model

torch.set_num_threads(1)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
out = sys.argv[3] if len(sys.argv) > 3 else "experiments/data/composites_seed0.jpg"
bundle = load_model()
layout = Layout.for_preprocess(bundle.preprocess)
stream = generate(seed, load_stamp_images(), load_backgrounds(), layout)
t = time.perf_counter()
samples = [next(stream) for _ in range(n)]
t_gen = (time.perf_counter() - t) / n
t = time.perf_counter()
keep = {rule: recognised(samples, bundle, rule) for rule in ("top1", "top5")}
t_cls = (time.perf_counter() - t) / (2 * n)
print(f"seed {seed}: {n} composites, {1000 * t_gen:.0f} ms to generate, {1000 * t_cls:.0f} ms to classify each")
for k in (1, 2):
    idx = [i for i, s in enumerate(samples) if len(s.objects) == k]
    print(f"  {k}-object images: {len(idx):4d} generated; kept top-1 rule {sum(keep['top1'][i] for i in idx):4d}, "
          f"top-5 rule {sum(keep['top5'][i] for i in idx):4d}")
kept = [s for s, k in zip(samples, keep["top1"]) if k]
print(f"  kept (top1 rule): {len(kept)} images, {sum(len(s.items()) for s in kept)} items")
tiles = []
for s in kept[:16]:
    im = Image.fromarray((s.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    arr = np.asarray(im).copy()
    for o, colour in zip(s.objects, [(0, 255, 0), (255, 0, 255)]):
        m = Image.fromarray(o.mask.numpy().astype(np.uint8) * 255)
        edge = np.asarray(m.filter(ImageFilter.MaxFilter(3))) ^ np.asarray(m.filter(ImageFilter.MinFilter(3)))
        arr[edge > 0] = colour
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    d.rectangle(layout.box, outline=(255, 0, 0))
    for o, colour in zip(s.objects, [(0, 255, 0), (255, 0, 255)]):
        d.rectangle(o.box, outline=colour)
        d.text((o.box[0] + 2, o.box[1] + 2), o.name, fill=(255, 255, 0))
    tiles.append(im)
c = layout.canvas
sheet = Image.new("RGB", (4 * c, ((len(tiles) + 3) // 4) * c))
for i, im in enumerate(tiles):
    sheet.paste(im, ((i % 4) * c, (i // 4) * c))
sheet.save(out, quality=90)
print(f"sheet of {len(tiles)} kept composites (mask outlines, boxes; red = the model's crop) -> {out}")
