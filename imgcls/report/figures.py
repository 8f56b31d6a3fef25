"""The report's figures, drawn with matplotlib (the optional ``plots`` extra): ``confusion.png`` and ``mistakes.png``.

Up to ``MATRIX_CLASSES`` classes the confusion matrix is drawn whole, row-normalized (each row: where the images of
that true class went), with the class names on both axes; beyond, a matrix is unreadable, so the figure ranks the
``PAIR_LIMIT`` most frequent (true -> predicted) confusions as bars. The mistakes grid shows each image as the model
saw it (the crop, de-normalized), titled with the true class, the predicted class and its probability.

Figures are built on ``matplotlib.figure.Figure`` (no pyplot): no global backend or state is touched.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from imgcls.hub.weights import atomic_write

from .per_class import confused_pairs
from .predictions import Mistake, PredictionStats

PLOTS_HINT = "pip install imgcls[plots]"
MATRIX_CLASSES = 50
PAIR_LIMIT = 30
NAME_CHARS = 22  # longer class names are shortened on axes and titles
DPI = 110


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the ``plots`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def short(name: str, limit: int = NAME_CHARS) -> str:
    """A name cut to ``limit`` characters with an ellipsis."""
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def save_figure(fig, path: Path) -> Path:
    """Render ``fig`` to PNG in memory, then write it atomically (a crash never leaves half a PNG)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def new_figure(width: float, height: float):
    """A pyplot-free Figure of ``width`` x ``height`` inches with a tight layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def confusion_figure(stats: PredictionStats, names: list[str], path: Path, title: str = "") -> Path:
    """confusion.png: the row-normalized matrix (<= MATRIX_CLASSES classes) or the most confused pairs."""
    if stats.num_classes <= MATRIX_CLASSES:
        fig = _matrix(stats, names)
    else:
        fig = _pairs(stats, names)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def _matrix(stats: PredictionStats, names: list[str]):
    m = stats.matrix().astype(np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    c = stats.num_classes
    side = min(14.0, max(4.5, 0.28 * c + 2.5))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    shown = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the true class")
    font = 9 if c <= 15 else max(5, 9 - (c - 15) // 8)
    labels = [short(n, NAME_CHARS + 10 if c <= 15 else NAME_CHARS) for n in names]
    ax.set_xticks(range(c), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(c), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= 20:  # the values fit inside the cells
        for i in range(c):
            for j in range(c):
                if m[i, j]:
                    color = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=font - 1, color=color)
    ax.set_title(f"confusion (rows normalized; {int(m.sum())} images)", fontsize=10)
    return fig


def _pairs(stats: PredictionStats, names: list[str]):
    from matplotlib.ticker import MaxNLocator

    pairs = confused_pairs(stats, PAIR_LIMIT)
    support = stats.matrix().sum(axis=1)
    fig = new_figure(9.0, max(3.0, 0.3 * len(pairs) + 1.5))
    ax = fig.add_subplot()
    if not pairs:
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    labels = [f"{short(names[t])} \u2192 {short(names[p])}" for t, p, _ in pairs]
    counts = [n for _, _, n in pairs]
    y = np.arange(len(pairs))
    ax.barh(y, counts, color="tab:red")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # the most confused pair on top
    for yi, (t, _, n) in zip(y, pairs):
        ax.text(n, yi, f" {n} ({100.0 * n / support[t]:.0f}% of the class)", va="center", fontsize=7)
    ax.set_xlim(0, max(counts) * 1.35)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("images (true \u2192 predicted)")
    ax.set_title(f"the {len(pairs)} most frequent confusions of {stats.num_classes} classes", fontsize=10)
    return fig


def mistakes_figure(mistakes: list[Mistake], names: list[str], path: Path, title: str = "") -> Path:
    """mistakes.png: a grid of the most confident mistakes (image, true and predicted name, probability)."""
    shown = [m for m in mistakes if m.image is not None]
    cols = min(4, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig = new_figure(2.6 * cols, 2.9 * rows + (0.4 if title else 0.0))
    if not shown:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for k, m in enumerate(shown):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(m.image, interpolation="nearest" if m.image.shape[0] < 96 else "antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"true: {short(names[m.true], 18)}\npred: {short(names[m.pred], 18)} ({m.probability:.0%})",
            fontsize=8,
            loc="left",
        )
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
