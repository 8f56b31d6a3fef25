"""Evaluate a model: ``python -m imgcls.eval --model X --pretrained_model P [--data_dir D]`` (Paddle's eval.py).

Top-1 / top-5 on the val list with the model's own preprocessing (resize the short side, center crop, mean/std from
the model cfg; a checkpoint of ours brings the preprocessing it was trained with). ``--report DIR`` also writes the
per-class numbers, the confusion matrix and the most confident mistakes (``imgcls.report``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from imgcls import checkpoint as ckpt
from imgcls.cli.data import make_loader, resolve_data
from imgcls.cli.flags import (
    ArgumentParser,
    add_model_args,
    add_precision_args,
    fail,
    os_error_text,
    pick_device,
    positive_int,
    run_command,
)
from imgcls.cli.layering import build_run_config, model_cfg
from imgcls.config import RunConfig
from imgcls.data.datasets import DatasetSpec
from imgcls.data.loader import Loader
from imgcls.data.read_report import printable, warned_summary
from imgcls.engine import evaluate, make_precision
from imgcls.report import PredictionStats, ReportInfo, denormalizer, write_report


def get_args_parser() -> argparse.ArgumentParser:
    """The shared model/data/preprocessing flags, precision and the eval batch (alias ``--test_batch_size``)."""
    p = ArgumentParser("imgcls.eval", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(p)
    add_precision_args(p)
    p.add_argument(
        "--batch_size", "--test_batch_size", dest="batch_size", type=positive_int, default=32, help="images per step"
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write a report into DIR: per_class.csv, mistakes.csv, summary.md, confusion.png and mistakes.png "
        "(the figures need matplotlib: pip install imgcls[plots])",
    )
    return p


def report_sink(stats: PredictionStats, loader: Loader) -> Callable:
    """An ``evaluate`` sink that feeds ``stats`` each batch with its samples' indices in the val list: the batch
    just handed is planned batch ``position.batch - 1``, less the images the loader skipped."""
    plan = loader.batches_of(loader.epoch)

    def sink(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> None:
        skipped = {path for path, _ in loader.skipped}
        indices = [int(i) for i in plan[loader.position.batch - 1] if loader.paths[i] not in skipped]
        stats.update(logits, labels, images, indices if len(indices) == labels.shape[0] else None)

    return sink


def write_eval_report(directory: str, stats: PredictionStats, config: RunConfig, dataset: DatasetSpec) -> None:
    """The report files of ``--report``; an unwritable folder is a one-line error."""
    info = ReportInfo(config.model, config.pretrained_model or "", str(dataset.root), config.preprocess)
    try:
        written = write_report(
            directory, stats, names=dataset.label_names, info=info, paths=[s.path for s in dataset.val]
        )
    except OSError as e:
        fail(f"cannot write the report into {directory}: {os_error_text(e)}")
    print(f"report: {Path(directory) / 'summary.md'} ({len(written)} files)")


def saved_run_of(path: str | None) -> ckpt.SavedRun | None:
    """What the checkpoint at ``path`` says of its run (its preprocessing, classes); None for other files.
    An unreadable record is a one-line error: evaluating with guessed preprocessing would give a wrong answer."""
    if not path:
        return None
    try:
        return ckpt.read_run_info(path)
    except (OSError, ValueError) as e:
        fail(f"{e}: the preprocessing {path} was trained with cannot be read, and is not guessed")


def load_for_inference(config: RunConfig, device: torch.device) -> torch.nn.Module:
    """Build the model and load ``--pretrained_model`` strictly (every tensor must fit), in eval mode."""
    from imgcls.models import create_model

    path = config.pretrained_model
    if not path:
        fail("--pretrained_model is required (a checkpoint dir, model.pt, .pt/.pth or a Paddle tar/folder)")
    model = create_model(config.model, num_classes=config.num_classes, fused=config.fused)
    try:
        weights = ckpt.read_weights(path, config.model)
        report = ckpt.load_matching(model, weights)
    except (OSError, ValueError, NotImplementedError) as e:
        fail(f"cannot load --pretrained_model {path}: {e}")
    if report.shape_mismatch or report.missing:
        problems = "; ".join(report.lines())
        fail(f"{path} does not fit {config.model} with {config.num_classes} classes: {problems}")
    if config.precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device).eval()


def main(args: argparse.Namespace) -> dict[str, float]:
    """Evaluate; returns {'top1', 'top5', 'loss', 'images'}."""
    model_cfg(args.model)  # a bad model name fails before any data work
    dataset = resolve_data(args.data_dir, args.class_dim)
    if not dataset.num_val:
        fail(f"{dataset.root}: the val list is empty")
    if args.report and dataset.val_shards is not None:
        fail("--report needs the val images as files (list files or class folders), not tar shards")
    if args.report and Path(args.report).exists() and not Path(args.report).is_dir():
        fail(f"--report {args.report}: a file is in the way; give a folder")
    saved = saved_run_of(args.pretrained_model)
    config = build_run_config(args, train=False, num_classes=dataset.num_classes, dataset=dataset, saved=saved)
    device = pick_device(args.use_gpu)
    try:
        precision = make_precision(config.precision, device)
    except ValueError as e:
        fail(str(e))
    model = load_for_inference(config, device)
    val = dataset.val_shards if dataset.val_shards is not None else dataset.val  # a data dir of shards: val-*.tar
    loader = make_loader(config, val, train=False, batch_size=config.batch_size, device=device)
    report = PredictionStats(config.num_classes, to_pixels=denormalizer(config.preprocess)) if args.report else None
    sink = report_sink(report, loader) if report is not None else None
    stats = evaluate(model, loader, device, desc="eval", precision=precision, sink=sink)
    for path, reason in loader.skipped:
        print(f"skipped {printable(path)}: {printable(reason)}")
    if loader.warned:
        print(warned_summary(loader.warned))
    if stats.images == 0:
        fail(f"none of the {dataset.num_val} val images of {dataset.root} could be read (see the 'skipped' lines)")
    pre = config.preprocess
    print(
        f"{config.model} on {dataset.root} ({stats.images} images, {pre.input_size}px crop of short side "
        f"{pre.resize_short}): top-1 {stats.top1:.2f}% top-5 {stats.top5:.2f}% loss {stats.loss:.4f}"
    )
    if report is not None:
        write_eval_report(args.report, report, config, dataset)
    return {"top1": stats.top1, "top5": stats.top5, "loss": stats.loss, "images": stats.images}


if __name__ == "__main__":
    run_command(main, get_args_parser(), "")
