"""``summary.md`` of an eval report: the headline numbers, what was evaluated and how, and links to the rest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgcls.data.preprocess import PreprocessSpec
from imgcls.hub.weights import atomic_write

from .per_class import ClassRow
from .predictions import PredictionStats

WORST_SHOWN = 10


@dataclass(frozen=True)
class ReportInfo:
    """What the report says was evaluated: the model, its weights, the data and the preprocessing."""

    model: str = ""
    checkpoint: str = ""
    data: str = ""
    preprocess: PreprocessSpec | None = None


def headline(stats: PredictionStats) -> dict[str, float]:
    """Images, top-1 / top-5 (percent) and the mean cross entropy over everything counted."""
    m = stats.matrix()
    images = int(m.sum())
    if images == 0:
        return {"images": 0, "top1": float("nan"), "top5": float("nan"), "loss": float("nan")}
    return {
        "images": images,
        "top1": 100.0 * int(m.trace()) / images,
        "top5": 100.0 * int(stats.top5.sum()) / images,
        "loss": stats.loss_sum / images,
    }


def _preprocess_lines(spec: PreprocessSpec | None) -> list[str]:
    if spec is None:
        return []
    mean = ", ".join(f"{v:.3f}" for v in spec.mean)
    std = ", ".join(f"{v:.3f}" for v in spec.std)
    return [
        f"- preprocessing: resize the short side to {spec.resize_short} px ({spec.interpolation}), "
        f"center crop {spec.input_size} px, normalize with mean ({mean}) and std ({std})"
    ]


def _cell(text: str) -> str:
    """A class name inside a markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def summary_text(stats: PredictionStats, rows: list[ClassRow], info: ReportInfo, figures: list[str]) -> str:
    """The markdown of summary.md; ``figures`` are the PNG file names written (none without matplotlib)."""
    h = headline(stats)
    empty = sum(1 for r in rows if r.support == 0)
    lines = [
        f"# Evaluation of {info.model or 'a model'}",
        "",
        f"**top-1 {h['top1']:.2f}%, top-5 {h['top5']:.2f}%**, mean cross entropy {h['loss']:.4f}, "
        f"on {h['images']} images of {stats.num_classes} classes"
        + (f" ({empty} {'class' if empty == 1 else 'classes'} without images)" if empty else "")
        + ".",
        "",
    ]
    if info.checkpoint:
        lines.append(f"- weights: `{info.checkpoint}`")
    if info.data:
        lines.append(f"- data: `{info.data}`")
    lines += _preprocess_lines(info.preprocess)
    lines += ["", "Files: [per_class.csv](per_class.csv) (support, top-1, precision, top-5 and the most frequent"]
    lines += ["confusion of every class), [mistakes.csv](mistakes.csv) (the most confident mistakes)."]
    for name in figures:
        lines += ["", f"![{name}]({name})"]
    scored = sorted((r for r in rows if r.support), key=lambda r: (r.top1, -r.support, r.label))[:WORST_SHOWN]
    if scored:
        lines += ["", "## The classes with the lowest top-1", ""]
        lines += ["| class | images | top-1 | precision | top-5 | most often taken for |"]
        lines += ["|---|---:|---:|---:|---:|---|"]
        names = {r.label: r.name for r in rows}
        for r in scored:
            taken = f"{_cell(names[r.confused_with])} ({r.confused_count})" if r.confused_with is not None else "-"
            lines.append(
                f"| {_cell(r.name)} | {r.support} | {_fmt(r.top1)} | {_fmt(r.precision)} | {_fmt(r.top5)} | {taken} |"
            )
    return "\n".join(lines) + "\n"


def write_summary(path: Path, text: str) -> Path:
    """Write summary.md atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
