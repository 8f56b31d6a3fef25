"""The C++ decode: bit-exact with libjpeg-turbo's full decode (OpenCV, Pillow), scaled and region decodes too."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgcls.data import transforms as T

from .helpers import _reader, pil_decode

pytestmark = pytest.mark.usefixtures("needs_native")


def test_decode_bit_exact_with_opencv_and_pillow(variants):
    for name, data in variants.items():
        ours = _reader.decode(data)
        if name in ("cmyk", "ycck"):
            # CMYK -> RGB is cv2's (C*K/255 as k - ((255 - c) * k >> 8)), as Paddle's cv2.imread; Pillow rounds.
            assert np.array_equal(ours, T.decode_image(data)), name
            assert np.abs(ours.astype(int) - pil_decode(data)).max() <= 2, name
        elif name == "junk_between_markers":
            assert np.array_equal(ours, _reader.decode(variants["baseline_420"])), name  # cv2 rejects this one
        else:
            assert np.array_equal(ours, T.decode_image(data)), name
            assert np.array_equal(ours, pil_decode(data)), name


def test_scaled_decode_bit_exact_with_opencv_reduced(variants):
    flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
    for name in ("baseline_420", "baseline_444", "progressive_420", "gray"):
        buf = np.frombuffer(variants[name], np.uint8)
        for s, flag in flags.items():
            ref = cv2.cvtColor(cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION), cv2.COLOR_BGR2RGB)
            assert np.array_equal(_reader.decode(variants[name], scale_denom=s), ref), (name, s)


@pytest.mark.parametrize("name", ["baseline_420", "baseline_422", "baseline_444", "progressive_420", "restart_420"])
def test_region_decode_equals_full_decode(variants, name):
    """Cropped columns + skipped rows: identical to the full decode away from the region's border pixel."""
    data = variants[name]
    rng = np.random.default_rng(1)
    for s in (1, 2):
        full = _reader.decode(data, scale_denom=s)
        h, w = full.shape[:2]
        for _ in range(12):
            x, y = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            rw, rh = int(rng.integers(4, w - x + 1)), int(rng.integers(4, h - y + 1))
            part = _reader.decode(data, scale_denom=s, region=(x, y, rw, rh))
            inner = (slice(1, rh - 1), slice(1, rw - 1))
            assert np.array_equal(part[inner], full[y : y + rh, x : x + rw][inner]), (s, x, y, rw, rh)
