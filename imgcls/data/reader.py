"""Batch readers: file paths + per-sample seeds -> transformed RGB uint8 images in a caller-owned array.

``OpenCVReader`` is the reference (and the fallback): it decodes with OpenCV and applies
``transforms.train_transform`` / ``val_transform``. The C++ reader (``native_reader.NativeReader``, built by
``python setup.py build_ext``) has the same constructor and ``read_batch`` and must produce the same geometry for
the same seeds. Readers never raise for a bad image: ``read_batch`` returns one error message (or None) per image.
"""

from __future__ import annotations

import importlib.util
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from .transforms import AugConfig, decode_image, train_transform, val_transform

READER_KINDS = ("auto", "opencv", "native")
NATIVE_MISSING = "native reader not built (python setup.py build_ext); using the OpenCV reader"
JPEG_TAIL_SLACK = 4096  # bytes searched for the end-of-image marker
_warned_native_missing = False


def jpeg_truncated(data: bytes) -> bool:
    """A JPEG whose end-of-image marker is missing: cut short in transit or on disk.

    OpenCV decodes such a file anyway (gray bottom rows, one libjpeg warning), so it has to be caught here.
    FF D9 cannot occur inside entropy-coded data (FF is stuffed as FF 00), so its absence near the end means a cut;
    a few KiB of slack tolerates the padding some cameras append after the marker.
    """
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-JPEG_TAIL_SLACK:]


class BatchReader(Protocol):
    def read_batch(self, paths: list[str], seeds: list[int], out: np.ndarray) -> list[str | None]: ...


class OpenCVReader:
    """Reference reader: OpenCV decode + the transforms in ``transforms.py``, ``num_threads`` images at a time.

    cv2 releases the GIL while decoding and resizing, so a thread pool gives real parallelism.
    """

    def __init__(self, train: bool, size: int, resize_short: int, aug: AugConfig, num_threads: int = 1):
        self.train, self.size, self.resize_short, self.aug = train, size, resize_short, aug
        self.num_threads = max(1, num_threads)
        self._pool = ThreadPoolExecutor(self.num_threads, "imgcls-reader") if self.num_threads > 1 else None

    def read_one(self, path: str, seed: int) -> np.ndarray:
        """Decode and transform one image (raises on a bad file)."""
        with open(path, "rb") as f:
            data = f.read()
        if jpeg_truncated(data):
            raise ValueError("truncated JPEG (no end-of-image marker)")
        img = decode_image(data)
        if self.train:
            return train_transform(img, seed, self.size, self.aug)
        return val_transform(img, self.size, self.resize_short, self.aug.interpolation)

    def fill(self, path: str, seed: int, out: np.ndarray) -> str | None:
        """Write one image into ``out``; an error message instead of an exception."""
        try:
            out[...] = self.read_one(path, seed)
        except Exception as e:  # missing, unreadable, undecodable (cv2.error too): skip the image, not the run
            return f"{type(e).__name__}: {str(e).strip()}"
        return None

    def read_batch(self, paths: list[str], seeds: list[int], out: np.ndarray) -> list[str | None]:
        """Fill ``out[i]`` (uint8, size x size x 3) from ``paths[i]`` with ``seeds[i]``; per-image error or None."""
        if len(paths) != len(seeds) or out.shape[0] < len(paths):
            raise ValueError(f"read_batch: {len(paths)} paths, {len(seeds)} seeds, out holds {out.shape[0]}")
        if out.shape[1:] != (self.size, self.size, 3) or out.dtype != np.uint8:
            want = f"uint8 [N, {self.size}, {self.size}, 3]"
            raise ValueError(f"read_batch: out must be {want}, got {out.dtype} {list(out.shape)}")
        if self._pool is None or len(paths) <= 1:
            return [self.fill(p, s, out[i]) for i, (p, s) in enumerate(zip(paths, seeds))]
        return list(self._pool.map(self.fill, paths, seeds, [out[i] for i in range(len(paths))]))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def native_available() -> bool:
    """Whether the C++ extension ``imgcls._reader`` has been built."""
    return importlib.util.find_spec("imgcls._reader") is not None


def make_reader(
    kind: str = "auto", *, train: bool, size: int, resize_short: int, aug: AugConfig, num_threads: int = 1
) -> BatchReader:
    """``"opencv"``, ``"native"`` (the C++ reader; an error if not built) or ``"auto"`` (native when built)."""
    global _warned_native_missing
    if kind not in READER_KINDS:
        raise ValueError(f"unknown reader {kind!r}; choose from {', '.join(READER_KINDS)}")
    args = dict(train=train, size=size, resize_short=resize_short, aug=aug, num_threads=num_threads)
    if kind == "auto":
        if native_available():
            kind = "native"
        else:
            if not _warned_native_missing:
                _warned_native_missing = True
                warnings.warn(f"imgcls: {NATIVE_MISSING}", stacklevel=2)
            kind = "opencv"
    if kind == "opencv":
        return OpenCVReader(**args)
    if not native_available():
        raise RuntimeError("imgcls: native reader not built: run `python setup.py build_ext` (or use --reader opencv)")
    from .native_reader import NativeReader

    return NativeReader(**args)
