"""The C++ reader (``imgcls._reader``, csrc/): same constructor and ``read_batch`` as ``reader.OpenCVReader``.

JPEGs are decoded by libjpeg-turbo in a pool of C++ threads with the GIL released, decoding only the rows and
columns the crop needs, at 1/2, 1/4 or 1/8 scale when the crop is shrunk that much. The geometry (crop box, flip,
angle, jitter factors) is bit-identical to the reference for the same seed; pixels differ by at most one level at
full scale and by a measured amount when a DCT scale is used (bench/results/reader_cpu.md, tests/test_reader.py).
Other formats (PNG, BMP, WebP, ...) and, when asked for, EXIF-rotated JPEGs go through the OpenCV reference.
``read_batch_normalized`` writes float32 NCHW ``x * scale + shift`` straight into a caller buffer (the loader's
batch tensor, pinned when CUDA is present), bit-identical to the loader's torch normalization.
"""

from __future__ import annotations

import warnings

import numpy as np

from .reader import OpenCVReader
from .transforms import MASK64, AugConfig, decode_image, train_transform, val_transform

try:
    from imgcls import _reader
except ImportError:  # not built: make_reader falls back to OpenCV
    _reader = None

NATIVE_INTERPOLATIONS = ("linear", "bilinear", "area")
STATUS_OK, STATUS_NOT_JPEG, STATUS_ERROR, STATUS_NEEDS_REFERENCE = range(4)


def normalize_chw(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 CHW ``x * scale + shift`` in two float32 roundings, as the loader normalizes."""
    chw = image.transpose(2, 0, 1).astype(np.float32)
    return chw * scale.reshape(3, 1, 1) + shift.reshape(3, 1, 1)


class NativeReader:
    """Batch reader over the C++ pool; ``num_threads`` decoder threads, one libjpeg decompressor each."""

    def __init__(
        self,
        train: bool,
        size: int,
        resize_short: int,
        aug: AugConfig,
        num_threads: int = 1,
        apply_exif: bool = False,
        max_pixels: int = 1 << 27,
    ):
        if _reader is None:
            raise RuntimeError("imgcls: native reader not built: run `python setup.py build_ext` (or --reader opencv)")
        self.train, self.size, self.resize_short, self.aug = train, size, resize_short, aug
        self.apply_exif = apply_exif
        self.num_threads = max(1, num_threads)
        self._reference = OpenCVReader(train, size, resize_short, aug, num_threads=1)
        self._impl = None
        if aug.interpolation not in NATIVE_INTERPOLATIONS:
            warnings.warn(
                f"imgcls: native reader has no {aug.interpolation!r} interpolation; reading with OpenCV",
                stacklevel=2,
            )
            return
        self._impl = _reader.BatchReader(
            train=train,
            size=size,
            resize_short=resize_short,
            lower_scale=aug.lower_scale,
            lower_ratio=aug.lower_ratio,
            upper_ratio=aug.upper_ratio,
            flip=aug.flip,
            rotate=aug.rotate,
            brightness=aug.brightness,
            contrast=aug.contrast,
            saturation=aug.saturation,
            hue=aug.hue,
            interpolation=aug.interpolation,
            apply_exif=apply_exif,
            num_threads=self.num_threads,
            max_pixels=max_pixels,
        )

    def _reference_fill(self, path: str, seed: int, out: np.ndarray) -> str | None:
        """Non-JPEG files and EXIF-rotated JPEGs (when asked for): the OpenCV reference path."""
        if not self.apply_exif:
            return self._reference.fill(path, seed, out)
        try:
            with open(path, "rb") as f:
                img = decode_image(f.read(), apply_exif=True)
            if self.train:
                out[...] = train_transform(img, seed, self.size, self.aug)
            else:
                out[...] = val_transform(img, self.size, self.resize_short, self.aug.interpolation)
        except Exception as e:  # an unreadable image is skipped, not fatal
            return f"{type(e).__name__}: {str(e).strip()}"
        return None

    def read_batch(self, paths: list[str], seeds: list[int], out: np.ndarray) -> list[str | None]:
        """Fill ``out[i]`` (uint8, size x size x 3, C-contiguous) from ``paths[i]`` with ``seeds[i]``.

        Returns one error message (or None) per image; a bad image never raises.
        """
        self._check(paths, seeds, out, (self.size, self.size, 3), np.uint8)
        if self._impl is None:  # an interpolation the C++ reader lacks: every image through OpenCV
            return [self._reference_fill(p, s, out[i]) for i, (p, s) in enumerate(zip(paths, seeds))]
        seed_array = np.array([s & MASK64 for s in seeds], dtype=np.uint64)
        results = self._impl.read_batch([str(p) for p in paths], seed_array, out)
        errors: list[str | None] = []
        for i, (status, message) in enumerate(results):
            if status == STATUS_OK:
                errors.append(None)
            elif status in (STATUS_NOT_JPEG, STATUS_NEEDS_REFERENCE):
                errors.append(self._reference_fill(paths[i], seeds[i], out[i]))
            else:
                errors.append(f"ValueError: {message}")
        return errors

    def read_batch_normalized(
        self, paths: list[str], seeds: list[int], out: np.ndarray, scale: np.ndarray, shift: np.ndarray
    ) -> list[str | None]:
        """Fill ``out[i]`` (float32, 3 x size x size, C-contiguous) with ``image * scale[c] + shift[c]``.

        The C++ threads normalize each image right after its transform, into ``out`` (which may be pinned memory);
        ``normalize_chw`` is the reference, used here for the images that go through the OpenCV path.
        """
        self._check(paths, seeds, out, (3, self.size, self.size), np.float32)
        scale = np.ascontiguousarray(scale, dtype=np.float32).reshape(3)
        shift = np.ascontiguousarray(shift, dtype=np.float32).reshape(3)
        if self._impl is None:  # an interpolation the C++ reader lacks: every image through OpenCV
            results = [(STATUS_NEEDS_REFERENCE, "")] * len(paths)
        else:
            seed_array = np.array([s & MASK64 for s in seeds], dtype=np.uint64)
            results = self._impl.read_batch_normalized([str(p) for p in paths], seed_array, out, scale, shift)
        errors: list[str | None] = []
        pixels = np.empty((self.size, self.size, 3), np.uint8)
        for i, (status, message) in enumerate(results):
            if status == STATUS_OK:
                errors.append(None)
            elif status in (STATUS_NOT_JPEG, STATUS_NEEDS_REFERENCE):
                errors.append(self._reference_fill(paths[i], seeds[i], pixels))
                if errors[-1] is None:
                    out[i] = normalize_chw(pixels, scale, shift)
            else:
                errors.append(f"ValueError: {message}")
        return errors

    def _check(self, paths: list[str], seeds: list[int], out: np.ndarray, shape: tuple, dtype: type) -> None:
        if len(paths) != len(seeds) or out.shape[0] < len(paths):
            raise ValueError(f"read_batch: {len(paths)} paths, {len(seeds)} seeds, out holds {out.shape[0]}")
        if out.shape[1:] != shape or out.dtype != dtype or not out.flags.c_contiguous:
            want = f"C-contiguous {np.dtype(dtype)} [N, {', '.join(map(str, shape))}]"
            raise ValueError(f"read_batch: out must be {want}, got {out.dtype} {list(out.shape)}")

    def close(self) -> None:
        """Stop the C++ threads (they also stop when the reader is garbage collected)."""
        self._impl = None
        self._reference.close()
