"""``curves.png`` of a training run from its metrics.csv: loss on the left, accuracy on the right (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

from imgcls.metrics import read_metrics

from .figures import PLOTS_HINT, have_matplotlib, new_figure, save_figure

ACCURACY_SERIES = (("train_top1", "train top-1", "tab:orange"), ("val_top1", "val top-1", "tab:red"))
ACCURACY_SERIES += (("val_top5", "val top-5", "tab:green"),)


def _finite(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves_figure(csv_path: Path, png_path: Path, title: str = "") -> Path:
    """Draw the loss and accuracy curves of ``csv_path`` into ``png_path``; ValueError when it has no rows."""
    from matplotlib.ticker import MaxNLocator

    cols = read_metrics(csv_path)
    if not cols["epoch"]:
        raise ValueError(f"{csv_path}: no rows to plot")
    epochs = [e + 1 for e in cols["epoch"]]  # people count epochs from 1 (the checkpoint folders from 0)
    fig = new_figure(10.0, 4.0)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(*_finite(epochs, cols["train_loss"]), marker="o", ms=3, color="tab:blue", label="train loss")
    loss_ax.set_title("loss", fontsize=10)
    for key, label, color in ACCURACY_SERIES:
        acc_ax.plot(*_finite(epochs, cols[key]), marker="o", ms=3, color=color, label=label)
    acc_ax.set_title("accuracy", fontsize=10)
    acc_ax.set_ylabel("%")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, Path(png_path))


def plot_run(csv_path: Path, png_path: Path, title: str = "") -> str:
    """Draw a run's curves when matplotlib is installed; returns the line that says where the metrics and the
    curves are (or how to get the curves)."""
    if not have_matplotlib():
        return f"metrics: {csv_path}; no curves.png: it needs matplotlib ({PLOTS_HINT})"
    return f"metrics: {csv_path}; curves: {curves_figure(csv_path, png_path, title)}"
