"""Overlay sheet of the real-photo ground truth, and the default model's rank of each label.

For every photo of sycam/data/real_boxes.json: left, the original with its boxes (green:
objects to explain, orange: distractors) and exact masks (cyan outline); right, the
224x224 model input as sycam.data.to_batch makes it, with the transformed boxes and
the mask tinted. Used to check every hand-drawn box by eye. Needs `sycam data fetch`.

usage: python experiments/data/overlay_real_boxes.py [OUT_IMAGE]  (default: experiments/data/real_boxes_overlay.jpg)
"""
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from sycam.data.geometry import to_batch
from sycam.data.real import real_photos
from sycam.models import load_model

torch.set_num_threads(1)
out = sys.argv[1] if len(sys.argv) > 1 else "experiments/data/real_boxes_overlay.jpg"
bundle = load_model()
photos = real_photos("all")
T = 224


def to_pil(t):
    return Image.fromarray((t.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8))


def outline(mask):
    m = Image.fromarray(mask.numpy().astype(np.uint8) * 255)
    return np.asarray(m.filter(ImageFilter.MaxFilter(3))) ^ np.asarray(m.filter(ImageFilter.MinFilter(3)))


tiles = []
print(f"{'photo':44s} {'object':24s} {'label':22s}  p     rank  top-1")
for sample in photos:
    left = to_pil(sample.image)
    arr = np.asarray(left).copy()
    for o in sample.objects:
        if o.mask is not None:
            arr[outline(o.mask) > 0] = (0, 255, 255)
    left = Image.fromarray(arr)
    d = ImageDraw.Draw(left)
    lw = max(2, round(max(left.size) / 250))
    for o in sample.objects:
        d.rectangle(o.box, outline=(0, 255, 0) if o.label is not None else (255, 140, 0), width=lw)
    scale = T / max(left.size)
    left = left.resize((max(1, round(left.width * scale)), max(1, round(left.height * scale))), Image.BILINEAR)
    batch = to_batch([sample], bundle.preprocess)
    with torch.no_grad():
        probs = bundle.model(batch.x).softmax(-1)
    for i in range(len(batch)):
        right = to_pil(batch.images[i])
        arr = np.asarray(right).copy()
        tint = batch.masks[i].numpy()
        arr[tint] = (0.6 * arr[tint] + 0.4 * np.array([0, 255, 0])).astype(np.uint8)
        other = batch.other_masks[i].numpy()
        arr[other] = (0.6 * arr[other] + 0.4 * np.array([255, 140, 0])).astype(np.uint8)
        right = Image.fromarray(arr)
        d = ImageDraw.Draw(right)
        for bx in batch.boxes[i].tolist():
            d.rectangle(bx, outline=(0, 255, 0), width=2)
        lab = int(batch.labels[i])
        p = probs[i]
        rank = int((p > p[lab]).sum()) + 1
        obj = sample.objects[int(batch.names[i].split("#")[1])]
        print(f"{sample.name[:44]:44s} {obj.name[:24]:24s} {bundle.classes[lab][:22]:22s} {p[lab]:.2f} {rank:5d}  "
              f"{bundle.classes[int(p.argmax())]}")
        tile = Image.new("RGB", (2 * T + 4, T + 14), (30, 30, 30))
        tile.paste(left, (0, 14))
        tile.paste(right, (T + 4, 14))
        ImageDraw.Draw(tile).text((2, 1), f"{sample.name.split('/')[-1][:26]} | {obj.name[:14]} "
                                          f"{bundle.classes[lab][:14]} r{rank}", fill=(255, 255, 0))
        tiles.append(tile)
cols = 3
w, h = tiles[0].size
sheet = Image.new("RGB", (cols * w, ((len(tiles) + cols - 1) // cols) * h), (0, 0, 0))
for i, t in enumerate(tiles):
    sheet.paste(t, ((i % cols) * w, (i // cols) * h))
sheet.save(out, quality=90)
print(f"{len(tiles)} items from {len(photos)} photos; sheet written to {out}")
