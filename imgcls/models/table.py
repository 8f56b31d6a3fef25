"""The README's model table, generated from the registry: ``python -m imgcls.models.table``.

``--write README.md`` replaces the block between the ``model-table`` markers; the test suite checks that the
README's table is up to date.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from . import create_model, get_model_cfg, list_models

START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def count_parameters(name: str) -> int:
    """Trainable parameters of a model with 1000 classes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _pct(value: float | None) -> str:
    return f"{value:.2f}%" if value is not None else "-"


def model_table() -> str:
    """Markdown table: name, params, input / resize-short size, the seed's published top-1 / top-5."""
    rows = [
        "| Model | Params (M) | Input | Resize short | Top-1 (seed) | Top-5 (seed) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name in list_models():
        cfg = get_model_cfg(name)
        params = count_parameters(name) / 1e6
        rows.append(
            f"| {name} | {params:.2f} | {cfg.input_size} | {cfg.resize_short} | {_pct(cfg.top1)} | {_pct(cfg.top5)} |"
        )
    return "\n".join(rows)


def replace_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {START} ... {END} block found")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="README", help="update the table inside this markdown file")
    args = parser.parse_args()
    table = model_table()
    if args.write:
        path = Path(args.write)
        path.write_text(replace_table(path.read_text(), table))
        print(f"updated the model table in {path}")
    else:
        print(table)


if __name__ == "__main__":
    main()
