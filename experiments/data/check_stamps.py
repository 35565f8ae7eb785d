"""Re-check the curated Tux Paint stamp list with the default model; write the kept list.

Each stamp (cropped to its alpha) is scaled to 80% of the 224 canvas, pasted in the
centre of a plain mid-grey canvas and classified by the default EfficientNet-Lite0. A
stamp is kept if the model's top-1 is the listed class and it is a photograph: the
drawings/cartoons in DRAWINGS were judged by eye on a contact sheet and are dropped.
Needs `sycam data fetch`.

usage: python experiments/data/check_stamps.py DRAFT_TSV OUT_TSV
"""
import sys

import torch
from PIL import Image

from sycam.data.images import pil_to_tensor
from sycam.data.stamps import load_stamp_images, read_stamp_list
from sycam.models import load_model

DRAWINGS = {  # not photographs (flat colours / outlines), judged on the contact sheet
    "animals/mammals/echidna.png", "clothes/hats/sombrero.png", "clothes/t_tshirt.png",
    "seasonal/christmas/stocking.png", "seasonal/halloween/jackolantern_mean.png",
    "military/ammunition/old_naval_shell.png",
}
torch.set_num_threads(1)
draft, out = sys.argv[1], sys.argv[2]
bundle = load_model()
stamps = load_stamp_images(read_stamp_list(draft))
S = bundle.preprocess.size
kept, dropped = [], []
for stamp, im in stamps:
    scale = 0.8 * S / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
    canvas = Image.new("RGBA", (S, S), (128, 128, 128, 255))
    canvas.alpha_composite(im, ((S - im.width) // 2, (S - im.height) // 2))
    x = bundle.preprocess.normalise(pil_to_tensor(canvas))[None]
    with torch.no_grad():
        p = bundle.model(x).softmax(-1)[0]
    top = int(p.argmax())
    row = (stamp.path, stamp.label, bundle.classes[stamp.label], float(p[stamp.label]))
    if stamp.path in DRAWINGS:
        print(f"drop {stamp.path}: a drawing, not a photo")
        dropped.append(row)
        continue
    (kept if top == stamp.label else dropped).append(row)
    if top != stamp.label:
        print(f"drop {stamp.path}: listed {bundle.classes[stamp.label]} p={p[stamp.label]:.2f}, "
              f"top-1 {bundle.classes[top]} p={p[top]:.2f}")
with open(out, "w") as fh:
    fh.write("# stamp path (under /usr/share/tuxpaint/stamps, Debian tuxpaint-stamps-default 2022.06.04-1, GPL-2+)"
             "\timagenet_idx\tclass\tp_top1_lite0_on_grey (top-1 checked by experiments/data/check_stamps.py)\n")
    for path, idx, name, p in kept:
        fh.write(f"{path}\t{idx}\t{name}\t{p:.2f}\n")
print(f"kept {len(kept)} of {len(stamps)} stamps ({len({r[1] for r in kept})} classes); dropped {len(dropped)}")
