"""Writing shards from the layouts imgcls reads (list files or class folders): ``python -m imgcls.data.shards``.

Each split becomes ``<split>-000000.tar``, ``<split>-000001.tar``, ... of ``shard_size`` samples (the last one
shorter), members ``<key>.<ext>`` (the image file's bytes unchanged, its extension lowercased) and ``<key>.cls`` (the
label), keys ``<split>-<running number>``; then ``index.json`` (samples per shard, classes). The train split is
written in a seeded random order, so each shard mixes the classes (a shuffle buffer cannot mix class-sorted shards);
val keeps its order. Every file appears whole (temp file + rename); the index comes last, so a folder with an index
is complete. Tar headers carry no time, owner or mode of the source, so the same data writes the same bytes.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..datasets import DatasetSpec, Sample
from .index import write_index
from .tar_stream import LABEL_EXTENSION, SHARD_IMAGE_EXTENSIONS

DEFAULT_SHARD_SIZE = 1000  # samples per shard: ~110 MB of ImageNet JPEGs, the size WebDataset suggests


def shard_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    """A tar member with fixed metadata (mode 0644, no time, no owner)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    return info, io.BytesIO(data)


def write_shard(target: Path, items: Sequence[tuple[str, str, bytes, int]]) -> None:
    """Write ``items`` ((key, extension, image bytes, label)) as the tar ``target``, atomically."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for key, ext, data, label in items:
                    tar.addfile(*shard_member(f"{key}.{ext}", data))
                    tar.addfile(*shard_member(f"{key}.{LABEL_EXTENSION}", f"{label}".encode()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def shardable(samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(samples whose extension a shard holds, the others)."""
    ok = [s for s in samples if Path(s.path).suffix.lower().lstrip(".") in SHARD_IMAGE_EXTENSIONS]
    return ok, [s for s in samples if Path(s.path).suffix.lower().lstrip(".") not in SHARD_IMAGE_EXTENSIONS]


def write_split(
    out: Path, split: str, samples: Sequence[Sample], shard_size: int, log: Callable[[str], None]
) -> list[tuple[str, int]]:
    """Write one split's shards; -> [(shard file name, samples), ...]."""
    written = []
    for number, first in enumerate(range(0, len(samples), shard_size)):
        part = samples[first : first + shard_size]
        items = []
        for i, sample in enumerate(part, first):
            data = Path(sample.path).read_bytes()
            items.append((f"{split}-{i:08d}", Path(sample.path).suffix.lower().lstrip("."), data, sample.label))
        name = f"{split}-{number:06d}.tar"
        write_shard(out / name, items)
        written.append((name, len(part)))
        log(f"wrote {out / name} ({len(part)} samples; {first + len(part)}/{len(samples)} of {split})")
    return written


def write_dataset(
    dataset: DatasetSpec, out: Path, shard_size: int = DEFAULT_SHARD_SIZE, seed: int = 0, log=print
) -> dict[str, list[tuple[str, int]]]:
    """Write both splits of ``dataset`` as shards in ``out``, then ``out/index.json``; -> the index's splits.
    Images of formats a shard does not hold (not JPEG, PNG or WebP) are left out, with one line saying how many."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, samples in (("train", dataset.train), ("val", dataset.val)):
        kept, left = shardable(samples)
        if left:
            log(f"warning: {len(left)} {split} images are not JPEG, PNG or WebP and are left out (e.g. {left[0].path})")
        if split == "train":
            kept = [kept[i] for i in np.random.default_rng(seed).permutation(len(kept))]
        splits[split] = write_split(out, split, kept, shard_size, log)
    write_index(out, splits, dataset.num_classes, dataset.label_names)
    log(f"wrote {out / 'index.json'}")
    return splits
