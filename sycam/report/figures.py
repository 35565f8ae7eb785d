"""Charts for search and ablation reports (matplotlib, Agg backend, PNG files).

* :func:`bar_chart` - horizontal bars with 95 % error bars (leaderboards, ablations);
* :func:`pareto_plot` - two objectives of every trial, the Pareto front and the seeds;
* :func:`latex_png` - an expression typeset by matplotlib's mathtext (None if it cannot be).

Overlay grids are :func:`sycam.report.overlay.save_grid`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
