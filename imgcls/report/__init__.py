"""An evaluation report: which classes fail, and what the mistakes look like.

    stats = PredictionStats(num_classes, to_pixels=denormalizer(preprocess))
    evaluate(model, loader, device, sink=stats.update)      # or stats.update(logits, labels, images) per batch
    write_report("report/", stats, names=class_names, info=ReportInfo(model=..., preprocess=...))

writes ``per_class.csv``, ``mistakes.csv``, ``summary.md`` and, with matplotlib (``pip install imgcls[plots]``),
``confusion.png`` and ``mistakes.png``. A distributed eval calls ``stats.gather()`` on every rank first and writes
on rank 0.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .figures import PLOTS_HINT, confusion_figure, have_matplotlib, mistakes_figure
from .per_class import class_names, class_rows, write_mistakes, write_per_class
from .predictions import PredictionStats, denormalizer
from .summary import ReportInfo, headline, summary_text, write_summary

__all__ = ["PredictionStats", "ReportInfo", "denormalizer", "headline", "write_report"]


def write_report(
    directory: str | os.PathLike,
    stats: PredictionStats,
    *,
    names: Sequence[str] | None = None,
    info: ReportInfo = ReportInfo(),
    paths: Sequence[str] | None = None,
) -> list[Path]:
    """Write the report of ``stats`` into ``directory`` (created); returns the files written.

    ``names``: one per class (else the indices are used); ``paths``: the evaluated list's image paths, indexed like
    the mistakes' sample indices (for mistakes.csv). Without matplotlib the figures are left out and one line on
    stderr says how to get them."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    labels = class_names(stats.num_classes, names)
    rows = class_rows(stats, labels)
    written = [write_per_class(out / "per_class.csv", rows), write_mistakes(out / "mistakes.csv", stats, labels, paths)]
    figures: list[Path] = []
    if have_matplotlib():
        title = info.model
        figures.append(confusion_figure(stats, labels, out / "confusion.png", title))
        figures.append(mistakes_figure(stats.worst_mistakes(), labels, out / "mistakes.png", title))
    else:
        print(f"no confusion.png / mistakes.png: they need matplotlib ({PLOTS_HINT})", file=sys.stderr)
    text = summary_text(stats, rows, info, [f.name for f in figures])
    written.append(write_summary(out / "summary.md", text))
    return written + figures
