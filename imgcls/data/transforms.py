"""The reference (OpenCV) image transforms and the per-sample randomness that every reader shares.

Random draws come from the counter-based per-sample streams of ``imgcls.randomness`` (draw number ``DRAW_*`` of
the sample's seed): a sample's crop, flip, rotation and color jitter depend only on (random_seed, epoch, index), so
any number of workers, and the C++ reader (csrc/), reproduce the same geometry. The crop box follows Paddle's
``random_crop`` (Paddle reader.py): aspect ratio sqrt(U(lower_ratio, upper_ratio)), area U(lower_scale, 1) bounded
so the box fits, then a uniform offset.

Train: crop box -> resize to size x size -> horizontal flip -> rotation (about the centre) -> color jitter.
Val: resize the short side to ``resize_short`` -> center crop ``size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from imgcls.randomness import randint, uniform

from .resize_window import eval_window, full_resize_bounded, resize_linear_window

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "bilinear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
# Draw indices within a sample's stream (the C++ reader uses the same numbers).
DRAW_RATIO, DRAW_SCALE, DRAW_Y, DRAW_X, DRAW_FLIP, DRAW_ANGLE = range(6)
DRAW_BRIGHTNESS, DRAW_CONTRAST, DRAW_SATURATION, DRAW_HUE = range(6, 10)


@dataclass(frozen=True)
class AugConfig:
    """Train-time augmentation settings (CLI flags of the same names)."""

    lower_scale: float = 0.08
    lower_ratio: float = 3.0 / 4.0
    upper_ratio: float = 4.0 / 3.0
    flip: bool = True
    rotate: float = 0.0  # max |angle| in degrees; 0 = off (Paddle's default)
    brightness: float = 0.0  # jitter strengths; 0 = off (Paddle never implemented jitter)
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # fraction of a full turn, at most 0.5
    interpolation: str = "linear"


@dataclass(frozen=True)
class TrainParams:
    """Everything random about one training sample."""

    x: int
    y: int
    w: int
    h: int
    flip: bool
    angle: float
    brightness: float
    contrast: float
    saturation: float
    hue: float


def random_crop_box(height: int, width: int, seed: int, cfg: AugConfig) -> tuple[int, int, int, int]:
    """(x, y, w, h) of Paddle's random-resized-crop box inside a height x width image."""
    aspect = math.sqrt(uniform(seed, DRAW_RATIO, cfg.lower_ratio, cfg.upper_ratio))
    rel_w, rel_h = aspect, 1.0 / aspect
    bound = min((height / width) / (rel_h * rel_h), (width / height) / (rel_w * rel_w))
    scale_max = min(1.0, bound)
    scale_min = min(cfg.lower_scale, bound)
    area = height * width * uniform(seed, DRAW_SCALE, scale_min, scale_max)
    side = math.sqrt(area)
    w = max(1, min(width, int(side * rel_w)))
    h = max(1, min(height, int(side * rel_h)))
    y = randint(seed, DRAW_Y, height - h + 1)
    x = randint(seed, DRAW_X, width - w + 1)
    return x, y, w, h


def sample_train_params(height: int, width: int, seed: int, cfg: AugConfig) -> TrainParams:
    """Draw a sample's crop box, flip, angle and jitter factors."""
    x, y, w, h = random_crop_box(height, width, seed, cfg)

    def factor(draw: int, strength: float) -> float:
        return uniform(seed, draw, 1.0 - strength, 1.0 + strength) if strength > 0 else 1.0

    return TrainParams(
        x=x,
        y=y,
        w=w,
        h=h,
        flip=cfg.flip and uniform(seed, DRAW_FLIP) < 0.5,
        angle=uniform(seed, DRAW_ANGLE, -cfg.rotate, cfg.rotate) if cfg.rotate > 0 else 0.0,
        brightness=factor(DRAW_BRIGHTNESS, cfg.brightness),
        contrast=factor(DRAW_CONTRAST, cfg.contrast),
        saturation=factor(DRAW_SATURATION, cfg.saturation),
        hue=uniform(seed, DRAW_HUE, -cfg.hue, cfg.hue) if cfg.hue > 0 else 0.0,
    )


def interpolation_flag(name: str) -> int:
    if name not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {name!r}; choose from {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def rotate(img: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about the centre by ``angle`` degrees (counter-clockwise), same size, reflected border."""
    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def hue_matrix(turn: float) -> np.ndarray:
    """3x3 RGB->RGB matrix rotating hue by ``turn`` of a full circle (a rotation of the YIQ chroma plane)."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = math.cos(2 * math.pi * turn), math.sin(2 * math.pi * turn)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.linalg.inv(to_yiq) @ rot @ to_yiq


def color_jitter(img: np.ndarray, p: TrainParams) -> np.ndarray:
    """Brightness, contrast (towards the mean gray), saturation (towards per-pixel gray), hue; uint8 RGB."""
    if p.brightness == p.contrast == p.saturation == 1.0 and p.hue == 0.0:
        return img
    x = img.astype(np.float32) * p.brightness
    gray_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if p.contrast != 1.0:
        mean = float((x @ gray_weights).mean())
        x = (x - mean) * p.contrast + mean
    if p.saturation != 1.0:
        gray = (x @ gray_weights)[..., None]
        x = (x - gray) * p.saturation + gray
    if p.hue != 0.0:
        x = x @ hue_matrix(p.hue).T.astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def train_transform(img: np.ndarray, seed: int, size: int, cfg: AugConfig = AugConfig()) -> np.ndarray:
    """Reference train transform of an RGB uint8 image -> size x size x 3 uint8."""
    p = sample_train_params(img.shape[0], img.shape[1], seed, cfg)
    crop = img[p.y : p.y + p.h, p.x : p.x + p.w]
    out = cv2.resize(crop, (size, size), interpolation=interpolation_flag(cfg.interpolation))
    if p.flip:
        out = out[:, ::-1]
    if p.angle != 0.0:
        out = rotate(out, p.angle)
    return np.ascontiguousarray(color_jitter(out, p))


def val_transform(img: np.ndarray, size: int, resize_short: int, interpolation: str = "linear") -> np.ndarray:
    """Reference eval transform (Paddle's): resize the short side to ``resize_short``, center crop ``size``.

    A thin image, whose full resize would outgrow its decode, resizes the crop alone (``resize_window``): bit for bit
    the same pixels with bilinear; another interpolation refuses it (ValueError) rather than allocate the resize.
    """
    window = eval_window(img.shape[0], img.shape[1], resize_short, size)
    if not full_resize_bounded(img.shape[0], img.shape[1], window):
        if interpolation_flag(interpolation) != cv2.INTER_LINEAR:
            raise ValueError(
                f"{img.shape[0]}x{img.shape[1]} image: resizing its short side to {resize_short} makes "
                f"{window.new_h}x{window.new_w} pixels, which only the bilinear interpolation avoids computing"
            )
        return resize_linear_window(img, window)
    resized = cv2.resize(img, (window.new_w, window.new_h), interpolation=interpolation_flag(interpolation))
    return np.ascontiguousarray(resized[window.y : window.y + size, window.x : window.x + size])


def decode_image(data: bytes, apply_exif: bool = False) -> np.ndarray:
    """Any format OpenCV reads -> RGB uint8 HxWx3 (grayscale expanded). Raw pixels unless ``apply_exif``.

    Raises ValueError on an unreadable file.
    """
    flags = cv2.IMREAD_COLOR if apply_exif else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
