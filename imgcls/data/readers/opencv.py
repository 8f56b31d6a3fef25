"""The reference reader: OpenCV decode + the transforms of ``imgcls/data/transforms.py``.

It is the fallback when the C++ reader is not built, the path the C++ reader hands non-JPEG files to, and the oracle
its tests compare against. The reader contract is in ``imgcls/data/readers/__init__.py``.
Readers never raise for a bad image: one error message (or None) per image, and ``(path, warning)`` in the
``warned`` list for each image decoded in spite of damage (libjpeg warnings).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..image_header import DEFAULT_MAX_PIXELS, check_pixels, jpeg_header_warning
from ..preprocess import normalize
from ..transforms import AugConfig, decode_image, train_transform, val_transform
from .encoded import ImageSource, source_bytes, source_name

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


Warned = list[tuple[str, str]]  # (path, warning) of each image decoded in spite of damage


class OpenCVReader:
    """Reference reader: OpenCV decode + the transforms in ``transforms.py``, ``num_threads`` images at a time.

    cv2 releases the GIL while decoding and resizing, so a thread pool gives real parallelism. Raw pixels by
    default; ``apply_exif`` rotates by the EXIF orientation tag first (OpenCV's IMREAD_COLOR does it). An image
    whose header claims more than ``max_pixels`` pixels is an error, never decoded (image_header.py).
    """

    def __init__(
        self,
        train: bool,
        size: int,
        resize_short: int,
        aug: AugConfig,
        num_threads: int = 1,
        apply_exif: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        self.train, self.size, self.resize_short, self.aug = train, size, resize_short, aug
        self.apply_exif, self.max_pixels = apply_exif, max_pixels
        self.num_threads = max(1, num_threads)
        self._pool = ThreadPoolExecutor(self.num_threads, "imgcls-reader") if self.num_threads > 1 else None

    def read_one(self, path: ImageSource, seed: int, warned: Warned | None = None) -> np.ndarray:
        """Read one image's bytes (from its file, or the ``Encoded`` bytes given) and ``decode_one`` them."""
        return self.decode_one(source_bytes(path), source_name(path), seed, warned)

    def decode_one(self, data: bytes, name: str, seed: int, warned: Warned | None = None) -> np.ndarray:
        """Decode and transform one encoded image (raises on a bad one). OpenCV prints libjpeg's warnings itself and
        does not count them: what is counted into ``warned`` (as ``(name, warning)``) is the junk between JPEG header
        segments (image_header.py)."""
        check_pixels(data, self.max_pixels)  # from the header: a decompression bomb is never decoded
        if jpeg_truncated(data):
            raise ValueError("truncated JPEG (no end-of-image marker)")
        img = decode_image(data, apply_exif=self.apply_exif)
        if self.train:
            result = train_transform(img, seed, self.size, self.aug)
        else:
            result = val_transform(img, self.size, self.resize_short, self.aug.interpolation)
        if warned is not None and (warning := jpeg_header_warning(data)) is not None:
            warned.append((name, warning))
        return result

    def fill(self, path: ImageSource, seed: int, out: np.ndarray, warned: Warned | None = None) -> str | None:
        """Write one image into ``out``; an error message instead of an exception."""
        try:
            out[...] = self.read_one(path, seed, warned)
        except Exception as e:  # missing, unreadable, undecodable (cv2.error too): skip the image, not the run
            return f"{type(e).__name__}: {str(e).strip()}"
        return None

    def fill_many(
        self, paths: list[ImageSource], seeds: list[int], outs: list[np.ndarray], warned: Warned | None = None
    ) -> list[str | None]:
        """``fill`` for each (path, seed, out) on the reader's threads; one error message (or None) each."""
        notes: list = [[] if warned is not None else None for _ in paths]  # per image: warnings in batch order
        if self._pool is None or len(paths) <= 1:
            errors = [self.fill(*args) for args in zip(paths, seeds, outs, notes)]
        else:
            errors = list(self._pool.map(self.fill, paths, seeds, outs, notes))
        if warned is not None:
            warned.extend(note for image_notes in notes for note in image_notes)
        return errors

    def read_batch(
        self, paths: list[ImageSource], seeds: list[int], out: np.ndarray, warned: Warned | None = None
    ) -> list[str | None]:
        """Fill ``out[i]`` (uint8, size x size x 3) from ``paths[i]`` with ``seeds[i]``; per-image error or None.
        ``warned``: a list that gets (path, warning) for each image decoded with a (detectable) libjpeg warning."""
        check_batch(paths, seeds, out, (self.size, self.size, 3), np.uint8)
        return self.fill_many(paths, seeds, [out[i] for i in range(len(paths))], warned)

    def read_batch_normalized(
        self,
        paths: list[ImageSource],
        seeds: list[int],
        out: np.ndarray,
        scale: np.ndarray,
        shift: np.ndarray,
        warned: Warned | None = None,
    ) -> list[str | None]:
        """Fill ``out[i]`` (float32, 3 x size x size) with the image of ``read_batch``, normalized (``normalize``)."""
        check_batch(paths, seeds, out, (3, self.size, self.size), np.float32)
        pixels = np.empty((len(paths), self.size, self.size, 3), np.uint8)
        errors = self.fill_many(paths, seeds, list(pixels), warned)
        scale_t = torch.from_numpy(np.asarray(scale, np.float32))
        shift_t = torch.from_numpy(np.asarray(shift, np.float32))
        out[: len(paths)] = normalize(torch.from_numpy(pixels), scale_t, shift_t).numpy()
        return errors

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:  # None too when __init__ refused its arguments
            self._pool.shutdown(wait=False)


def check_batch(paths: list[ImageSource], seeds: list[int], out: np.ndarray, shape: tuple, dtype: type) -> None:
    """ValueError unless ``out`` is a C-contiguous ``dtype`` array of at least len(paths) items of ``shape``."""
    if len(paths) != len(seeds) or out.shape[0] < len(paths):
        raise ValueError(f"read_batch: {len(paths)} paths, {len(seeds)} seeds, out holds {out.shape[0]}")
    if out.shape[1:] != shape or out.dtype != dtype or not out.flags.c_contiguous:
        want = f"C-contiguous {np.dtype(dtype)} [N, {', '.join(map(str, shape))}]"
        raise ValueError(f"read_batch: out must be {want}, got {out.dtype} {list(out.shape)}")
