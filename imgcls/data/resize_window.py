"""The eval transform's window: where its output lies in Paddle's resized image, and the exact resize of that window.

Paddle's val reader resizes the short side to ``resize_short`` (cv2.resize, bilinear, ``round()`` of each side), then
takes the centered ``size`` x ``size`` crop. For a thin image that intermediate is huge (a 1 x 20000 image at 256:
256 x 5,120,000 pixels, 3.9 GB) although the output is 224 x 224. ``eval_window`` gives the resize and the crop
offset; ``resize_linear_window`` computes only the cropped pixels, with OpenCV's own fixed-point bilinear arithmetic
(the Python twin of csrc/resize_fixed.cpp; the formulas are in csrc/resize_fixed.h), so the result equals
``cv2.resize(...)[crop]`` bit for bit while its work and memory are bounded by the output. Both readers use the
window: the OpenCV reader when the full resize would outgrow the decode and the output (``full_resize_bounded``),
the C++ reader always (it computes the crop's taps alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (11 fractional bits)
# The OpenCV reader resizes the whole image with cv2 while the intermediate holds at most this many times the pixels
# of the decoded image and the output crop together: every photo-shaped input, small images enlarged included.
FULL_RESIZE_FACTOR = 16


@dataclass(frozen=True)
class EvalWindow:
    """Paddle's resize (``new_h`` x ``new_w``) and the offset (``y``, ``x``) of the ``size`` x ``size`` crop in it."""

    new_h: int
    new_w: int
    y: int
    x: int
    size: int


def resize_short_dims(height: int, width: int, short: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side equal to ``short`` (Paddle's resize_short: Python's ``round()``)."""
    percent = short / min(height, width)
    return int(round(height * percent)), int(round(width * percent))


def center_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(y, x) of a centered size x size crop in a height x width image (Paddle's ``(w - size) // 2``)."""
    if height < size or width < size:
        raise ValueError(f"center crop {size} larger than image {height}x{width}; raise resize_short_size")
    return (height - size) // 2, (width - size) // 2


def eval_window(height: int, width: int, resize_short: int, size: int) -> EvalWindow:
    """The eval transform of a height x width image: Paddle's resize and its center crop (ValueError if too small)."""
    new_h, new_w = resize_short_dims(height, width, resize_short)
    y, x = center_crop_offsets(new_h, new_w, size)
    return EvalWindow(new_h, new_w, y, x, size)


def full_resize_bounded(height: int, width: int, window: EvalWindow) -> bool:
    """Whether resizing the whole image costs at most a few times the memory of its decode and of the output."""
    return window.new_h * window.new_w <= FULL_RESIZE_FACTOR * (height * width + window.size * window.size)


def linear_taps(start: int, count: int, length: int, out_length: int, clamp_weights: bool):
    """OpenCV's bilinear taps of output indices ``start .. start + count - 1`` of a ``length`` -> ``out_length``
    resize along one axis: (first index, second index, first weight, second weight), weights in 1/2048.

    ``clamp_weights`` is OpenCV's horizontal rule (a border column takes weight 0 on the outside pixel); vertically
    it clamps the row indices only and keeps the weights.
    """
    scale = 1.0 / (out_length / length)  # cv2: inv_scale = dst / src, scale = 1 / inv_scale, in double
    d = np.arange(start, start + count, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = f - s.astype(np.float32)
    if clamp_weights:
        low, high = s < 0, s >= length - 1
        f[low | high] = 0.0
        s = np.where(low, 0, np.where(high, length - 1, s))
    i0, i1 = np.clip(s, 0, length - 1), np.clip(s + 1, 0, length - 1)
    # saturate_cast<short>(float): round half to even, as np.rint.
    w0 = np.rint((np.float32(1.0) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    return i0, i1, w0, w1


def resize_linear_window(img: np.ndarray, window: EvalWindow) -> np.ndarray:
    """``cv2.resize(img, (new_w, new_h), INTER_LINEAR)[crop]`` for a uint8 HxWxC image, computing the crop alone."""
    height, width = img.shape[:2]
    xi0, xi1, xw0, xw1 = linear_taps(window.x, window.size, width, window.new_w, clamp_weights=True)
    yi0, yi1, yw0, yw1 = linear_taps(window.y, window.size, height, window.new_h, clamp_weights=False)
    pixels = img if img.ndim == 3 else img[..., None]

    def horizontal(row: np.ndarray) -> np.ndarray:  # the horizontal pass first, into ints, as OpenCV does
        left = pixels[row[:, None], xi0[None, :]].astype(np.int64)  # gathers size x size pixels, never a whole row
        right = pixels[row[:, None], xi1[None, :]].astype(np.int64)
        return left * xw0[None, :, None] + right * xw1[None, :, None]

    top, bottom = horizontal(yi0), horizontal(yi1)
    v = ((yw0[:, None, None] * (top >> 4)) >> 16) + ((yw1[:, None, None] * (bottom >> 4)) >> 16)
    out = ((v + 2) >> 2).astype(np.uint8)
    return np.ascontiguousarray(out if img.ndim == 3 else out[..., 0])
