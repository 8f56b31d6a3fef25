"""The loader's position in its epoch: ``EpochPosition``, ``set_epoch(epoch, start_batch)`` and ``position``.

The expected batches come from a plain re-reading of each planned batch through the reader (``load_batch``), not
from the pass under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.data.datasets import Sample, load_dataset
from imgcls.data.loader import EpochPosition

from .test_data import bad_files, collect, loader_for, small_builtin  # noqa: F401 - fixtures

EPOCH = 3


def reread(loader, epoch: int, numbers: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``numbers`` of ``epoch``'s plan, each read on its own."""
    plan = loader.batches_of(epoch)
    return [loader.load_batch(plan[k], epoch) for k in numbers]


def assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for (xa, ya), (xb, yb) in zip(got, expected):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


@pytest.mark.parametrize("workers", [0, 2])
def test_start_batch_continues_the_epoch_exactly(small_builtin: Path, workers: int) -> None:  # noqa: F811
    spec = load_dataset(small_builtin)
    loader = loader_for(spec.train, batch_size=7, num_workers=workers)
    total = len(loader)  # 60 // 7 = 8 planned batches
    assert total == 8
    for start in (0, 1, 5, total - 1, total):
        loader.set_epoch(EPOCH, start_batch=start)
        assert loader.position == EpochPosition(EPOCH, start) and loader.remaining() == total - start
        got = collect(loader)
        assert_same_batches(got, reread(loader, EPOCH, list(range(start, total))))
        assert loader.position == EpochPosition(EPOCH, total)
    loader.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_position_counts_the_batches_handed_out(small_builtin: Path, workers: int) -> None:  # noqa: F811
    spec = load_dataset(small_builtin)
    loader = loader_for(spec.train, batch_size=9, num_workers=workers, prefetch=3)
    loader.set_epoch(1, start_batch=2)
    seen = []
    for i, _ in enumerate(loader):
        # The producer runs ahead (prefetch), the position is the consumer's.
        seen.append(loader.position.batch)
        if i == 1:
            break
    assert seen == [3, 4]
    loader.close()
    # A stopped pass resumes from where the consumer was, not from where the producer got to.
    stopped = loader.position
    loader.set_epoch(stopped.epoch, stopped.batch)
    rest = collect(loader)
    assert_same_batches(rest, reread(loader, 1, list(range(4, len(loader)))))


def test_whole_epoch_equals_two_halves_with_every_augmentation(small_builtin: Path) -> None:  # noqa: F811
    from imgcls.data.transforms import AugConfig

    spec = load_dataset(small_builtin)
    aug = AugConfig(rotate=15, brightness=0.3, hue=0.1)
    straight = loader_for(spec.train, aug=aug, batch_size=8)
    straight.set_epoch(EPOCH)
    whole = collect(straight)
    first = loader_for(spec.train, aug=aug, batch_size=8)
    first.set_epoch(EPOCH)
    head = []
    for batch in first:
        head.append((batch[0].clone(), batch[1].clone()))
        if len(head) == 3:
            break
    position = first.position
    first.close()
    resumed = loader_for(spec.train, aug=aug, batch_size=8)  # a fresh process's loader
    resumed.set_epoch(position.epoch, position.batch)
    assert_same_batches(head + collect(resumed), whole)


def test_failed_batches_count_as_handed(bad_files: dict[str, str]) -> None:  # noqa: F811
    bad = [Sample(path, 0) for name, path in bad_files.items() if name != "good"]
    good = Sample(bad_files["good"], 5)
    # Plan (no shuffle, batch 2): [bad, bad] [good, bad] [bad, bad]: the first and the last fail whole.
    samples = [bad[0], bad[1], good, bad[2], bad[3], bad[0]]
    for workers in (0, 2):
        loader = loader_for(samples, batch_size=2, shuffle=False, num_workers=workers)
        positions = [loader.position.batch for _ in loader]
        assert positions == [2]  # the one readable batch is planned batch 1
        assert loader.position == EpochPosition(0, 3)  # the failed tail counts once the pass ends
        loader.close()


def test_bad_positions_are_errors(small_builtin: Path) -> None:  # noqa: F811
    spec = load_dataset(small_builtin)
    loader = loader_for(spec.train, batch_size=8)
    with pytest.raises(ValueError, match="start_batch 8 outside 0..7"):
        loader.set_epoch(0, start_batch=8)
    with pytest.raises(ValueError, match="start_batch -1"):
        loader.set_epoch(0, start_batch=-1)
    with pytest.raises(ValueError, match=">= 0"):
        EpochPosition(-1, 0)
    assert np.array_equal(loader.batches_of(2)[3], loader.indices(2)[24:32])
