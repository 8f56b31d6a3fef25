"""The model table of docs/models.md, generated from the registry (``python -m imgcls.cli.doc_tables --write``)."""

from __future__ import annotations

import torch

from . import create_model, get_model_cfg, list_models, model_info


def count_parameters(name: str) -> int:
    """Trainable parameters of a model with 1000 classes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _pct(value: float | None) -> str:
    return f"{value:.2f}%" if value is not None else "-"


def _weights_cell(name: str) -> str:
    info = model_info(name)
    return f"[{info['weights']}]({info['weights_url']})" if info["weights"] else "-"


def model_table() -> str:
    """Markdown table: name, params, input / resize-short size, Paddle's published top-1 / top-5, its released
    weights (the tar, linked); then the mean/std every model normalizes with."""
    rows = [
        "| Model | Params (M) | Input | Resize short | Top-1 (Paddle) | Top-5 (Paddle) | Released weights |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for name in list_models():
        cfg = get_model_cfg(name)
        params = count_parameters(name) / 1e6
        sizes = f"{cfg.input_size} | {cfg.resize_short}"
        rows.append(
            f"| {name} | {params:.2f} | {sizes} | {_pct(cfg.top1)} | {_pct(cfg.top5)} | {_weights_cell(name)} |"
        )
    return "\n".join(rows) + "\n\n" + normalization_text()


def normalization_text() -> str:
    """One line per distinct (mean, std) pair: which models use it."""
    groups: dict[tuple, list[str]] = {}
    for name in list_models():
        cfg = get_model_cfg(name)
        groups.setdefault((cfg.mean, cfg.std), []).append(name)
    lines = []
    for (mean, std), names in groups.items():
        who = "every model" if len(groups) == 1 else ", ".join(names)
        lines.append(f"Mean {mean} and std {std} (RGB, pixels scaled to 0..1): {who}.")
    return "\n".join(lines)
