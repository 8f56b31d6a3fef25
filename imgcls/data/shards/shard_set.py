"""A split's shards as a dataset: their locations, their sample counts (from the index, a scan of local shards, or
``--total_images``), and the class count and names; ``shard_dataset`` resolves the CLI's shard flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..datasets import DataError, DatasetSpec
from .index import indexed_counts, scan_counts
from .pattern import ShardPatternError, expand_pattern, is_url, split_shards


@dataclass(frozen=True)
class ShardSet:
    """Shards of one split: ``locations`` (paths or URLs, in listed order), ``counts`` (samples per shard, or None
    when unknown) and ``total`` (the sum, or ``--total_images``)."""

    locations: list[str]
    counts: list[int] | None
    total: int

    def __len__(self) -> int:
        return self.total


def _counted(locations: list[str], total_images: int | None, what: str):
    """(ShardCounts or None, total) for ``locations``; DataError when neither an index, a local scan nor
    ``total_images`` gives the count."""
    counts = indexed_counts(locations)
    if counts is None and not any(is_url(loc) for loc in locations):
        missing = [loc for loc in locations if not Path(loc).is_file()]
        if missing:
            raise DataError(f"{what} shard {missing[0]} not found ({len(missing)} of {len(locations)} missing)")
        try:
            counts = scan_counts(locations)
        except (OSError, ValueError) as e:
            raise DataError(f"{what} shards: cannot count their samples without an index.json ({e})") from None
    if counts is None:
        if what == "val":
            raise DataError(f"val shards at {locations[0]} have no index.json beside them (evaluation needs counts)")
        if total_images is None:
            raise DataError(
                f"{what} shards at {locations[0]} have no index.json beside them: pass --total_images (and "
                "--class_dim), or write them with python -m imgcls.data.shards"
            )
        return None, total_images
    total = sum(counts.samples.values())
    if total_images is not None and total_images != total:
        raise DataError(
            f"--total_images {total_images} disagrees with the {what} shards: they hold {total} samples; pass "
            f"--total_images {total} (or leave it out)"
        )
    return counts, total


def shard_dataset(
    data_dir: str | None,
    train_pattern: str | None,
    val_pattern: str | None,
    class_dim: int | None = None,
    total_images: int | None = None,
) -> DatasetSpec | None:
    """The dataset of ``--train_shards`` / ``--val_shards`` (brace patterns), or of the ``train-*.tar`` and
    ``val-*.tar`` files in ``data_dir``; None when neither names shards. DataError when they cannot be used."""
    try:
        train = expand_pattern(train_pattern) if train_pattern else None
        val = expand_pattern(val_pattern) if val_pattern else None
    except ShardPatternError as e:
        raise DataError(str(e)) from None
    if data_dir is not None:
        train = train or split_shards(data_dir, "train") or None
        val = val or split_shards(data_dir, "val") or None
    if train is None and val is None:
        return None
    if train is None or val is None:
        given = "--train_shards" if val is None else "--val_shards"
        needed = "--val_shards" if val is None else "--train_shards"
        raise DataError(f"{given} needs {needed} too (or a --data_dir holding train-*.tar and val-*.tar)")
    train_counts, train_total = _counted(train, total_images, "train")
    val_counts, val_total = _counted(val, None, "val")
    largest = max(c.max_label for c in (train_counts, val_counts) if c is not None)
    num_classes = class_dim if class_dim is not None else largest + 1
    if largest >= num_classes:
        raise DataError(f"--class_dim {class_dim} disagrees with the shards: their labels reach {largest}")
    known = [c for c in (train_counts, val_counts) if c is not None]
    classes = next((c.classes for c in known if c.classes), None)
    spec = DatasetSpec(Path(data_dir or Path(train[0]).parent), [], [], num_classes, classes, builtin=False)
    spec.train_shards = ShardSet(train, _ordered(train, train_counts), train_total)
    spec.val_shards = ShardSet(val, _ordered(val, val_counts), val_total)
    return spec


def _ordered(locations: list[str], counts) -> list[int] | None:
    return None if counts is None else [counts.samples[loc] for loc in locations]
