"""What a run reports: a progress bar while an epoch runs, then a summary line, a metrics.csv row, TensorBoard
scalars, and at the end a PNG plot of the curves (drawn with OpenCV; no matplotlib dependency)."""

from __future__ import annotations

import csv
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch

CSV_FIELDS = ["epoch", "train_loss", "train_top1", "val_top1", "val_top5", "lr", "images_per_sec", "epoch_time_s"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """How many rows have their label among the top-k logits, for each k (capped at the class count): an int64
    tensor on the logits' device, so that counting never waits for the GPU."""
    kmax = min(max(ks), logits.shape[1])
    hits = logits.topk(kmax, dim=1).indices == labels[:, None]
    return torch.stack([hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


REDRAW_SECONDS = 0.1


class ProgressBar:
    """Epoch progress on stderr: one ``\\r``-rewritten line on a terminal, a plain line every ~10% otherwise."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, width: int = 24) -> None:
        self.total, self.desc, self.width = max(1, total), desc, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.next_plain = 0.1
        self.last_draw = -math.inf

    def due(self, done: int) -> bool:
        """Whether ``update(done, ...)`` would show anything now (a terminal redraws at most every
        ``REDRAW_SECONDS``): callers read their GPU-side values, which waits for the GPU, only when it is."""
        if done >= self.total:
            return True
        if self.tty:
            return time.perf_counter() - self.last_draw >= REDRAW_SECONDS
        return done / self.total >= self.next_plain

    def update(self, done: int, images: int, **values: float) -> None:
        """Show ``done`` of ``total`` steps, images/s over ``images`` seen so far, and ``values`` (e.g. loss)."""
        elapsed = time.perf_counter() - self.start
        frac = min(1.0, done / self.total)
        rate = images / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - done) if done else 0.0
        shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        text = f"{self.desc} {done}/{self.total} {shown} {rate:.1f} img/s ETA {format_duration(eta)}"
        if self.tty:
            self.last_draw = time.perf_counter()
            bar = "#" * int(frac * self.width)
            self.stream.write(f"\r{self.desc} [{bar:<{self.width}}] {text[len(self.desc) + 1 :]}\x1b[K")
            self.stream.flush()
        elif frac >= self.next_plain or done == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.next_plain = math.floor(frac * 10 + 1) / 10

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class MetricsLog:
    """Appends one row per epoch to ``metrics.csv`` and writes the same scalars as TensorBoard events."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, keep_before_epoch: int = 0) -> None:
        """Rows of epochs >= ``keep_before_epoch`` already in the csv are dropped: a fresh run (0) starts a new
        file, a resume from epoch e keeps only the rows its checkpoint has seen. A fresh run also starts a fresh
        ``tb/`` (event files would otherwise pile up, and TensorBoard would draw the old runs' curves as one)."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self._truncate(keep_before_epoch)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if keep_before_epoch == 0:
                shutil.rmtree(self.run_dir / "tb", ignore_errors=True)

            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def _truncate(self, keep_before_epoch: int) -> None:
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("epoch") and int(r["epoch"]) < keep_before_epoch]
        with open(self.csv_path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            out.writeheader()
            out.writerows(rows)

    def append(self, row: dict[str, float]) -> None:
        """Add an epoch's row (keys from ``CSV_FIELDS``); the header is written once, on a new file."""
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with open(self.csv_path, "a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if new:
                out.writeheader()
            out.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and value is not None and not (isinstance(value, float) and math.isnan(value)):
                    self.writer.add_scalar(key, value, int(row["epoch"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(csv_path: Path) -> dict[str, list[float]]:
    """The columns of a metrics.csv as float lists (empty cells -> nan)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows] for k in CSV_FIELDS}


def _draw_panel(img: np.ndarray, box: tuple[int, int, int, int], x: list[float], series: dict, title: str) -> None:
    """Line plot of ``series`` ({name: (values, BGR color)}) against ``x`` inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    black, gray = (0, 0, 0), (200, 200, 200)
    finite = [v for vals, _ in series.values() for v in vals if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    xmin, xmax = min(x), max(x) if len(x) > 1 else min(x) + 1

    def to_px(xv: float, yv: float) -> tuple[int, int]:
        px = x0 + (xv - xmin) / (xmax - xmin) * (x1 - x0)
        py = y1 - (yv - lo) / (hi - lo) * (y1 - y0)
        return int(round(px)), int(round(py))

    for i in range(5):  # horizontal grid with value labels
        yv = lo + (hi - lo) * i / 4
        _, py = to_px(xmin, yv)
        cv2.line(img, (x0, py), (x1, py), gray, 1)
        cv2.putText(img, f"{yv:.3g}", (x0 - 55, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), black, 1)
    cv2.putText(img, title, (x0, y0 - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, black, 1, cv2.LINE_AA)
    cv2.putText(img, "epoch", ((x0 + x1) // 2 - 20, y1 + 35), cv2.FONT_HERSHEY_SIMPLEX, 0.45, black, 1, cv2.LINE_AA)
    for xv in sorted(set(int(v) for v in x)):
        px, _ = to_px(xv, lo)
        cv2.putText(img, str(xv), (px - 4, y1 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
    for row, (name, (vals, color)) in enumerate(series.items()):
        pts = [to_px(xv, yv) for xv, yv in zip(x, vals) if math.isfinite(yv)]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, dtype=np.int32)], False, color, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, color, -1, cv2.LINE_AA)
        cv2.putText(img, name, (x1 - 110, y0 + 18 + 18 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)


def plot_metrics(csv_path: Path, png_path: Path, title: str = "") -> Path:
    """Draw loss and accuracy curves from a metrics.csv into a PNG (two panels, 1000 x 420)."""
    cols = read_metrics(csv_path)
    if not cols["epoch"]:
        raise ValueError(f"{csv_path}: no rows to plot")
    img = np.full((420, 1000, 3), 255, np.uint8)
    epochs = cols["epoch"]
    _draw_panel(img, (80, 60, 470, 360), epochs, {"train loss": (cols["train_loss"], (200, 80, 0))}, "loss")
    acc = {
        "train top-1": (cols["train_top1"], (0, 140, 255)),
        "val top-1": (cols["val_top1"], (0, 0, 200)),
        "val top-5": (cols["val_top5"], (0, 150, 0)),
    }
    _draw_panel(img, (580, 60, 970, 360), epochs, acc, "accuracy")
    if title:
        cv2.putText(img, title, (80, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    png_path = Path(png_path)
    if not cv2.imwrite(str(png_path), img):
        raise OSError(f"could not write {png_path}")
    return png_path
