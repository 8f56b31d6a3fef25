"""A download's progress on stderr: on a terminal a tqdm bar (bytes, rate, ETA) redrawn in place; elsewhere (logs,
CI) one line when it starts and one when it ends."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from imgcls.metrics import is_terminal

REDRAW_S = 0.2  # at most five redraws a second


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024, one decimal)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Progress of one transfer of ``total`` bytes (None: unknown), ``done`` of which an earlier attempt fetched."""

    def __init__(self, label: str, total: int | None, done: int = 0, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, total, done
        self.stream = stream or sys.stderr
        self.start_done, self.start_time = done, time.monotonic()
        self.bar = None
        if is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=done,
                desc=label,
                file=self.stream,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                mininterval=REDRAW_S,
                dynamic_ncols=True,
            )
        else:
            size = human_bytes(total) if total is not None else "size unknown"
            resumed = f", resuming at {human_bytes(done)}" if done else ""
            self._write(f"downloading {label} ({size}{resumed})\n")

    def rate(self) -> float:
        """Bytes per second over this attempt."""
        return (self.done - self.start_done) / max(time.monotonic() - self.start_time, 1e-6)

    def update(self, n: int) -> None:
        """``n`` more bytes arrived."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self, ok: bool) -> None:
        """End the display: the final figures, or where it stopped."""
        took = time.monotonic() - self.start_time
        if self.bar is not None:
            self.bar.close()
            if not ok:
                self._write(f"download of {self.label} stopped at {human_bytes(self.done)}\n")
        elif ok:
            self._write(
                f"downloaded {self.label}: {human_bytes(self.done)} in {took:.1f} s ({human_bytes(self.rate())}/s)\n"
            )
        else:
            self._write(f"download of {self.label} stopped at {human_bytes(self.done)}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
