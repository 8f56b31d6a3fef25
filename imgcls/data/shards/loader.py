"""The loader fed by tar shards: ``imgcls.data.loader.Loader`` with an epoch plan that streams shards.

Batch k of an epoch is samples [k * batch_size, (k + 1) * batch_size) of this rank's stream for that epoch
(``order.py``: shard order, rank split, shuffle buffer), so the loader's ``EpochPosition`` means the same as for
files and ``set_epoch(epoch, start_batch)`` continues an epoch exactly (the skipped samples are read, not decoded).

Epoch length. Train: every rank runs ``(total // world_size) // batch_size`` steps, ``total`` being the shard
index's count (or ``--total_images``); a rank whose share of the epoch holds more samples stops there (cut), one
whose share holds fewer (unequal shard sizes, unreadable shards) reads its shards again (pads with repeats), so no
rank takes a step fewer and DistributedDataParallel never hangs. Val: each rank reads its share once, all of it.
A shard that cannot be read is one warning line naming it; the epoch goes on with the other shards, and fails with
one line (``NoReadableImageError``) when none of this rank's shards gives a sample.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from itertools import chain, islice

import numpy as np

from imgcls.randomness import sample_seeds

from ..loader import Batch, EpochIterator, Loader, NoReadableImageError
from ..readers.encoded import Encoded
from .order import (
    DEFAULT_SHUFFLE_BUFFER,
    buffer_seed,
    every_nth,
    rank_sample_count,
    rank_shards,
    shard_order,
    shuffle_buffer,
)
from .shard_set import ShardSet
from .tar_stream import ShardReadError, ShardSample, stream_shard


def warn_shard(location: str, message: str) -> None:
    """The default report of a shard that cannot be read: one line on stderr."""
    print(f"warning: shard {location}: {message}; going on with the other shards", file=sys.stderr, flush=True)


class ShardLoader(Loader):
    """A ``Loader`` over ``shards`` (same readers, batches, positions and device handling; see the module
    docstring for the epoch's order and length). ``shuffle_buffer``: samples held for shuffling (train).
    ``report(location, message)`` is called once per epoch for each shard that cannot be read."""

    def __init__(
        self,
        shards: ShardSet,
        *,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        report: Callable[[str, str], None] = warn_shard,
        **loader_args,
    ):
        super().__init__([], **loader_args)
        self.shards, self.shuffle_buffer, self.report = shards, shuffle_buffer, report
        self.shard_errors: list[tuple[str, str]] = []  # (shard, what went wrong), this loader's whole life
        self._reported: set[tuple[int, str]] = set()
        self._stand_in_sample: tuple[Encoded, int, int] | None = None
        if self.drop_last:  # train: the same count on every rank, whatever the epoch's split
            self.per_rank = shards.total // self.world_size
        else:
            if shards.counts is None:
                raise ValueError("reading shards for evaluation needs their sample counts (an index.json)")
            order = shard_order(len(shards.locations), self.random_seed, 0, False)
            self.per_rank = rank_sample_count(shards.counts, order, self.rank, self.world_size)

    def __len__(self) -> int:
        per_rank, size = self.per_rank, self.batch_size
        return per_rank // size if self.drop_last else -(-per_rank // size)

    def batches_of(self, epoch: int) -> ShardPlan:
        """The planned batches of ``epoch`` on this rank, streamed: batch k is always the same samples."""
        return ShardPlan(self, epoch)

    def samples_of(self, epoch: int) -> Iterator[ShardSample]:
        """This rank's ``per_rank`` samples of ``epoch``, in reading order (train: passes repeat if one is short)."""
        given, repeat = 0, 0
        while given < self.per_rank:
            got = 0
            for item in islice(self._pass(epoch, repeat), self.per_rank - given):
                got += 1
                yield item
            given += got
            if got == 0:
                raise NoReadableImageError(
                    f"rank {self.rank}: none of its {len(self.shards.locations)} shards gave a readable sample in "
                    f"epoch {epoch + 1} (see the shard warnings)"
                )
            if not self.drop_last:
                return
            repeat += 1

    def _pass(self, epoch: int, repeat: int) -> Iterator[ShardSample]:
        """One pass of this rank over its share of the epoch's shards, through the shuffle buffer."""
        order = shard_order(len(self.shards.locations), self.random_seed, epoch, self.shuffle)
        own, shared = rank_shards(order, self.rank, self.world_size)
        items = chain(
            chain.from_iterable(self._shard(i, epoch) for i in own),
            every_nth(chain.from_iterable(self._shard(i, epoch) for i in shared), self.rank, self.world_size),
        )
        size = self.shuffle_buffer if self.shuffle else 0
        return shuffle_buffer(items, size, buffer_seed(self.random_seed, epoch, self.rank, repeat))

    def _shard(self, index: int, epoch: int) -> Iterator[ShardSample]:
        """The samples of one shard; a shard that breaks off gives what it had and is reported, and is not tried
        again in the same epoch (a later pass that pads the epoch skips it)."""
        location = self.shards.locations[index]
        if (epoch, location) in self._reported:
            return
        try:
            yield from stream_shard(location)
        except ShardReadError as e:
            if (epoch, location) not in self._reported:
                self._reported.add((epoch, location))
                self.shard_errors.append((location, str(e)))
                self.report(location, str(e))

    def load_batch(self, items: list[ShardSample], epoch: int) -> Batch | None:
        """Decode one batch of shard samples from memory; failed images are dropped and recorded as for files.
        With several ranks, a batch whose images all failed is replaced by a stand-in of one readable sample."""
        sources = [Encoded(s.name, s.data) for s in items]
        seeds = sample_seeds(self.random_seed, epoch, [s.key_hash for s in items]).tolist()
        labels = np.array([s.label for s in items], dtype=np.int64)
        before = len(self.skipped)
        batch = self.read_sources(sources, seeds, labels)
        if batch is not None and self._stand_in_sample is None:
            failed = {name for name, _ in self.skipped[before:]}
            first = next(i for i, src in enumerate(sources) if src.name not in failed)
            self._stand_in_sample = (sources[first], seeds[first], int(labels[first]))
        if batch is None and self.world_size > 1:
            if self._stand_in_sample is None:
                raise NoReadableImageError(f"rank {self.rank}: no image of its shards could be read yet")
            source, seed, label = self._stand_in_sample
            batch = self.read_sources([source], [seed], np.array([label], dtype=np.int64))
        return batch


class ShardPlan:
    """The planned batches of one epoch of a ``ShardLoader`` from ``start`` on: a length, a slice from a later
    start, and an iterator that streams the shards."""

    def __init__(self, loader: ShardLoader, epoch: int, start: int = 0):
        self.loader, self.epoch, self.start = loader, epoch, start

    def __len__(self) -> int:
        return len(self.loader) - self.start

    def __getitem__(self, part: slice) -> ShardPlan:
        if not isinstance(part, slice) or part.stop is not None or part.step is not None:
            raise TypeError("a shard plan is sliced from a start batch only: plan[k:]")
        return ShardPlan(self.loader, self.epoch, self.start + (part.start or 0))

    def __iter__(self) -> Iterator[list[ShardSample]]:
        """The batches, read from the shards on a thread of their own (ahead by the loader's prefetch), so that
        reading the tar overlaps the decoding of the batches before it."""
        return EpochIterator(lambda batch: batch, enumerate(self._batches()), self.loader.prefetch, lambda _: None)

    def _batches(self) -> Iterator[list[ShardSample]]:
        size, count = self.loader.batch_size, len(self)
        items = self.loader.samples_of(self.epoch)
        for _ in islice(items, self.start * size):  # read, not decoded
            pass
        for _ in range(count):
            batch = list(islice(items, size))
            if not batch:
                return
            yield batch
