"""The model table of docs/models.md, generated from the registry (``python -m imgcls.cli.doc_tables --write``)."""

from __future__ import annotations

import torch

from . import create_model, get_model_cfg, list_models


def count_parameters(name: str) -> int:
    """Trainable parameters of a model with 1000 classes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _pct(value: float | None) -> str:
    return f"{value:.2f}%" if value is not None else "-"


def model_table() -> str:
    """Markdown table: name, params, input / resize-short size, Paddle's published top-1 / top-5."""
    rows = [
        "| Model | Params (M) | Input | Resize short | Top-1 (Paddle) | Top-5 (Paddle) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name in list_models():
        cfg = get_model_cfg(name)
        params = count_parameters(name) / 1e6
        rows.append(
            f"| {name} | {params:.2f} | {cfg.input_size} | {cfg.resize_short} | {_pct(cfg.top1)} | {_pct(cfg.top5)} |"
        )
    return "\n".join(rows)
