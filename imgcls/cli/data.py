"""The data a run config asks for: the dataset (one-line errors) and its loaders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from imgcls import distributed as dist
from imgcls.cli.flags import MAX_PREFETCH_BATCHES, MIN_PREFETCH_BATCHES, fail, warn
from imgcls.config import RunConfig
from imgcls.data import DataError, DatasetSpec, Loader, Sample, resolve_dataset


def resolve_data(data_dir: str | None, class_dim: int | None = None, total_images: int | None = None) -> DatasetSpec:
    """The dataset of ``--data_dir`` (or ./data/ILSVRC2012/, or the built-in set); a one-line error and exit 2 when
    it cannot be used or disagrees with ``--class_dim`` / ``--total_images``."""
    try:
        return resolve_dataset(data_dir, class_dim, total_images, log=dist.print0)
    except DataError as e:
        fail(str(e))


def label_ranges(labels: Sequence[int], shown: int = 4) -> str:
    """Sorted labels as ranges: '3-69, 72' (the first ``shown`` ranges, then '...')."""
    ranges: list[list[int]] = []
    for label in labels:
        if ranges and label == ranges[-1][1] + 1:
            ranges[-1][1] = label
        else:
            ranges.append([label, label])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:shown]]
    return ", ".join(text) + (", ..." if len(ranges) > shown else "")


def warn_sparse_labels(dataset: DatasetSpec) -> None:
    """One warning line when some class in 0..num_classes-1 has no train image: the class count is the largest
    label + 1, so one mistyped label (70 for 7) silently makes a model of 71 classes, most never seen."""
    used = {s.label for s in dataset.train}
    missing = [k for k in range(dataset.num_classes) if k not in used]
    if missing:
        warn(
            f"{len(missing)} of the {dataset.num_classes} classes have no train image (labels "
            f"{label_ranges(missing)}); the class count comes from the largest label, {dataset.num_classes - 1}: "
            "is a label mistyped?"
        )


def prefetch_batches(buf_images: int, batch_size: int) -> int:
    """--reader_buf_size (images, as Paddle's) -> whole batches the loader keeps ready, clamped to 2..16."""
    return min(MAX_PREFETCH_BATCHES, max(MIN_PREFETCH_BATCHES, math.ceil(buf_images / batch_size)))


def make_loader(
    config: RunConfig,
    samples: Sequence[Sample],
    *,
    train: bool,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> Loader:
    """A loader over ``samples`` with the config's preprocessing and reader; ``rank``/``world_size`` give this
    process its shard (``batch_size`` per rank). On a CUDA ``device`` the batches arrive there, normalized."""
    read = config.read
    return Loader(
        samples,
        preprocess=config.preprocess,
        train=train,
        batch_size=batch_size,
        random_seed=config.train.random_seed if config.train is not None else 0,
        num_workers=read.threads,
        prefetch=prefetch_batches(read.buffer_images, batch_size),
        reader=read.reader,
        rank=rank,
        world_size=world_size,
        device=device,
        apply_exif=read.apply_exif,
        max_pixels=read.max_pixels,
    )


def train_loaders(
    config: RunConfig, dataset: DatasetSpec, rank: int = 0, world_size: int = 1, device: torch.device | None = None
) -> tuple[Loader, Loader]:
    """(train loader, val loader) for a training run; both batch sizes are global (all ranks together).

    Train: each rank reads every world_size-th sample of the epoch's order, batch_size / world_size at a time.
    Val: each rank evaluates every world_size-th image (all of them are read once; the counts are summed).
    """
    if not dataset.val:
        fail(f"{dataset.root}: the val list is empty; training reports val accuracy every epoch")
    if len(dataset.train) < config.batch_size:
        fail(f"--batch_size {config.batch_size} is larger than the {len(dataset.train)} train images")
    try:
        per_rank = dist.per_rank_batch(config.batch_size, world_size)
    except ValueError as e:
        fail(str(e))
    train = make_loader(
        config, dataset.train, train=True, batch_size=per_rank, rank=rank, world_size=world_size, device=device
    )
    val_batch = -(-config.train.eval_batch_size // world_size)
    val = make_loader(config, dataset.val[rank::world_size], train=False, batch_size=val_batch, device=device)
    return train, val
