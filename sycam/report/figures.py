"""Charts for search and ablation reports (matplotlib, Agg backend, PNG files).

* :func:`bar_chart` - horizontal bars with 95 % error bars (leaderboards, ablations);
* :func:`pareto_plot` - two objectives of every trial, the Pareto front and the seeds;
* :func:`latex_png` - an expression typeset by matplotlib's mathtext (None if it cannot be);
* :func:`overlay_grid` - images x methods with the ground-truth boxes drawn and a label under
  every picture (target class, per-image score); full names, wrapped, never cut (drawn with
  PIL: one picture, fast even for many tiles).

Plain overlay grids are :func:`sycam.report.overlay.save_grid`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from .overlay import overlay, to_uint8
from .text import label_font, wrap_px


def _plt():
    import matplotlib  # deferred: matplotlib (pyplot: 0.5 s) loads only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after use("Agg"), which must come first

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def bar_chart(path: str | Path, labels: Sequence[str], values: Sequence[float],
              low: Sequence[float] | None = None, high: Sequence[float] | None = None, *,
              title: str = "", xlabel: str = "", highlight: Sequence[bool] | None = None,
              reference: float | None = None) -> Path:
    """One bar per label (top to bottom in the given order), optional interval whiskers,
    highlighted bars in a second colour and a vertical reference line."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8, 0.35 * n + 1.2))
    ys = list(range(n))[::-1]
    colours = ["tab:orange" if highlight and highlight[i] else "tab:blue" for i in range(n)]
    err = None
    if low is not None and high is not None:
        err = [[max(0.0, v - lo) if lo == lo else 0.0 for v, lo in zip(values, low)],
               [max(0.0, hi - v) if hi == hi else 0.0 for v, hi in zip(values, high)]]
    ax.barh(ys, values, xerr=err, color=colours, alpha=0.85, capsize=2)
    ax.set_yticks(ys)
    ax.set_yticklabels([lab if len(lab) <= 60 else lab[:57] + "..." for lab in labels], fontsize=7)
    if reference is not None:
        ax.axvline(reference, color="k", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def pareto_plot(path: str | Path, points: Sequence[tuple[float, float]], front: Sequence[tuple[float, float]],
                seeds: dict[str, tuple[float, float]], names: tuple[str, str], title: str = "") -> Path:
    """Every trial (grey), the Pareto front (red, joined) and the seeds (labelled)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if points:
        xs, ys = zip(*points)
        ax.scatter(xs, ys, s=8, c="0.6", label="trials")
    if front:
        fx, fy = zip(*sorted(front))
        ax.plot(fx, fy, "o-", c="tab:red", ms=4, lw=1, label="Pareto front")
    for name, (x, y) in seeds.items():
        ax.scatter([x], [y], marker="*", s=80, c="tab:blue")
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def latex_png(path: str | Path, latex: str, fontsize: int = 14) -> Path | None:
    """The LaTeX of an expression rendered by mathtext; None when mathtext cannot parse it."""
    plt = _plt()
    text = latex.replace(r"\operatorname{ReLU}", r"\mathrm{ReLU}").replace(r"\operatorname", r"\mathrm")
    fig = plt.figure(figsize=(0.01, 0.01))
    fig.text(0, 0, f"${text}$", fontsize=fontsize)
    try:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.08)
    except Exception:      # mathtext covers a subset of LaTeX
        return None
    finally:
        plt.close(fig)
    return path


def score_text(value: float) -> str:
    """A score as the pictures show it: three decimals, "n/a" where it is missing (NaN)."""
    return "n/a" if value != value else f"{value:.3f}"


def class_name(index: int, classes: Sequence[str] | None) -> str:
    """The name of class ``index`` (``class <index>`` where the names do not cover it)."""
    return str(classes[index]) if classes and 0 <= index < len(classes) else f"class {index}"


def score_labels(targets: Sequence[str], metric: str, scores: Sequence[float]) -> list[str]:
    """The label under each overlay of a grid: ``target <class>: <metric> <score>``."""
    return [f"target {t}: {metric} {score_text(float(s))}" for t, s in zip(targets, scores)]


def overlay_grid(path: str | Path, images, maps: Mapping[str, object], *, boxes: Sequence | None = None,
                 row_titles: Sequence[str] = (), cell_labels: Mapping[str, Sequence[str]] | None = None,
                 title: str | None = None, tile: int | None = None, alpha: float = 0.5, cmap: str = "jet",
                 by: str = "image", font_size: int = 12, page: int = 1180) -> Path:
    """Overlays with the ground-truth boxes (green) and a label under every picture, as one PNG.

    ``by="image"``: one row per image, the image first, then one column per map (``maps``'
    names as column titles). ``by="map"``: the images in the first row, then one row per map,
    its name on the left (for many maps and few images). ``row_titles[i]`` names image i (image
    name, target class), ``cell_labels[name][i]`` goes under that map's overlay of image i.
    Pictures are ``tile`` px squares (aspect kept; default: what fits a report's ``page`` width,
    150 to 220 px); every text is wrapped, never cut.
    """
    if by not in ("image", "map"):
        raise ValueError(f"by must be 'image' or 'map', not {by!r}")
    font, big = label_font(font_size), label_font(font_size + 3)
    lh = int(font_size * 1.25)
    pad = 8
    names = list(maps)
    n = len(images)
    pictures: dict[tuple[int, int], tuple[object, int]] = {}     # (row, col) -> (picture, image index)
    below: dict[tuple[int, int], str] = {}
    above: dict[tuple[int, int], str] = {}
    side: dict[int, str] = {}                                      # by="map": the row's name, on the left
    first_label = "image (ground truth in green)"
    for i in range(n):
        img = images[i].detach().cpu()
        r, c = (i, 0) if by == "image" else (0, i)
        pictures[r, c] = (img, i)
        below[r, c] = row_titles[i] if i < len(row_titles) else ""
        for j, m in enumerate(names, start=1):
            r, c = (i, j) if by == "image" else (j, i)
            pictures[r, c] = (overlay(img, maps[m][i].detach().cpu(), alpha, cmap), i)
            labels = (cell_labels or {}).get(m)
            below[r, c] = labels[i] if labels is not None and i < len(labels) else ""
    if by == "image":
        rows, cols = n, len(names) + 1
        for c, m in enumerate([first_label, *names]):
            above[0, c] = m
        left = 0
    else:
        rows, cols = len(names) + 1, n
        for r, m in enumerate([first_label, *names]):
            side[r] = m
        left = int(min(240, max(100, max(font.getlength(m) for m in side.values()) + 2 * pad)))
    if tile is None:
        tile = int(min(220, max(150, (page - left - pad) / cols - pad)))
    cw = tile + pad
    wrapped_below = {k: wrap_px(v, font, tile) if v else [] for k, v in below.items()}
    wrapped_above = {k: wrap_px(v, font, tile) if v else [] for k, v in above.items()}
    wrapped_side = {r: wrap_px(v, font, left - 2 * pad) for r, v in side.items()}
    heights = []
    for r in range(rows):
        up = max([len(wrapped_above.get((r, c), [])) for c in range(cols)] + [0])
        down = max([len(wrapped_below.get((r, c), [])) for c in range(cols)] + [0])
        h = max(tile + (up + down) * lh + pad, len(wrapped_side.get(r, [])) * lh + pad)
        heights.append((up, h))
    title_lines = wrap_px(title, big, left + cols * cw - 2 * pad) if title else []
    top = len(title_lines) * (lh + 3) + (2 * pad if title else 0)
    canvas = Image.new("RGB", (left + cols * cw + pad, top + sum(h for _, h in heights) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(title_lines):
        draw.text(((canvas.width - big.getlength(line)) / 2, pad + k * (lh + 3)), line, fill="black", font=big)
    y = top
    for r in range(rows):
        up, h = heights[r]
        lines = wrapped_side.get(r, [])
        for k, line in enumerate(lines):
            draw.text((left - pad - font.getlength(line), y + up * lh + (tile - len(lines) * lh) / 2 + k * lh), line,
                      fill="black", font=font)
        for c in range(cols):
            x = left + pad + c * cw
            for k, line in enumerate(wrapped_above.get((r, c), [])):
                draw.text((x + (tile - font.getlength(line)) / 2, y + k * lh), line, fill="black", font=font)
            if (r, c) not in pictures:
                continue
            picture, i = pictures[r, c]
            pil = Image.fromarray(to_uint8(picture))
            scale = tile / max(pil.width, pil.height)
            w, hh = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
            pil = pil.resize((w, hh), Image.NEAREST if scale >= 1 else Image.LANCZOS)
            px, py = x + (tile - w) // 2, y + up * lh + (tile - hh) // 2
            canvas.paste(pil, (px, py))
            draw.rectangle((px - 1, py - 1, px + w, py + hh), outline="#444")
            if boxes is not None and i < len(boxes) and boxes[i] is not None:
                for x0, y0, x1, y1 in boxes[i].detach().cpu().reshape(-1, 4).tolist():
                    draw.rectangle((px + x0 * scale, py + y0 * scale, px + x1 * scale - 1, py + y1 * scale - 1),
                                   outline=(0, 230, 0), width=2)
            for k, line in enumerate(wrapped_below.get((r, c), [])):
                draw.text((x + (tile - font.getlength(line)) / 2, y + up * lh + tile + 2 + k * lh), line,
                          fill="black", font=font)
        y += h
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=False)
    return path
