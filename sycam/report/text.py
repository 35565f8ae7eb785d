"""Text drawn on pictures (PIL): the labels' font and wrapping to a width in pixels, for the
figures and the overlay grids."""
from __future__ import annotations

import os
import re

from PIL import ImageFont


def label_font(size: int):
    """DejaVu Sans (shipped with matplotlib) at ``size`` px, or PIL's default font."""
    try:
        import matplotlib  # deferred: matplotlib costs 0.1 s; only to find its font file

        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)
    except Exception:            # no FreeType: PIL's bitmap font still draws every character we use
        return ImageFont.load_default()


def wrap_px(text: str, font, width: int) -> list[str]:
    """``text`` on lines no wider than ``width`` px: broken at spaces, else after ``/ _ - , .``,
    else anywhere; nothing is left out."""
    out = []
    for part in str(text).split("\n"):
        line = ""
        for word in part.split(" "):
            trial = f"{line} {word}" if line else word
            if font.getlength(trial) <= width:
                line = trial
                continue
            if line:
                out.append(line)
                line = ""
            for piece in re.split(r"(?<=[/_\-,.])", word):       # a token longer than the line
                if font.getlength(line + piece) <= width:
                    line += piece
                    continue
                if line:
                    out.append(line)
                    line = ""
                for ch in piece:
                    if line and font.getlength(line + ch) > width:
                        out.append(line)
                        line = ""
                    line += ch
        out.append(line)
    return out
