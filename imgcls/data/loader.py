"""The batch loader: epoch order, per-sample seeds, a background reader thread and a bounded prefetch queue.

Everything random is a function of (random_seed, epoch, sample index): the epoch's order is a permutation drawn
from (random_seed, epoch), and each sample's augmentation seed is ``transforms.sample_seed(random_seed, epoch,
index)`` with ``index`` its position in ``samples``. So batches are identical whatever ``num_workers`` is, and a
distributed run (``rank`` / ``world_size``) sees the same augmentations as a single process.

One producer thread asks the reader for whole batches (the reader spreads the images of a batch over
``num_workers`` threads; OpenCV and the C++ reader release the GIL), normalizes them and keeps up to ``prefetch``
batches ready. With a CUDA ``device`` the producer keeps pinned uint8 NHWC batches instead, and the consumer copies
each to the GPU and normalizes it there (``normalize_on_device``): a quarter of the bytes over PCIe, no CPU pass.
A bad image is dropped from its batch and reported in ``loader.skipped``; one decoded in spite of damage (libjpeg
warnings) is kept and listed in ``loader.warned``; any other exception in the producer is re-raised in the
consumer. Leaving a loop early stops the thread (the iterator's ``close``).
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import numpy as np
import torch

from .datasets import Sample
from .image_header import DEFAULT_MAX_PIXELS
from .reader import make_reader
from .transforms import AugConfig, sample_seed

Batch = tuple[torch.Tensor, torch.Tensor]
POLL_SECONDS = 0.1  # how often a blocked producer or consumer checks whether it should stop


class NoReadableImageError(RuntimeError):
    """Every image of the dataset failed to load (a rank needed a stand-in batch and found none)."""


class _End:
    """Queue marker: the epoch is over."""


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
        order = np.random.default_rng([random_seed, epoch]).permutation(num_samples)
    else:
        order = np.arange(num_samples)
    usable = num_samples - num_samples % world_size
    return order[:usable][rank::world_size]


def normalize_on_device(pixels: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW ``x * scale + shift`` (per channel) on the device ``pixels`` is on.

    Two float32 roundings, as the C++ reader's same-pass normalize (csrc normalize_to_chw), which is its CPU twin:
    tests/reader/test_loader_paths.py checks that the two agree bit for bit.
    """
    n, h, w, _ = pixels.shape
    images = torch.empty((n, 3, h, w), dtype=torch.float32, device=pixels.device)
    images.copy_(pixels.permute(0, 3, 1, 2))
    return images.mul_(scale.view(1, 3, 1, 1).to(images.device)).add_(shift.view(1, 3, 1, 1).to(images.device))


def _produce(load: Callable, batches: list[np.ndarray], out: queue.Queue, stop: threading.Event) -> None:
    """Thread body: load each batch and hand it over, until done or told to stop."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    try:
        for indices in batches:
            if stop.is_set():
                return
            batch = load(indices)
            if batch is not None and not put(batch):
                return
        put(_End())
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
        put(_Failure(e))


class EpochIterator:
    """One pass over the loader's batches, fed by a background thread; ``close()`` stops it early."""

    def __init__(self, load: Callable, batches: list[np.ndarray], prefetch: int, finish: Callable | None = None):
        self._finish = finish  # run by the consumer on each batch (the GPU step, on the consumer's stream)
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
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item if self._finish is None else self._finish(item)

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

    ``device``: where the batches are used. A CUDA device gets them already there, normalized on the GPU from
    pinned uint8 NHWC batches; otherwise (None, CPU) they are normalized on the CPU in the reader's pass.
    ``apply_exif`` rotates images by their EXIF orientation tag (raw pixels by default). ``max_pixels``: images
    whose header claims more pixels are skipped, never decoded (image_header.py).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        train: bool,
        batch_size: int,
        size: int,
        resize_short: int,
        mean: Sequence[float],
        std: Sequence[float],
        aug: AugConfig,
        random_seed: int,
        num_workers: int,
        prefetch: int,
        reader: str = "auto",
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        device: torch.device | str | None = None,
        apply_exif: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.paths = [s.path for s in samples]
        self.labels = np.array([s.label for s in samples], dtype=np.int64)
        self.train, self.batch_size, self.size = train, batch_size, size
        self.random_seed, self.num_workers, self.prefetch = random_seed, num_workers, prefetch
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device) if device is not None else None
        self.gpu_normalize = self.device is not None and self.device.type == "cuda"
        self.pin_memory = (pin_memory or self.gpu_normalize) and torch.cuda.is_available()
        self.reader = make_reader(
            reader,
            train=train,
            size=size,
            resize_short=resize_short,
            aug=aug,
            num_threads=max(1, num_workers),
            apply_exif=apply_exif,
            max_pixels=max_pixels,
        )
        # (x / 255 - mean) / std as one multiply-add per channel
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t
        self._buffer = np.empty((batch_size, size, size, 3), dtype=np.uint8)  # reused: only the producer writes it
        self._device_affine: tuple[torch.Tensor, torch.Tensor] | None = None  # scale, shift on self.device
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        self.warned: list[tuple[str, str]] = []  # this epoch's (path, warning): decoded in spite of damage
        self._current: weakref.ref | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentations the next iteration uses."""
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """This rank's sample indices for the current epoch, in reading order."""
        return epoch_order(len(self.paths), self.random_seed, self.epoch, self.shuffle, self.rank, self.world_size)

    def batches(self) -> list[np.ndarray]:
        order = self.indices()
        cut = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        return [order[i : i + self.batch_size] for i in range(0, cut, self.batch_size)]

    def __len__(self) -> int:
        count = len(self.indices())
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def load_batch(self, indices: np.ndarray, epoch: int) -> Batch | None:
        """Read and normalize one batch; failed images are dropped and recorded.

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
        if self.gpu_normalize:
            return self.read_pixels(indices, epoch)
        paths = [self.paths[i] for i in indices]
        seeds = [sample_seed(self.random_seed, epoch, int(i)) for i in indices]
        if hasattr(self.reader, "read_batch_normalized"):
            # The C++ reader normalizes each image as it finishes it, straight into the (pinned) batch tensor.
            images = torch.empty((len(paths), 3, self.size, self.size), dtype=torch.float32, pin_memory=self.pin_memory)
            errors = self.reader.read_batch_normalized(
                paths, seeds, images.numpy(), self._scale.view(3).numpy(), self._shift.view(3).numpy(), self.warned
            )
            keep = [i for i, err in enumerate(errors) if err is None]
            images = images if len(keep) == len(paths) else images[keep]
        else:
            out = self._buffer[: len(paths)]
            errors = self.reader.read_batch(paths, seeds, out, self.warned)
            keep = [i for i, err in enumerate(errors) if err is None]
            pixels = torch.from_numpy(out if len(keep) == len(paths) else out[keep])
            images = normalize_on_device(pixels, self._scale, self._shift)
        return self._finish_read(indices, paths, errors, keep, images)

    def read_pixels(self, indices: np.ndarray, epoch: int) -> Batch | None:
        """One batch as (uint8 [N, size, size, 3], labels), pinned when CUDA is there; failed images dropped.

        The producer's step of the CUDA path: the consumer copies it to the GPU and calls ``normalize_on_device``.
        """
        paths = [self.paths[i] for i in indices]
        seeds = [sample_seed(self.random_seed, epoch, int(i)) for i in indices]
        # A fresh pinned tensor per batch: torch's pinned-memory cache reuses it only after its GPU copy is done.
        pixels = torch.empty((len(paths), self.size, self.size, 3), dtype=torch.uint8, pin_memory=self.pin_memory)
        errors = self.reader.read_batch(paths, seeds, pixels.numpy(), self.warned)
        keep = [i for i, err in enumerate(errors) if err is None]
        return self._finish_read(indices, paths, errors, keep, pixels if len(keep) == len(paths) else pixels[keep])

    def _finish_read(
        self, indices: np.ndarray, paths: list[str], errors: list, keep: list[int], images: torch.Tensor
    ) -> Batch | None:
        """Record the failed images; (images, labels) of the kept ones, pinned when asked, or None if none."""
        self.skipped.extend((paths[i], err) for i, err in enumerate(errors) if err is not None)
        if not keep:
            return None
        labels = torch.from_numpy(self.labels[indices[keep]])
        if self.pin_memory:
            images = images if images.is_pinned() else images.pin_memory()
            labels = labels.pin_memory()
        return images, labels

    def to_device(self, batch: Batch) -> Batch:
        """The consumer's step of the CUDA path: pinned uint8 batch -> normalized float32 NCHW on ``device``."""
        if self._device_affine is None:
            self._device_affine = (self._scale.to(self.device), self._shift.to(self.device))
        pixels, labels = batch
        pixels = pixels.to(self.device, non_blocking=True)
        return normalize_on_device(pixels, *self._device_affine), labels.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Batch]:
        self.close_iterator()
        self.skipped, self.warned = [], []
        batches = self.batches()
        load = partial(self.load_batch, epoch=self.epoch)  # a set_epoch() during the pass changes nothing
        finish = self.to_device if self.gpu_normalize else None
        if self.num_workers == 0:  # synchronous: handy for debugging, same batches
            return (b if finish is None else finish(b) for b in map(load, batches) if b is not None)
        it = EpochIterator(load, batches, self.prefetch, finish)
        self._current = weakref.ref(it)
        return it

    def close_iterator(self) -> None:
        """Stop a previous epoch's thread if its iterator is still alive."""
        it = self._current() if self._current is not None else None
        if it is not None:
            it.close()
        self._current = None

    def close(self) -> None:
        """Stop the background thread and the reader's pool."""
        self.close_iterator()
        if hasattr(self.reader, "close"):
            self.reader.close()
