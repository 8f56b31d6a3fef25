"""The batch loader: epoch order, per-sample seeds, a background reader thread and a bounded prefetch queue.

Everything random is a function of (random_seed, epoch, sample index) (``imgcls.randomness``): the epoch's order
is ``epoch_permutation(n, random_seed, epoch)``, and each sample's augmentation seed is ``sample_seed(random_seed,
epoch, index)`` with ``index`` its position in ``samples``. So batches are identical whatever ``num_workers`` is,
and a distributed run (``rank`` / ``world_size``) sees the same augmentations as a single process.

One producer thread asks the reader for whole batches (the reader spreads the images of a batch over
``num_workers`` threads; OpenCV and the C++ reader release the GIL) and keeps up to ``prefetch`` batches ready.
Where the batch is normalized depends only on the device: on the CPU the reader normalizes each image in its own
pass (``read_batch_normalized``); with a CUDA ``device`` it fills pinned uint8 NHWC batches (``read_batch``) and the
consumer copies each to the GPU and normalizes it there (``preprocess.normalize``): a quarter of the bytes over
PCIe, no CPU pass.
A bad image is dropped from its batch and reported in ``loader.skipped``; one decoded in spite of damage (libjpeg
warnings) is kept and listed in ``loader.warned``; any other exception in the producer is re-raised in the
consumer. Leaving a loop early stops the thread (the iterator's ``close``).

Where the loader is in its epoch is one notion, ``EpochPosition(epoch, batch)``: the epoch, and how many of this
rank's planned batches of it the consumer has been handed (a planned batch whose images all failed counts as handed
once a later one is, or the epoch ends). The plan of an epoch is a pure function of (random_seed, epoch, rank,
world_size), so ``set_epoch(epoch, start_batch=k)`` continues an epoch exactly where a position left it: the same
remaining samples with the same augmentations. Mid-epoch checkpoints store ``loader.position``; any data source
that feeds the loader keeps the same contract (batch k of an epoch is always the same samples).
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from imgcls.randomness import epoch_permutation, sample_seed

from .datasets import Sample
from .image_header import DEFAULT_MAX_PIXELS
from .preprocess import PreprocessSpec, normalize
from .readers import make_reader
from .readers.encoded import ImageSource, source_name

Batch = tuple[torch.Tensor, torch.Tensor]
PlannedBatch = tuple[int, np.ndarray]  # (its number in the epoch's plan, the sample indices it reads)
POLL_SECONDS = 0.1  # how often a blocked producer or consumer checks whether it should stop


class NoReadableImageError(RuntimeError):
    """Every image of the dataset failed to load (a rank needed a stand-in batch and found none)."""


@dataclass(frozen=True)
class EpochPosition:
    """Where a loader stands: ``epoch``, and ``batch``, how many of this rank's planned batches of that epoch the
    consumer has been handed (the number of the next planned batch it will get)."""

    epoch: int
    batch: int = 0

    def __post_init__(self) -> None:
        if self.epoch < 0 or self.batch < 0:
            raise ValueError(f"epoch and batch must be >= 0, got {self.epoch}, {self.batch}")


class _End:
    """Queue marker: the epoch is over; ``last`` is the number of its last planned batch (None if it had none)."""

    def __init__(self, last: int | None):
        self.last = last


class _Failure:
    """Queue marker: the producer raised ``error``."""

    def __init__(self, error: BaseException):
        self.error = error


def epoch_order(
    num_samples: int, random_seed: int, epoch: int, shuffle: bool, rank: int, world_size: int
) -> np.ndarray:
    """Sample indices this rank reads this epoch: every world_size-th of the (shuffled) order, equal counts.

    The tail that does not divide by world_size is dropped (a fresh tail each epoch when shuffled), so every rank
    runs the same number of steps and no sample is read twice.
    """
    if shuffle:
        order = epoch_permutation(num_samples, random_seed, epoch)
    else:
        order = np.arange(num_samples)
    usable = num_samples - num_samples % world_size
    return order[:usable][rank::world_size]


def _produce(load: Callable, batches: Iterable[PlannedBatch], out: queue.Queue, stop: threading.Event) -> None:
    """Thread body: load each planned batch and hand it over with its number, until done or told to stop."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    try:
        number = None
        for number, indices in batches:
            if stop.is_set():
                return
            batch = load(indices)
            if batch is not None and not put((number, batch)):
                return
        put(_End(number))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
        put(_Failure(e))


class EpochIterator:
    """One pass over the loader's planned batches, fed by a background thread; ``close()`` stops it early.
    ``handed(n)`` is called by the consumer with the number of each planned batch as it is handed out, and with the
    last planned number when the pass ends (trailing batches that failed whole count as handed)."""

    def __init__(
        self,
        load: Callable,
        batches: Iterable[PlannedBatch],
        prefetch: int,
        handed: Callable[[int], None],
        finish: Callable | None = None,
    ):
        self._finish = finish  # run by the consumer on each batch (the GPU step, on the consumer's stream)
        self._handed = handed
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._done = False
        # The thread gets no reference to self, so dropping the iterator (a loop left early) closes it.
        self._thread = threading.Thread(
            target=_produce, args=(load, batches, self._queue, self._stop), name="imgcls-loader", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> Batch:
        if self._done:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("imgcls loader thread exited without finishing the epoch") from None
        if isinstance(item, _End):
            self.close()
            if item.last is not None:
                self._handed(item.last)
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        number, batch = item
        self._handed(number)
        return batch if self._finish is None else self._finish(batch)

    def close(self) -> None:
        """Stop the producer and wait for it (it checks every POLL_SECONDS and after each batch)."""
        self._done = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __del__(self) -> None:
        if not self._done:
            self.close()


class Loader:
    """Iterable of ``(images float32 [N, 3, size, size] normalized, labels int64 [N])`` batches for one epoch;
    shuffle and drop_last default to ``train``.

    ``preprocess`` says how (its train transform when ``train``, else its eval transform). ``device``: where the
    batches are used; a CUDA device gets them already there, normalized there from pinned uint8 batches
    (``normalize_on_device`` defaults to that; True on a CPU device takes the same path without pinning, which is
    how the CUDA path is tested without a GPU). ``apply_exif`` rotates images by their EXIF orientation tag.
    ``max_pixels``: images whose header claims more pixels are skipped, never decoded (image_header.py).
    ``dct_scaling``: where the native reader may decode at a reduced DCT scale (``readers.make_reader``).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        preprocess: PreprocessSpec,
        train: bool,
        batch_size: int,
        random_seed: int,
        num_workers: int,
        prefetch: int,
        reader: str = "auto",
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
        apply_exif: bool = False,
        normalize_on_device: bool | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        dct_scaling: str = "train",
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.paths = [s.path for s in samples]
        self.labels = np.array([s.label for s in samples], dtype=np.int64)
        self.preprocess, self.train, self.batch_size = preprocess, train, batch_size
        self.size = preprocess.input_size
        self.random_seed, self.num_workers, self.prefetch = random_seed, num_workers, prefetch
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.pin_memory = self.device.type == "cuda"
        self.normalize_on_device = self.pin_memory if normalize_on_device is None else normalize_on_device
        self.reader = make_reader(
            reader,
            preprocess,
            train=train,
            num_threads=max(1, num_workers),
            apply_exif=apply_exif,
            max_pixels=max_pixels,
            dct_scaling=dct_scaling,
        )
        self._scale, self._shift = preprocess.scale_shift()
        self._device_affine: tuple[torch.Tensor, torch.Tensor] | None = None  # scale, shift on self.device
        self.epoch, self.start_batch = 0, 0
        self._next_batch = 0  # the consumer's position in the current pass
        self.skipped: list[tuple[str, str]] = []
        self.warned: list[tuple[str, str]] = []  # this epoch's (path, warning): decoded in spite of damage
        self._current: weakref.ref | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch whose order and augmentations the next iteration uses, and its first planned batch:
        ``start_batch`` > 0 continues the epoch where a saved ``position`` left it."""
        if not 0 <= start_batch <= len(self.batches_of(epoch)):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self.batches_of(epoch))} of epoch {epoch}")
        self.epoch, self.start_batch, self._next_batch = epoch, start_batch, start_batch

    @property
    def position(self) -> EpochPosition:
        """Where the consumer is in the current epoch (what a mid-epoch checkpoint saves)."""
        return EpochPosition(self.epoch, self._next_batch)

    def _handed(self, number: int) -> None:
        self._next_batch = number + 1

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's sample indices for ``epoch`` (default: the current one), in reading order."""
        epoch = self.epoch if epoch is None else epoch
        return epoch_order(len(self.paths), self.random_seed, epoch, self.shuffle, self.rank, self.world_size)

    def batches_of(self, epoch: int) -> list[np.ndarray]:
        """The planned batches of ``epoch`` on this rank: batch k is always the same samples."""
        order = self.indices(epoch)
        cut = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        return [order[i : i + self.batch_size] for i in range(0, cut, self.batch_size)]

    def batches(self) -> list[np.ndarray]:
        """The current epoch's planned batches from ``start_batch`` on (what the next iteration reads)."""
        return self.batches_of(self.epoch)[self.start_batch :]

    def __len__(self) -> int:
        """Planned batches of a whole epoch (``remaining()`` after a mid-epoch ``set_epoch``)."""
        count = len(self.indices())
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def remaining(self) -> int:
        """Planned batches the next iteration reads (the epoch's, from ``start_batch`` on)."""
        return len(self) - self.start_batch

    def load_batch(self, indices: np.ndarray, epoch: int) -> Batch | None:
        """Read one batch; failed images are dropped and recorded.

        When every image failed: None on one process (the batch is skipped); with several ranks, a stand-in batch of
        one readable image, because DistributedDataParallel hangs if one rank takes a step fewer than the others.
        """
        batch = self._read(indices, epoch)
        if batch is None and self.world_size > 1:
            batch = self._stand_in(int(indices[-1]), epoch)
        return batch

    def _stand_in(self, after: int, epoch: int) -> Batch:
        """The first readable sample after index ``after`` (wrapping around), as a batch of one."""
        for step in range(1, len(self.paths) + 1):
            batch = self._read(np.array([(after + step) % len(self.paths)]), epoch)
            if batch is not None:
                return batch
        raise NoReadableImageError(f"rank {self.rank}: no image of the dataset could be read")

    def _read(self, indices: np.ndarray, epoch: int) -> Batch | None:
        """One batch of the samples at ``indices`` (see ``read_sources``)."""
        paths = [self.paths[i] for i in indices]
        seeds = [sample_seed(self.random_seed, epoch, int(i)) for i in indices]
        return self.read_sources(paths, seeds, self.labels[indices])

    def read_sources(self, sources: list[ImageSource], seeds: list[int], labels: np.ndarray) -> Batch | None:
        """One batch from the reader (``sources``: file paths or in-memory ``Encoded`` images, one seed and label
        each): uint8 NHWC (pinned for CUDA) to be normalized on the device, else normalized float32 NCHW. Failed
        images are dropped and recorded in ``skipped``; None when none is left."""
        n, size = len(sources), self.size
        if self.normalize_on_device:
            # A fresh pinned tensor per batch: torch's pinned-memory cache reuses it only after its GPU copy is done.
            images = torch.empty((n, size, size, 3), dtype=torch.uint8, pin_memory=self.pin_memory)
            errors = self.reader.read_batch(sources, seeds, images.numpy(), self.warned)
        else:
            images = torch.empty((n, 3, size, size), dtype=torch.float32)
            errors = self.reader.read_batch_normalized(
                sources, seeds, images.numpy(), self._scale.numpy(), self._shift.numpy(), self.warned
            )
        self.skipped.extend((source_name(src), err) for src, err in zip(sources, errors) if err is not None)
        keep = [i for i, err in enumerate(errors) if err is None]
        if not keep:
            return None
        labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)[keep])
        if len(keep) < n:
            images = images[keep]
        if self.pin_memory:
            images, labels = (t if t.is_pinned() else t.pin_memory() for t in (images, labels))
        return images, labels

    def to_device(self, batch: Batch) -> Batch:
        """The consumer's step of the device path: uint8 batch -> normalized float32 NCHW on ``device``."""
        if self._device_affine is None:
            self._device_affine = (self._scale.to(self.device), self._shift.to(self.device))
        pixels, labels = batch
        pixels = pixels.to(self.device, non_blocking=True)
        return normalize(pixels, *self._device_affine), labels.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Batch]:
        """One pass over the current epoch's planned batches from ``start_batch`` on. A pass that ends sets the
        position to the end of the epoch; the next pass starts at ``start_batch`` again unless ``set_epoch``."""
        self.close_iterator()
        self.skipped, self.warned = [], []
        self._next_batch = self.start_batch
        planned = enumerate(self.batches(), start=self.start_batch)
        load = partial(self.load_batch, epoch=self.epoch)  # a set_epoch() during the pass changes nothing
        finish = self.to_device if self.normalize_on_device else None
        if self.num_workers == 0:  # synchronous: handy for debugging, same batches
            return self._iterate_inline(planned, load, finish)
        it = EpochIterator(load, planned, self.prefetch, self._handed, finish)
        self._current = weakref.ref(it)
        return it

    def _iterate_inline(
        self, planned: Iterable[PlannedBatch], load: Callable, finish: Callable | None
    ) -> Iterator[Batch]:
        """The synchronous pass (``num_workers == 0``): same batches, same positions."""
        number = None
        for number, indices in planned:
            batch = load(indices)
            if batch is not None:
                self._handed(number)
                yield batch if finish is None else finish(batch)
        if number is not None:
            self._handed(number)

    def close_iterator(self) -> None:
        """Stop a previous epoch's thread if its iterator is still alive."""
        it = self._current() if self._current is not None else None
        if it is not None:
            it.close()
        self._current = None

    def close(self) -> None:
        """Stop the background thread and the reader's pool."""
        self.close_iterator()
        self.reader.close()
