"""What a run reports: a progress bar while an epoch runs, then a summary line, a metrics.csv row and TensorBoard
scalars (``imgcls.report.curves`` draws the curves from the csv at the end)."""

from __future__ import annotations

import csv
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import torch

CSV_FIELDS = ["epoch", "train_loss", "train_top1", "val_top1", "val_top5", "lr", "images_per_sec", "epoch_time_s"]


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """How many rows have their label among the top-k logits, for each k (capped at the class count): an int64
    tensor on the logits' device, so that counting never waits for the GPU."""
    kmax = min(max(ks), logits.shape[1])
    hits = logits.topk(kmax, dim=1).indices == labels[:, None]
    return torch.stack([hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


REDRAW_SECONDS = 0.1


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (bars are drawn only there)."""
    return hasattr(stream, "isatty") and stream.isatty()


class ProgressBar:
    """Epoch progress on stderr through tqdm: a bar with the step count, images/s, the caller's values (loss, top-1)
    and tqdm's ETA, redrawn in place on a terminal. Elsewhere (logs, CI, a pipe) it draws nothing: the caller's one
    summary line per epoch is the log."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None) -> None:
        from tqdm import tqdm

        self.total = max(1, total)
        self.stream = stream or sys.stderr
        self.tty = is_terminal(self.stream)
        self.start = time.perf_counter()
        self.last_draw = -math.inf
        self.bar = None
        if self.tty:
            self.bar = tqdm(
                total=self.total,
                desc=desc,
                file=self.stream,
                unit="step",
                dynamic_ncols=True,
                mininterval=REDRAW_SECONDS,
            )

    def due(self, done: int) -> bool:
        """Whether ``update(done, ...)`` would show anything now (at most every ``REDRAW_SECONDS``, and never
        without a terminal): callers read their GPU-side values, which waits for the GPU, only when it is."""
        if self.bar is None:
            return False
        return done >= self.total or time.perf_counter() - self.last_draw >= REDRAW_SECONDS

    def update(self, done: int, images: int, **values: float) -> None:
        """Show ``done`` of ``total`` steps, images/s over ``images`` seen so far, and ``values`` (e.g. loss)."""
        if self.bar is None:
            return
        self.last_draw = time.perf_counter()
        elapsed = self.last_draw - self.start
        rate = images / elapsed if elapsed > 0 else 0.0
        shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.bar.set_postfix_str(f"{shown} {rate:.1f} img/s".strip(), refresh=False)
        self.bar.update(done - self.bar.n)

    def write(self, line: str) -> None:
        """Print ``line`` on stdout above the bar (which is redrawn below it)."""
        if self.bar is None:
            print(line)
        else:
            self.bar.write(line, file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
