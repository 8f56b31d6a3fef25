"""The C++ reader (``imgcls._reader``, csrc/): the reader contract of ``readers/__init__.py`` in C++ threads.

JPEGs are decoded by libjpeg-turbo in a pool of C++ threads with the GIL released, decoding only the rows and
columns the crop needs, and (``dct_scaling``, by default in the train transform only) at 1/2, 1/4 or 1/8 scale when
the crop is shrunk that much. The geometry (crop box, flip, angle, jitter factors) is bit-identical to the reference
for the same seed; from a 1/1 decode the bilinear pixels are OpenCV's bit for bit (csrc/resize_fixed.h), so the
default eval transform is Paddle's; a DCT-scaled decode differs by a measured amount (bench/results/reader_cpu.md).
Other formats (PNG, BMP, WebP, ...) and, when asked for, EXIF-rotated JPEGs go through the OpenCV reference.
``read_batch_normalized`` writes float32 NCHW ``x * scale + shift`` straight into a caller buffer (the loader's
batch tensor), bit-identical to ``imgcls.data.preprocess.normalize``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import torch

from imgcls import _reader
from imgcls.randomness import MASK64

from ..image_header import DEFAULT_MAX_PIXELS
from ..preprocess import normalize
from ..transforms import AugConfig
from .encoded import Encoded, ImageSource, source_name
from .opencv import OpenCVReader, Warned, check_batch

NATIVE_INTERPOLATIONS = ("linear", "bilinear", "area")
STATUS_OK, STATUS_NOT_JPEG, STATUS_ERROR, STATUS_NEEDS_REFERENCE, STATUS_WARNED = range(5)
_USE_REFERENCE = object()  # per-image marker between the C++ batch and the OpenCV pass
# Bounds of |native - OpenCV reference| per uint8 value for the same seed, measured on photo-like images
# (bench/results/reader_cpu.md); tests/reader/test_transform.py and bench_reader.py's pre-timing check hold to them.
MAX_DIFF_FULL_SCALE = 1  # 1/1 decode, area: float weights vs cv2 (bilinear at 1/1 is cv2 exactly: 0)
# Plus rotation (1/1 decode): cv2 rounds warp coordinates to 1/32 pixel and weights to 15 bits. Measured: 8 on
# photos, 11 on textured content (120 samples with rotation and jitter).
MAX_DIFF_ROTATE = 12
# DCT-scaled decode (a box-like prefilter) vs cv2's bilinear decimation, which aliases: mean over one sample, and the
# worst pixel. Measured on fine texture, stripes and one-pixel lines at 1024x768 and 2048x1536 (bench_reader_diffs.py,
# 224 output): worst sample mean 25.7, max 164 (175 at the 112 output of tests/reader/test_transform.py); on smooth
# synthetic photos 1.6 and 80.
MEAN_DIFF_DCT = 26.0
MAX_DIFF_DCT = 180


class NativeReader:
    """Batch reader over the C++ pool; ``num_threads`` decoder threads, one libjpeg decompressor each.

    The images the C++ reader hands back (other formats; EXIF-rotated JPEGs when ``apply_exif``; every image when
    the interpolation is one it lacks) go through the OpenCV reference on a pool of as many threads.
    ``dct_scaling``: whether JPEGs may be decoded at 1/2..1/8 scale (default: in the train transform only); without
    it a bilinear transform is OpenCV's, bit for bit.
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
        dct_scaling: bool | None = None,
    ):
        self.train, self.size, self.resize_short, self.aug = train, size, resize_short, aug
        self.apply_exif = apply_exif
        self.dct_scaling = train if dct_scaling is None else dct_scaling
        self.num_threads = max(1, num_threads)
        self._reference = OpenCVReader(train, size, resize_short, aug, self.num_threads, apply_exif, max_pixels)
        self.max_pixels = max_pixels
        self._impl = None
        self._closed = False
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
            dct_scaling=self.dct_scaling,
        )

    def read_batch(
        self, paths: list[ImageSource], seeds: list[int], out: np.ndarray, warned: Warned | None = None
    ) -> list[str | None]:
        """Fill ``out[i]`` (uint8, size x size x 3, C-contiguous) from ``paths[i]`` with ``seeds[i]``.

        Returns one error message (or None) per image; a bad image never raises. ``warned``: a list that gets
        (path, libjpeg's first warning) for each image decoded in spite of damage.
        """
        check_batch(paths, seeds, out, (self.size, self.size, 3), np.uint8)
        errors = self._run(paths, seeds, lambda impl, p, s, mem: impl.read_batch(p, s, out, in_memory=mem), warned)
        return self._reference_fill(paths, seeds, errors, warned, out=out)

    def read_batch_normalized(
        self,
        paths: list[ImageSource],
        seeds: list[int],
        out: np.ndarray,
        scale: np.ndarray,
        shift: np.ndarray,
        warned: Warned | None = None,
    ) -> list[str | None]:
        """Fill ``out[i]`` (float32, 3 x size x size, C-contiguous) with ``image * scale[c] + shift[c]``.

        The C++ threads normalize each image right after its transform, into ``out`` (which may be pinned memory);
        ``normalize`` is the reference, used here for the images that go through the OpenCV path.
        """
        check_batch(paths, seeds, out, (3, self.size, self.size), np.float32)
        scale = np.ascontiguousarray(scale, dtype=np.float32).reshape(3)
        shift = np.ascontiguousarray(shift, dtype=np.float32).reshape(3)
        errors = self._run(
            paths, seeds, lambda impl, p, s, mem: impl.read_batch_normalized(p, s, out, scale, shift, mem), warned
        )

        scale_t, shift_t = torch.from_numpy(scale), torch.from_numpy(shift)

        def store(i: int, pixels: np.ndarray) -> None:
            out[i] = normalize(torch.from_numpy(pixels[None]), scale_t, shift_t)[0].numpy()

        return self._reference_fill(paths, seeds, errors, warned, store=store)

    def _run(self, paths: list[ImageSource], seeds: list[int], call: Callable, warned: Warned | None) -> list:
        """The C++ batch: per image None (done), an error message, or _USE_REFERENCE (OpenCV's turn). A batch is
        all file paths or all ``Encoded`` images (then the C++ threads decode the bytes, no file is opened)."""
        if self._closed:
            raise RuntimeError("imgcls: this NativeReader was closed")
        if self._impl is None:  # an interpolation the C++ reader lacks: every image through OpenCV
            return [_USE_REFERENCE] * len(paths)
        seed_array = np.array([s & MASK64 for s in seeds], dtype=np.uint64)
        in_memory = bool(paths) and isinstance(paths[0], Encoded)
        if any(isinstance(p, Encoded) != in_memory for p in paths):
            raise ValueError("read_batch: a batch holds file paths or Encoded images, not both")
        # Bytes, as Python's own file functions pass them: a name that is not UTF-8 reaches the C++ fopen as is.
        items = [p.data for p in paths] if in_memory else [os.fsencode(p) for p in paths]
        results = call(self._impl, items, seed_array, in_memory)
        errors: list = []
        for path, (status, message) in zip(paths, results):
            if status in (STATUS_OK, STATUS_WARNED):
                errors.append(None)
                if status == STATUS_WARNED and warned is not None:
                    warned.append((source_name(path), message))
            elif status in (STATUS_NOT_JPEG, STATUS_NEEDS_REFERENCE):
                errors.append(_USE_REFERENCE)
            else:
                errors.append(f"ValueError: {message}")
        return errors

    def _reference_fill(
        self,
        paths: list[ImageSource],
        seeds: list[int],
        errors: list,
        warned: Warned | None,
        out: np.ndarray | None = None,
        store: Callable[[int, np.ndarray], None] | None = None,
    ) -> list[str | None]:
        """Read the images marked _USE_REFERENCE with OpenCV, all at once on the reference's threads.

        Into ``out[i]`` directly, or (with ``store``) into scratch handed over as ``store(i, pixels)``.
        """
        todo = [i for i, e in enumerate(errors) if e is _USE_REFERENCE]
        if not todo:
            return errors
        if store is None:
            targets = [out[i] for i in todo]
        else:
            targets = list(np.empty((len(todo), self.size, self.size, 3), np.uint8))
        results = self._reference.fill_many([paths[i] for i in todo], [seeds[i] for i in todo], targets, warned)
        for i, target, error in zip(todo, targets, results):
            errors[i] = error
            if error is None and store is not None:
                store(i, target)
        return errors

    def close(self) -> None:
        """Stop the C++ threads (they also stop when the reader is garbage collected); later reads raise."""
        self._impl, self._closed = None, True
        self._reference.close()
