"""``python -m imgcls.convert --model X --paddle PATH --out x.pt``: a Paddle checkpoint -> a PyTorch state_dict.

``--paddle`` (alias ``--pretrained_model``) may also name a model: Paddle's released weights of it (``imgcls.hub``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..cli.flags import ArgumentParser, positive_int
from ..hub import model_named_by, released_weights
from ..models import canonical_name
from .paddle import ConversionReport, convert_paddle_checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="imgcls.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="zoo model name, e.g. ResNet50_vd")
    parser.add_argument(
        "--paddle",
        "--pretrained_model",
        dest="paddle",
        required=True,
        help="<Model>_pretrained.tar or its unpacked folder, or a model name: Paddle's released weights of it",
    )
    parser.add_argument("--out", required=True, help="where to write the state_dict (.pt)")
    parser.add_argument(
        "--class_dim", type=positive_int, default=None, help="classes of the checkpoint (default: read from it)"
    )
    return parser


def convert(source: str, name: str, class_dim: int | None) -> tuple[dict, ConversionReport]:
    """Convert the checkpoint at ``source``; a ``source`` that is no existing path but a model name means that model's
    released weights (converted and checked when they were cached: the report is empty)."""
    released = None if Path(source).exists() else model_named_by(source)
    if released is None:
        return convert_paddle_checkpoint(source, name, num_classes=class_dim)
    if released != name:
        raise ValueError(f"{source} names {released}'s released weights, but --model is {name}")
    if class_dim not in (None, 1000):
        raise ValueError(f"{released}'s released weights have 1000 classes, not --class_dim {class_dim}")
    return released_weights(released), ConversionReport()


def main(args: argparse.Namespace) -> int:
    """Convert and write; a bad name, path or checkpoint (missing or misshapen tensors) is one ``error:`` line, 2."""
    try:
        name = canonical_name(args.model)
        state, report = convert(args.paddle, name, args.class_dim)
    except (KeyError, OSError, ValueError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    if report.skipped:
        print(f"skipped {len(report.skipped)} files that are not Paddle tensors: {', '.join(report.skipped[:8])}")
    if report.unused:
        print(f"ignored {len(report.unused)} Paddle tensors the model does not have: {', '.join(report.unused[:8])}")
    torch.save(state, args.out)
    print(f"wrote {len(state)} tensors of {name} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
