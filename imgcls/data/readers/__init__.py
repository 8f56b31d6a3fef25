"""Image readers: file paths + per-sample seeds -> transformed images written into a caller-owned batch.

The contract every reader keeps (``BatchReader``):

- ``read_batch(paths, seeds, out, warned=None)`` fills ``out[i]`` (uint8 ``[N, size, size, 3]``, RGB) from
  ``paths[i]`` (a file path, or an ``Encoded`` image already in memory: ``encoded.py``) with the augmentation of
  ``seeds[i]`` (train) or the eval transform (val);
- ``read_batch_normalized(paths, seeds, out, scale, shift, warned=None)`` fills float32 ``[N, 3, size, size]`` with
  the same images normalized as ``imgcls.data.preprocess.normalize`` does;
- both return one error message (or None) per image: a missing, corrupt, truncated or oversized image (over
  ``max_pixels``, read from its header before any decode) never raises; ``warned``, when given, gets
  ``(path, warning)`` for each image decoded in spite of damage (libjpeg warnings);
- ``close()`` stops the reader's threads.

Two implementations: ``opencv.OpenCVReader`` (the reference: OpenCV decode + ``transforms.py``) and
``native.NativeReader`` (the C++ module ``imgcls._reader`` built from csrc/, with the same geometry for the same
seeds). ``make_reader`` picks one.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from typing import Protocol

import numpy as np

from ..image_header import DEFAULT_MAX_PIXELS
from ..preprocess import PreprocessSpec
from .encoded import Encoded, ImageSource
from .opencv import OpenCVReader, Warned

READER_KINDS = ("auto", "opencv", "native")
# Where the native reader may decode JPEGs at 1/2, 1/4 or 1/8 scale (DCT-domain downscaling, fast but not OpenCV's
# pixels): "train" (the train transform only: eval stays Paddle-exact), "all" (eval too) or "none".
DCT_SCALING_MODES = ("train", "all", "none")
# Also the first-use notice of an install built with IMGCLS_NO_NATIVE_READER=1.
NATIVE_NOT_BUILT = (
    "native reader not built (it needs libjpeg-turbo at build time, or IMGCLS_NO_NATIVE_READER=1 skipped it): "
    "install libjpeg-turbo, then `pip install .` or `python setup.py build_ext` again (or use --reader opencv)"
)
_warned_native_missing = False


class BatchReader(Protocol):
    """What the loader, eval and infer need from a reader (see the module docstring)."""

    def read_batch(
        self, paths: list[ImageSource], seeds: list[int], out: np.ndarray, warned: Warned | None = None
    ) -> list[str | None]: ...

    def read_batch_normalized(
        self,
        paths: list[ImageSource],
        seeds: list[int],
        out: np.ndarray,
        scale: np.ndarray,
        shift: np.ndarray,
        warned: Warned | None = None,
    ) -> list[str | None]: ...

    def close(self) -> None: ...


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
    kind: str,
    preprocess: PreprocessSpec,
    *,
    train: bool,
    num_threads: int = 1,
    apply_exif: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dct_scaling: str = "train",
) -> BatchReader:
    """A reader of ``preprocess``'s train (``train=True``) or eval transform: ``"opencv"``, ``"native"`` (the C++
    reader; an error if unavailable) or ``"auto"`` (native when available, else OpenCV after one warning).

    ``apply_exif`` rotates images by their EXIF orientation tag (both readers); raw pixels by default.
    ``max_pixels``: images whose header claims more pixels are per-image errors, never decoded (image_header.py).
    ``dct_scaling`` (``DCT_SCALING_MODES``): whether the native reader may decode at a reduced DCT scale in this
    transform; without it, its output equals the OpenCV reader's (docs/reader.md says where exactly).
    """
    global _warned_native_missing
    if kind not in READER_KINDS:
        raise ValueError(f"unknown reader {kind!r}; choose from {', '.join(READER_KINDS)}")
    if dct_scaling not in DCT_SCALING_MODES:
        raise ValueError(f"unknown dct_scaling {dct_scaling!r}; choose from {', '.join(DCT_SCALING_MODES)}")
    args = dict(
        train=train,
        size=preprocess.input_size,
        resize_short=preprocess.resize_short,
        aug=preprocess.aug,
        num_threads=num_threads,
        apply_exif=apply_exif,
        max_pixels=max_pixels,
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
    from .native import NativeReader

    return NativeReader(**args, dct_scaling=dct_scaling == "all" or (train and dct_scaling == "train"))


__all__ = [
    "DCT_SCALING_MODES",
    "READER_KINDS",
    "BatchReader",
    "Encoded",
    "ImageSource",
    "OpenCVReader",
    "Warned",
    "make_reader",
    "native_available",
    "native_unavailable",
]
