"""A download's progress on stderr: bytes, rate and ETA, redrawn in place on a terminal; elsewhere (logs, CI) one
line when it starts and one when it ends."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_S = 0.2  # at most five redraws a second


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024, one decimal)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def eta_text(seconds: float) -> str:
    """75 -> '1:15', 3725 -> '1:02:05'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Progress of one transfer of ``total`` bytes (None: unknown), ``done`` of which an earlier attempt fetched."""

    def __init__(self, label: str, total: int | None, done: int = 0, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, total, done
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.start_done, self.start_time, self.last_draw = done, time.monotonic(), 0.0
        if not self.live:
            size = human_bytes(total) if total is not None else "size unknown"
            resumed = f", resuming at {human_bytes(done)}" if done else ""
            self._write(f"downloading {label} ({size}{resumed})\n")

    def rate(self) -> float:
        """Bytes per second over this attempt."""
        return (self.done - self.start_done) / max(time.monotonic() - self.start_time, 1e-6)

    def line(self) -> str:
        """'<label>: 45% 12.3 MB/27.1 MB 3.2 MB/s ETA 0:05' (no percentage or ETA when the size is unknown)."""
        rate = self.rate()
        if self.total is None:
            return f"{self.label}: {human_bytes(self.done)} {human_bytes(rate)}/s"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = eta_text((self.total - self.done) / rate) if rate > 0 else "?"
        size = f"{human_bytes(self.done)}/{human_bytes(self.total)}"
        return f"{self.label}: {pct:3.0f}% {size} {human_bytes(rate)}/s ETA {eta}"

    def update(self, n: int) -> None:
        """``n`` more bytes arrived."""
        self.done += n
        now = time.monotonic()
        if self.live and now - self.last_draw >= REDRAW_S:
            self.last_draw = now
            self._write(f"\r{self.line()}\x1b[K")

    def close(self, ok: bool) -> None:
        """End the display: the final figures, or where it stopped."""
        took = time.monotonic() - self.start_time
        if self.live:
            self._write(f"\r{self.line()}\x1b[K\n")
        elif ok:
            self._write(
                f"downloaded {self.label}: {human_bytes(self.done)} in {took:.1f} s ({human_bytes(self.rate())}/s)\n"
            )
        else:
            self._write(f"download of {self.label} stopped at {human_bytes(self.done)}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
