"""The shard index: ``index.json`` beside the shards, written by the writer, read to know an epoch's length.

    {"format": 1, "num_classes": 10, "classes": ["circle", ...] or null,
     "splits": {"train": [{"shard": "train-000000.tar", "samples": 1000}, ...], "val": [...]}}

Shards are named relative to the index's folder (or URL). Without an index, local shards are counted by one pass
over their tar headers; HTTP shards need ``--total_images`` (train) and ``--class_dim``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from imgcls.hub.weights import atomic_write

from .pattern import is_url
from .tar_members import members
from .tar_stream import LABEL_EXTENSION, SHARD_IMAGE_EXTENSIONS, open_shard, parse_label, split_key

INDEX_FILE = "index.json"
INDEX_FORMAT = 1


@dataclass(frozen=True)
class ShardCounts:
    """What is known of some shards before reading them: samples per shard, the largest label, class names."""

    samples: dict[str, int]  # shard location -> samples
    max_label: int
    classes: list[str] | None = None


def write_index(folder: Path, splits: dict[str, list[tuple[str, int]]], num_classes: int, classes: list[str] | None):
    """Write ``folder/index.json`` atomically: ``splits[split]`` = [(shard file name, samples), ...]."""
    record = {
        "format": INDEX_FORMAT,
        "num_classes": num_classes,
        "classes": classes,
        "splits": {split: [{"shard": n, "samples": c} for n, c in shards] for split, shards in splits.items()},
    }
    atomic_write(folder / INDEX_FILE, lambda f: f.write(json.dumps(record, indent=1).encode() + b"\n"))


def parent_of(location: str) -> str:
    """The folder (or URL prefix) a shard location lives in."""
    return location.rsplit("/", 1)[0] if "/" in location else "."


def read_index(folder: str) -> dict | None:
    """The index in ``folder`` (a path or URL prefix), or None when there is none (a 404, a missing file)."""
    location = f"{folder}/{INDEX_FILE}"
    try:
        if is_url(location):
            with urllib.request.urlopen(location, timeout=30) as response:  # noqa: S310 - http(s) only
                raw = response.read()
        else:
            raw = Path(location).read_bytes()
    except (OSError, urllib.error.URLError):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        raise ValueError(f"{location}: not a JSON shard index") from None
    if not isinstance(record, dict) or record.get("format") != INDEX_FORMAT:
        raise ValueError(f"{location}: not a shard index of format {INDEX_FORMAT}")
    return record


def indexed_counts(locations: list[str]) -> ShardCounts | None:
    """The counts of ``locations`` from the index in their folder, or None when it lacks any of them."""
    folders = {parent_of(loc) for loc in locations}
    samples, max_label, classes = {}, -1, None
    for folder in folders:
        record = read_index(folder)
        if record is None:
            return None
        known = {f"{folder}/{e['shard']}": int(e["samples"]) for shards in record["splits"].values() for e in shards}
        samples.update({loc: known[loc] for loc in locations if loc in known})
        max_label = max(max_label, int(record["num_classes"]) - 1)
        classes = classes or record.get("classes")
    if len(samples) != len(locations):
        return None
    return ShardCounts(samples, max_label, classes)


def is_label(name: str) -> bool:
    return split_key(name)[1].lower() == LABEL_EXTENSION


def scan_counts(locations: list[str]) -> ShardCounts:
    """Count the samples of local shards by one pass over each."""
    samples, max_label = {}, -1
    for location in locations:
        keys: dict[str, list[bool]] = {}
        with open_shard(location) as stream:
            for name, data in members(stream, is_label):  # the images are passed over, not read into memory
                key, ext = split_key(name)
                has = keys.setdefault(key, [False, False])
                if ext.lower() in SHARD_IMAGE_EXTENSIONS:
                    has[0] = True
                elif ext.lower() == LABEL_EXTENSION:
                    has[1] = True
                    max_label = max(max_label, parse_label(data, f"{location}:{name}"))
        samples[location] = sum(1 for image, label in keys.values() if image and label)
    return ShardCounts(samples, max_label)
