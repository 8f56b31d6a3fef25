"""Batch readers: file paths + per-sample seeds -> transformed RGB uint8 images in a caller-owned array.

``OpenCVReader`` is the reference (and the fallback): it decodes with OpenCV and applies
``transforms.train_transform`` / ``val_transform``. The C++ reader (``native_reader.NativeReader``, built by
``python setup.py build_ext``) has the same constructor and ``read_batch`` and must produce the same geometry for
the same seeds. Readers never raise for a bad image: ``read_batch`` returns one error message (or None) per image.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from .transforms import AugConfig, decode_image, train_transform, val_transform

READER_KINDS = ("auto", "opencv", "native")
# Also the first-use notice of an install built with IMGCLS_NO_NATIVE_READER=1.
NATIVE_NOT_BUILT = (
    "native reader not built (it needs libjpeg-turbo at build time, or IMGCLS_NO_NATIVE_READER=1 skipped it): "
    "install libjpeg-turbo, then `pip install .` or `python setup.py build_ext` again (or use --reader opencv)"
)
_warned_native_missing = False
# In entropy-coded data FF is stuffed as FF 00 and restart markers are FF D0..D7: anything else ends the scan.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_NO_LENGTH = frozenset([0x00, 0x01, *range(0xD0, 0xD8)])  # markers without a length field


def jpeg_truncated(data: bytes) -> bool:
    """A JPEG whose main image has no end-of-image marker: cut short in transit or on disk.

    OpenCV decodes such a file anyway (gray bottom rows, one libjpeg warning), so it has to be caught here. The walk
    skips each marker segment by its length (an EXIF thumbnail's own FF D9 is not the image's) and each scan's
    entropy-coded data up to its next marker; whatever follows the image's FF D9 (MPF images, Motion Photo video)
    is ignored. The C++ reader does the same walk (csrc/transform.cpp, has_end_marker).
    """
    if data[:2] != b"\xff\xd8":
        return False
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:  # junk between segments (libjpeg warns and skips it)
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return True
            continue
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            return True
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return False
        if marker in _NO_LENGTH:
            continue
        if size - pos < 2:
            return True
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return False  # corrupt, not cut: the decoder reports it
        if size - pos < length:
            return True
        pos += length
        if marker == 0xDA:
            end = _SCAN_END.search(data, pos)
            if end is None:
                return True
            pos = end.start()
    return True


class BatchReader(Protocol):
    def read_batch(self, paths: list[str], seeds: list[int], out: np.ndarray) -> list[str | None]: ...


class OpenCVReader:
    """Reference reader: OpenCV decode + the transforms in ``transforms.py``, ``num_threads`` images at a time.

    cv2 releases the GIL while decoding and resizing, so a thread pool gives real parallelism. Raw pixels by
    default; ``apply_exif`` rotates by the EXIF orientation tag first (OpenCV's IMREAD_COLOR does it).
    """

    def __init__(
        self,
        train: bool,
        size: int,
        resize_short: int,
        aug: AugConfig,
        num_threads: int = 1,
        apply_exif: bool = False,
    ):
        self.train, self.size, self.resize_short, self.aug = train, size, resize_short, aug
        self.apply_exif = apply_exif
        self.num_threads = max(1, num_threads)
        self._pool = ThreadPoolExecutor(self.num_threads, "imgcls-reader") if self.num_threads > 1 else None

    def read_one(self, path: str, seed: int) -> np.ndarray:
        """Decode and transform one image (raises on a bad file)."""
        with open(path, "rb") as f:
            data = f.read()
        if jpeg_truncated(data):
            raise ValueError("truncated JPEG (no end-of-image marker)")
        img = decode_image(data, apply_exif=self.apply_exif)
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

    def fill_many(self, paths: list[str], seeds: list[int], outs: list[np.ndarray]) -> list[str | None]:
        """``fill`` for each (path, seed, out) on the reader's threads; one error message (or None) each."""
        if self._pool is None or len(paths) <= 1:
            return [self.fill(p, s, o) for p, s, o in zip(paths, seeds, outs)]
        return list(self._pool.map(self.fill, paths, seeds, outs))

    def read_batch(self, paths: list[str], seeds: list[int], out: np.ndarray) -> list[str | None]:
        """Fill ``out[i]`` (uint8, size x size x 3) from ``paths[i]`` with ``seeds[i]``; per-image error or None."""
        if len(paths) != len(seeds) or out.shape[0] < len(paths):
            raise ValueError(f"read_batch: {len(paths)} paths, {len(seeds)} seeds, out holds {out.shape[0]}")
        if out.shape[1:] != (self.size, self.size, 3) or out.dtype != np.uint8:
            want = f"uint8 [N, {self.size}, {self.size}, 3]"
            raise ValueError(f"read_batch: out must be {want}, got {out.dtype} {list(out.shape)}")
        return self.fill_many(paths, seeds, [out[i] for i in range(len(paths))])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def native_unavailable() -> str | None:
    """Why the C++ extension ``imgcls._reader`` cannot be used (not built, or built but not loadable), or None."""
    try:
        importlib.import_module("imgcls._reader")
    except ImportError as e:  # a built module whose libjpeg .so is missing fails here, not in find_spec
        if importlib.util.find_spec("imgcls._reader") is None:
            return NATIVE_NOT_BUILT
        return f"native reader built but not loadable ({e}); rebuild it or use --reader opencv"
    return None


def native_available() -> bool:
    """Whether the C++ extension ``imgcls._reader`` is built and imports."""
    return native_unavailable() is None


def make_reader(
    kind: str = "auto",
    *,
    train: bool,
    size: int,
    resize_short: int,
    aug: AugConfig,
    num_threads: int = 1,
    apply_exif: bool = False,
) -> BatchReader:
    """``"opencv"``, ``"native"`` (the C++ reader; an error if unavailable) or ``"auto"`` (native when available).

    ``apply_exif`` rotates images by their EXIF orientation tag (both readers); raw pixels by default.
    """
    global _warned_native_missing
    if kind not in READER_KINDS:
        raise ValueError(f"unknown reader {kind!r}; choose from {', '.join(READER_KINDS)}")
    args = dict(
        train=train, size=size, resize_short=resize_short, aug=aug, num_threads=num_threads, apply_exif=apply_exif
    )
    reason = native_unavailable() if kind != "opencv" else None
    if kind == "auto":
        kind = "native" if reason is None else "opencv"
        if reason is not None and not _warned_native_missing:
            _warned_native_missing = True
            warnings.warn(f"imgcls: {reason}; using the OpenCV reader", stacklevel=2)
    if kind == "opencv":
        return OpenCVReader(**args)
    if reason is not None:
        raise RuntimeError(f"imgcls: {reason}")
    from .native_reader import NativeReader

    return NativeReader(**args)
