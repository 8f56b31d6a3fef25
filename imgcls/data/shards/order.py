"""An epoch's order over shards: shard order per epoch, the split across ranks, a bounded shuffle buffer, and the
per-sample augmentation seed. Every choice is a function of (random seed, epoch, rank, world size) and the shards'
contents, never of timing, so a run repeats exactly and resumes exactly.

Split across ranks: of the epoch's (shuffled) shard order, the first ``num_shards - num_shards % world_size`` shards
go whole to the ranks in turn (rank r reads shards r, r + world_size, ...); each of the remaining shards is read by
every rank, which keeps every world_size-th of its samples (the ones at positions rank, rank + world_size, ...). So
no sample is read by two ranks and, with equal-sized shards, the ranks' counts differ by at most one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

from imgcls.randomness import MASK64, epoch_permutation, sample_seed, splitmix64

SHARD_ORDER_SALT = 0x5A4D_0001  # keeps the shard order apart from any file order of the same seed
BUFFER_SALT = 0x5A4D_0002
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3  # FNV-1a, 64-bit
DRAW_BLOCK = 1024
DEFAULT_SHUFFLE_BUFFER = 2000  # samples held for shuffling: ~220 MB of ImageNet JPEGs (110 KB each)

T = TypeVar("T")


def shard_order(num_shards: int, random_seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The shards' reading order of ``epoch``: a seeded permutation when ``shuffle``, else as listed."""
    if not shuffle:
        return list(range(num_shards))
    return [int(i) for i in epoch_permutation(num_shards, random_seed ^ SHARD_ORDER_SALT, epoch)]


def rank_shards(order: list[int], rank: int, world_size: int) -> tuple[list[int], list[int]]:
    """(shards this rank reads whole, shards every rank reads a world_size-th of), in reading order."""
    whole = len(order) - len(order) % world_size
    return order[:whole][rank::world_size], order[whole:]


def rank_sample_count(counts: list[int], order: list[int], rank: int, world_size: int) -> int:
    """How many samples this rank's share of the epoch holds, from the shards' sample counts."""
    own, shared = rank_shards(order, rank, world_size)
    shared_total = sum(counts[i] for i in shared)
    return sum(counts[i] for i in own) + max(0, -(-(shared_total - rank) // world_size))


def key_hash(shard_file: str, key: str) -> int:
    """The 64-bit hash of sample ``key`` of the shard file ``shard_file`` (its name, not its location, so the same
    shard read locally or over HTTP is augmented the same): FNV-1a over ``<shard_file>/<key>`` (UTF-8), then one
    splitmix64 step. csrc/tar_samples.cpp computes the same while it splits a shard."""
    value = FNV_OFFSET
    for byte in f"{shard_file}/{key}".encode("utf-8", "surrogateescape"):
        value = ((value ^ byte) * FNV_PRIME) & MASK64
    return splitmix64(value)


def every_nth(items: Iterable[T], start: int, step: int) -> Iterator[T]:
    """Items at positions start, start + step, ... (the rank's part of a shared shard)."""
    for i, item in enumerate(items):
        if i % step == start:
            yield item


def shuffle_buffer(items: Iterable[T], size: int, seed: int) -> Iterator[T]:
    """A bounded-memory shuffle: hold ``size`` items, hand out a random one as each new one comes in, then the rest
    in random order. ``size`` <= 1 keeps the order. The random slots are drawn in blocks (one numpy call per
    ``DRAW_BLOCK`` items, not one per item).

    The first item goes out once ``size`` are held: handing items out from a buffer still filling mixes the start
    of every epoch less, which cost accuracy on tests/test_shards_train.py's small set when tried."""
    if size <= 1:
        yield from items
        return
    rng = np.random.Generator(np.random.PCG64(seed))
    held: list[T] = []
    slots: Iterator[int] = iter(())
    for item in items:
        if len(held) < size:
            held.append(item)
            continue
        j = next(slots, None)
        if j is None:
            slots = iter(rng.integers(size, size=DRAW_BLOCK).tolist())
            j = next(slots)
        yield held[j]
        held[j] = item
    for j in rng.permutation(len(held)).tolist():
        yield held[j]


def buffer_seed(random_seed: int, epoch: int, rank: int, repeat: int) -> int:
    """The shuffle buffer's seed for one pass of a rank over its shards."""
    return sample_seed(random_seed ^ BUFFER_SALT, epoch, rank * 1_000_003 + repeat)
