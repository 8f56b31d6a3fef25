"""``python -m imgcls.convert --model X --paddle PATH --out x.pt``: a Paddle checkpoint -> a PyTorch state_dict."""

from __future__ import annotations

import argparse
import sys

import torch

from ..models import canonical_name
from .paddle import convert_paddle_checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imgcls.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="zoo model name, e.g. ResNet50_vd")
    parser.add_argument("--paddle", required=True, help="<Model>_pretrained.tar or its unpacked folder")
    parser.add_argument("--out", required=True, help="where to write the state_dict (.pt)")
    parser.add_argument("--class_dim", type=int, default=None, help="classes of the checkpoint (default: read from it)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Convert and write; a bad name, path or checkpoint (missing or misshapen tensors) is one ``error:`` line, 2."""
    try:
        name = canonical_name(args.model)
        state, report = convert_paddle_checkpoint(args.paddle, name, num_classes=args.class_dim)
    except (KeyError, FileNotFoundError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
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
