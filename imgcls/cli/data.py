"""The data a run config asks for: the dataset (one-line errors) and its loaders."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from imgcls import distributed as dist
from imgcls.cli.flags import MAX_PREFETCH_BATCHES, MIN_PREFETCH_BATCHES, fail, warn
from imgcls.config import RunConfig
from imgcls.data import DataError, DatasetSpec, Loader, Sample, resolve_dataset
from imgcls.data.read_report import printable
from imgcls.data.shards import ShardLoader, ShardSet, shard_dataset


def resolve_data(
    data_dir: str | None,
    class_dim: int | None = None,
    total_images: int | None = None,
    train_shards: str | None = None,
    val_shards: str | None = None,
) -> DatasetSpec:
    """The dataset of ``--data_dir`` (or ./data/ILSVRC2012/, or the built-in set), or the tar shards of
    ``--train_shards`` / ``--val_shards`` or of ``--data_dir``'s train-*.tar and val-*.tar; a one-line error and
    exit 2 when it cannot be used or disagrees with ``--class_dim`` / ``--total_images``; one warning line naming
    the files of its class folders that are left out."""
    try:
        dataset = shard_dataset(data_dir, train_shards, val_shards, class_dim, total_images)
        if dataset is None:
            dataset = resolve_dataset(data_dir, class_dim, total_images, log=dist.print0)
    except DataError as e:
        fail(str(e))
    if dataset.left_out:
        kinds = Counter(Path(p).suffix.lower() or "(no extension)" for p in dataset.left_out)
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        warn(
            f"{dataset.root}: {len(dataset.left_out)} files in the class folders are not images by their extension "
            f"and are left out ({counts}; e.g. {printable(dataset.left_out[0])})"
        )
    return dataset


def label_ranges(ranges: Sequence[tuple[int, int]], shown: int = 4) -> str:
    """Ranges of labels as text: '3-69, 72' (the first ``shown`` ranges, then '...')."""
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:shown]]
    return ", ".join(text) + (", ..." if len(ranges) > shown else "")


def unused_label_ranges(used: set[int], num_classes: int) -> list[tuple[int, int]]:
    """The ranges of 0..num_classes-1 that ``used`` leaves out, in order (work: the used labels, not the classes)."""
    ranges, start = [], 0
    for label in sorted(used) + [num_classes]:
        if label > start:
            ranges.append((start, label - 1))
        start = label + 1
    return ranges


def warn_sparse_labels(dataset: DatasetSpec) -> None:
    """One warning line when some class in 0..num_classes-1 has no train image: the class count is the largest
    label + 1, so one mistyped label (70 for 7) silently makes a model of 71 classes, most never seen."""
    if dataset.train_shards is not None:  # labels are only known once the shards are read
        return
    missing = unused_label_ranges({s.label for s in dataset.train}, dataset.num_classes)
    if missing:
        count = sum(b - a + 1 for a, b in missing)
        warn(
            f"{count} of the {dataset.num_classes} classes have no train image (labels "
            f"{label_ranges(missing)}); the class count comes from the largest label, {dataset.num_classes - 1}: "
            "is a label mistyped?"
        )


def prefetch_batches(buf_images: int, batch_size: int) -> int:
    """--reader_buf_size (images, as Paddle's) -> whole batches the loader keeps ready, clamped to 2..16."""
    return min(MAX_PREFETCH_BATCHES, max(MIN_PREFETCH_BATCHES, math.ceil(buf_images / batch_size)))


def make_loader(
    config: RunConfig,
    samples: Sequence[Sample] | ShardSet,
    *,
    train: bool,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> Loader:
    """A loader over ``samples`` (a list, or a ``ShardSet`` of tar shards) with the config's preprocessing and reader;
    ``rank``/``world_size`` give this process its part (``batch_size`` per rank). On a CUDA ``device`` the batches
    arrive there, normalized."""
    read = config.read
    args = dict(
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
        dct_scaling=read.dct_scaling,
    )
    if isinstance(samples, ShardSet):
        return ShardLoader(samples, shuffle_buffer=read.shuffle_buffer, **args)
    return Loader(samples, **args)


def train_loaders(
    config: RunConfig, dataset: DatasetSpec, rank: int = 0, world_size: int = 1, device: torch.device | None = None
) -> tuple[Loader, Loader]:
    """(train loader, val loader) for a training run; both batch sizes are global (all ranks together).

    Train: each rank reads every world_size-th sample of the epoch's order, batch_size / world_size at a time.
    Val: each rank evaluates every world_size-th image (all of them are read once; the counts are summed).
    """
    if not dataset.num_val:
        fail(f"{dataset.root}: the val list is empty; training reports val accuracy every epoch")
    if dataset.num_train < config.batch_size:
        fail(f"--batch_size {config.batch_size} is larger than the {dataset.num_train} train images")
    try:
        per_rank = dist.per_rank_batch(config.batch_size, world_size)
    except ValueError as e:
        fail(str(e))
    shards = dataset.train_shards is not None
    train = make_loader(
        config,
        dataset.train_shards if shards else dataset.train,
        train=True,
        batch_size=per_rank,
        rank=rank,
        world_size=world_size,
        device=device,
    )
    val_batch = -(-config.train.eval_batch_size // world_size)
    if shards:  # each rank reads its own val shards (order.py's split), all of them once
        val = make_loader(
            config,
            dataset.val_shards,
            train=False,
            batch_size=val_batch,
            rank=rank,
            world_size=world_size,
            device=device,
        )
    else:
        val = make_loader(config, dataset.val[rank::world_size], train=False, batch_size=val_batch, device=device)
    return train, val
