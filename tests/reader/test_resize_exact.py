"""OpenCV's uint8 bilinear resize, reproduced: the C++ fixed-point resize (csrc/resize_fixed.cpp) and its numpy twin
(imgcls/data/resize_window.py) against cv2.resize itself, byte for byte, on random noise (the worst case for
rounding) of random sizes: shrinking, enlarging, odd, one pixel wide or high, exact halving and doubling.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgcls.data.resize_window import EvalWindow, eval_window, resize_linear_window

from ..conftest import require_native


def random_cases(seed: int, count: int):
    """(src, out_w, out_h): every fifth doubles, every seventh halves, a tenth has a one-pixel side."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        out_h, out_w = (int(v) for v in rng.integers(1, 260, 2))
        if i % 5 == 0:
            out_h, out_w = 2 * h, 2 * w
        elif i % 7 == 0:
            h, w = 2 * h, 2 * w
            out_h, out_w = h // 2, w // 2
        elif i % 10 == 1:
            h = 1
        elif i % 10 == 3:
            out_w = 1
        yield rng.integers(0, 256, (h, w, 3), dtype=np.uint8), out_w, out_h


def test_native_resize_equals_cv2_bit_for_bit():
    require_native()
    from imgcls import _reader

    for i, (src, out_w, out_h) in enumerate(random_cases(5, 400)):
        flip = i % 2 == 1
        want = cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        got = _reader.resize_exact(src, out_w, out_h, flip)
        assert np.array_equal(got, want[:, ::-1] if flip else want), (src.shape, out_w, out_h, flip)


def test_numpy_window_resize_equals_cv2_bit_for_bit():
    """Any square window of the resize, at any offset, equals that window of cv2's result."""
    rng = np.random.default_rng(7)
    for src, out_w, out_h in random_cases(6, 300):
        side = min(out_h, out_w)
        y, x = int(rng.integers(0, out_h - side + 1)), int(rng.integers(0, out_w - side + 1))
        want = cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_LINEAR)[y : y + side, x : x + side]
        got = resize_linear_window(src, EvalWindow(out_h, out_w, y, x, side))
        assert np.array_equal(got, want), (src.shape, out_w, out_h, y, x)


@pytest.mark.parametrize("shape", [(1, 300), (2, 999), (700, 3), (57, 31), (256, 256), (9, 10)])
def test_window_is_the_crop_of_paddles_resize(shape):
    """The center crop of the eval transform, computed alone, equals cv2's full resize cropped (also grayscale)."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    src = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for size, short in ((224, 256), (299, 320), (17, 17)):
        win = eval_window(shape[0], shape[1], short, size)
        resized = cv2.resize(src, (win.new_w, win.new_h), interpolation=cv2.INTER_LINEAR)
        want = resized[win.y : win.y + size, win.x : win.x + size]
        assert np.array_equal(resize_linear_window(src, win), want), (shape, size, short)
        gray = src[..., 0].copy()
        want_gray = cv2.resize(gray, (win.new_w, win.new_h))[win.y : win.y + size, win.x : win.x + size]
        assert np.array_equal(resize_linear_window(gray, win), want_gray), (shape, size, short)
