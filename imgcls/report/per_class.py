"""Per-class numbers of an evaluation, from the confusion counts: what ``per_class.csv`` and ``mistakes.csv`` hold.

For class c with confusion row r (true c) and column k (predicted c): support = sum(r), top-1 = r[c] / support
(the class's recall), precision = k[c] / sum(k), top-5 = the class's top-5 hits / support, and the class it is most
often mistaken for = the largest off-diagonal entry of r. A class with no images has no top-1 or top-5; a class
never predicted has no precision: those cells are empty, never a made-up 0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls.hub.weights import atomic_write

from .predictions import PredictionStats

PER_CLASS_FIELDS = [
    "class",
    "name",
    "support",
    "top1",
    "precision",
    "top5",
    "predicted",
    "most_confused_with",
    "confused_count",
]
MISTAKE_FIELDS = ["rank", "probability", "true", "true_name", "pred", "pred_name", "index", "path"]


@dataclass(frozen=True)
class ClassRow:
    """One class's line of per_class.csv (percentages; None where undefined)."""

    label: int
    name: str
    support: int
    top1: float | None
    precision: float | None
    top5: float | None
    predicted: int
    confused_with: int | None
    confused_count: int


def class_names(num_classes: int, names: Sequence[str] | None) -> list[str]:
    """The given names when there is one per class, else the class indices as text."""
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def class_rows(stats: PredictionStats, names: Sequence[str] | None = None) -> list[ClassRow]:
    """Every class's row, in class order."""
    m = stats.matrix()
    top5 = stats.top5.cpu().numpy()
    labels = class_names(stats.num_classes, names)
    off = m.copy()
    np.fill_diagonal(off, 0)
    rows = []
    for c in range(stats.num_classes):
        support, predicted = int(m[c].sum()), int(m[:, c].sum())
        worst = int(off[c].argmax())
        count = int(off[c, worst])
        rows.append(
            ClassRow(
                c,
                labels[c],
                support,
                _percent(int(m[c, c]), support),
                _percent(int(m[c, c]), predicted),
                _percent(int(top5[c]), support),
                predicted,
                worst if count else None,
                count,
            )
        )
    return rows


def confused_pairs(stats: PredictionStats, limit: int) -> list[tuple[int, int, int]]:
    """The ``limit`` largest off-diagonal counts as (true, predicted, count), largest first (ties: lower classes)."""
    m = stats.matrix().copy()
    np.fill_diagonal(m, 0)
    flat = m.ravel()
    nonzero = np.flatnonzero(flat)
    order = nonzero[np.lexsort((nonzero, -flat[nonzero]))][:limit]
    c = stats.num_classes
    return [(int(i // c), int(i % c), int(flat[i])) for i in order]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> Path:
    text = io.StringIO()
    out = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    out.writeheader()
    out.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")))
    return path


def write_per_class(path: Path, rows: list[ClassRow]) -> Path:
    """per_class.csv: one line per class (empty cells where a number is undefined)."""
    names = {r.label: r.name for r in rows}
    lines = [
        {
            "class": r.label,
            "name": r.name,
            "support": r.support,
            "top1": _cell(r.top1),
            "precision": _cell(r.precision),
            "top5": _cell(r.top5),
            "predicted": r.predicted,
            "most_confused_with": "" if r.confused_with is None else names[r.confused_with],
            "confused_count": r.confused_count,
        }
        for r in rows
    ]
    return _write_csv(path, PER_CLASS_FIELDS, lines)


def write_mistakes(path: Path, stats: PredictionStats, names: list[str], paths: Sequence[str] | None) -> Path:
    """mistakes.csv: the kept mistakes, most confident first, with the image path when known."""
    lines = []
    for rank, m in enumerate(stats.worst_mistakes(), start=1):
        known = paths is not None and 0 <= m.index < len(paths)
        lines.append(
            {
                "rank": rank,
                "probability": f"{m.probability:.4f}",
                "true": m.true,
                "true_name": names[m.true],
                "pred": m.pred,
                "pred_name": names[m.pred],
                "index": m.index if m.index >= 0 else "",
                "path": paths[m.index] if known else "",
            }
        )
    return _write_csv(path, MISTAKE_FIELDS, lines)
