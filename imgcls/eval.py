"""Evaluate a model: ``python -m imgcls.eval --model X --pretrained_model P [--data_dir D]`` (the seed's eval.py).

Top-1 / top-5 on the val list with the model's own preprocessing (resize the short side, center crop, mean/std from
the model cfg; a checkpoint of ours brings the sizes it was trained with).
"""

from __future__ import annotations

import argparse

import torch

from imgcls import checkpoint as ckpt
from imgcls.cli_args import add_model_args, add_precision_args, fail, positive_int
from imgcls.cli_setup import loader_for, prepare
from imgcls.data.read_report import printable, warned_summary
from imgcls.data.transforms import AugConfig
from imgcls.engine import evaluate, make_precision


def get_args_parser() -> argparse.ArgumentParser:
    """The shared model/data/preprocessing flags, precision and the eval batch (alias ``--test_batch_size``)."""
    p = argparse.ArgumentParser("imgcls.eval", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(p)
    add_precision_args(p)
    p.add_argument("--batch_size", "--test_batch_size", dest="batch_size", type=positive_int, default=32)
    return p


def load_for_inference(args: argparse.Namespace, cfg, num_classes: int, device: torch.device) -> torch.nn.Module:
    """Build the model and load ``--pretrained_model`` strictly (every tensor must fit)."""
    from imgcls.models import create_model

    if not args.pretrained_model:
        fail("--pretrained_model is required (a checkpoint dir, model.pt, .pt/.pth or a Paddle tar/folder)")
    model = create_model(cfg.name, num_classes=num_classes, fused=args.fused)
    try:
        weights = ckpt.read_weights(args.pretrained_model, cfg.name)
        report = ckpt.load_matching(model, weights)
    except (OSError, ValueError, NotImplementedError) as e:
        fail(f"cannot load --pretrained_model {args.pretrained_model}: {e}")
    if report.shape_mismatch or report.missing:
        fail(
            f"{args.pretrained_model} does not fit {cfg.name} with {num_classes} classes: " + "; ".join(report.lines())
        )
    return model.to(device).eval()


def main(args: argparse.Namespace) -> dict[str, float]:
    """Evaluate; returns {'top1', 'top5', 'loss', 'images'}."""
    spec, cfg, device = prepare(args, train=False)
    if not spec.val:
        fail(f"{spec.root}: the val list is empty")
    try:
        precision = make_precision(args.amp, args.amp_dtype, args.channels_last, device)
    except ValueError as e:
        fail(str(e))
    model = load_for_inference(args, cfg, spec.num_classes, device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = loader_for(
        args, spec.val, False, AugConfig(interpolation=args.interpolation), args.batch_size, device=device
    )
    stats = evaluate(model, loader, device, desc="eval", precision=precision)
    for path, reason in loader.skipped:
        print(f"skipped {printable(path)}: {printable(reason)}")
    if loader.warned:
        print(warned_summary(loader.warned))
    print(
        f"{cfg.name} on {spec.root} ({stats.images} images, {args.crop_size}px crop of short side "
        f"{args.resize_short_size}): top-1 {stats.top1:.2f}% top-5 {stats.top5:.2f}% loss {stats.loss:.4f}"
    )
    return {"top1": stats.top1, "top5": stats.top5, "loss": stats.loss, "images": stats.images}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
