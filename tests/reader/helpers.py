"""Helpers shared by the reader tests: JPEG surgery, Pillow's decode, aug settings as keyword arguments."""

from __future__ import annotations

import io
import struct

import numpy as np

from imgcls.data import transforms as T
from imgcls.data.preprocess import PreprocessSpec

try:
    from imgcls import _reader  # the native module; tests that use it ask for the needs_native fixture
except ImportError:
    _reader = None

FULL_AUG = dict(rotate=10.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def aug_kwargs(cfg: T.AugConfig) -> dict:
    return dict(
        lower_scale=cfg.lower_scale,
        lower_ratio=cfg.lower_ratio,
        upper_ratio=cfg.upper_ratio,
        flip=cfg.flip,
        rotate=cfg.rotate,
        brightness=cfg.brightness,
        contrast=cfg.contrast,
        saturation=cfg.saturation,
        hue=cfg.hue,
    )


def set_sof_field(data: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite bytes of the SOF0/SOF2 segment (offset counted from the marker's FF)."""
    at = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    return data[: at + offset] + value + data[at + offset + len(value) :]


def exif_orientation_jpeg(data: bytes, orientation: int) -> bytes:
    """Insert an APP1 EXIF segment holding one Orientation tag after SOI."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += b"\x00\x00\x00\x00"
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def with_exif_thumbnail(data: bytes, thumbnail: bytes) -> bytes:
    """An APP1 EXIF segment holding a whole JPEG (a thumbnail, with its own FF D9) after SOI."""
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x00" + thumbnail
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def torch_equal(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def spec(size: int, resize_short: int, aug: T.AugConfig = T.AugConfig(), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)):
    """A PreprocessSpec for reader and loader tests."""
    return PreprocessSpec(size, resize_short, tuple(mean), tuple(std), aug)
