"""The built-in demo dataset: ten classes of drawn shapes, written once as real JPEGs in Paddle's list format.

Why procedural: the CLIs must run end to end on a fresh machine with no download, and the accuracy they print
must mean something. Each image draws one shape (the class) at a random position, scale, rotation and stretch,
filled with a solid, striped or noisy color that contrasts with a textured background (gradients, color blobs,
faint patterns), under thin distractor clutter (lines, dots, arcs), pixel noise, optional blur and a random JPEG
quality. Image sizes vary (72-96 px per side) so the loader's random crop and resize-short paths are exercised.
Train and val draw from disjoint seed streams, so val is held out.

Layout under the cache folder (``imgcls.home``: ``$IMGCLS_HOME``, ``$IMGCLS_CACHE`` or ``~/.cache/imgcls``)::

    shapes10-v2/train/<class>/<index>.jpg, val/<class>/<index>.jpg, train_list.txt, val_list.txt, labels.txt

The folder appears atomically (built in a temp folder, then renamed), so a crash never leaves half a dataset.
Bump ``BUILTIN_VERSION`` whenever the drawing changes: the folder name changes and the set is regenerated.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from imgcls.home import imgcls_home

BUILTIN_VERSION = 2
BUILTIN_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "arrow", "hourglass", "bars")
BUILTIN_NUM_CLASSES = len(BUILTIN_CLASSES)
BUILTIN_NUM_TRAIN = 4000
BUILTIN_NUM_VAL = 800
BUILTIN_DESCRIPTION = "demo dataset of drawn shapes"
BUILTIN_MIN_SIDE, BUILTIN_MAX_SIDE = 72, 96  # stored image sides (px)

# Training defaults on the built-in set (train/eval/infer use them when the built-in data is used). With them,
# `python -m imgcls.train --model ShuffleNetV2_swish --fused` reaches val top-1 above 80% in 12 epochs, in minutes on
# a 2-core CPU (bench/results/headline_cpu.md has the measured runs); at 8 epochs the loss still falls steeply.
BUILTIN_MODEL = "ShuffleNetV2_swish"
BUILTIN_IMAGE_SIZE = 48
BUILTIN_RESIZE_SHORT = 55  # 48 / 55 ~ 0.875, Paddle's 224 / 256 crop ratio
BUILTIN_BATCH_SIZE = 64
BUILTIN_EPOCHS = 12
BUILTIN_LR = 0.2
# The random crop must keep most of the shape: ImageNet's 0.08 area floor would often crop the class away.
BUILTIN_LOWER_SCALE = 0.5

CIRCLE_POINTS = 48
ARROW = np.array([[-1.0, -0.22], [0.15, -0.22], [0.15, -0.65], [1.0, 0.0], [0.15, 0.65], [0.15, 0.22], [-1.0, 0.22]])
HOURGLASS_TOP = np.array([[-0.85, -1.0], [0.85, -1.0], [0.0, 0.0]])  # the bottom is its mirror image
MIN_LUMA_CONTRAST = 80.0  # foreground vs background mean luma (0-255), so every shape is visible


def cache_root() -> Path:
    """The cache folder of ``imgcls.home`` (``$IMGCLS_HOME``, ``$IMGCLS_CACHE`` or ``~/.cache/imgcls``)."""
    return imgcls_home()


def dataset_folder_name(num_train: int, num_val: int) -> str:
    """Versioned folder name; non-default sizes (tests) get their own folder."""
    name = f"shapes{BUILTIN_NUM_CLASSES}-v{BUILTIN_VERSION}"
    if (num_train, num_val) != (BUILTIN_NUM_TRAIN, BUILTIN_NUM_VAL):
        name += f"-n{num_train}-v{num_val}"
    return name


def circle(radius: float = 1.0, center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, CIRCLE_POINTS, endpoint=False)
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    t = np.arange(2 * points) * math.pi / points - math.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def shape_outline(name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(filled polygons, hole polygons) of a class in unit coordinates (about [-1, 1]^2)."""
    arm = 0.3
    if name == "circle":
        return [circle()], []
    if name == "square":
        return [rect(-0.8, -0.8, 0.8, 0.8)], []
    if name == "triangle":
        return [np.array([[0.0, -1.0], [0.95, 0.7], [-0.95, 0.7]])], []
    if name == "star":
        return [star()], []
    if name == "cross":
        return [rect(-1.0, -arm, 1.0, arm), rect(-arm, -1.0, arm, 1.0)], []
    if name == "ring":
        return [circle()], [circle(0.55)]
    if name == "crescent":
        return [circle()], [circle(0.85, (0.45, -0.1))]
    if name == "arrow":
        return [ARROW], []
    if name == "hourglass":
        return [HOURGLASS_TOP, HOURGLASS_TOP * np.array([1.0, -1.0])], []
    if name == "bars":
        return [rect(-1.0, y, 1.0, y + 0.36) for y in (-0.95, -0.18, 0.59)], []
    raise ValueError(f"unknown built-in class {name!r}")


def place(poly: np.ndarray, center: np.ndarray, radius: float, angle: float, stretch: float) -> np.ndarray:
    """Unit polygon -> pixel coordinates (stretch along x, rotate, scale, move), as int32 at 4x subpixel."""
    c, s = math.cos(angle), math.sin(angle)
    pts = poly * np.array([stretch, 1.0 / stretch])
    pts = pts @ np.array([[c, s], [-s, c]]) * radius + center
    return np.round(pts * 4).astype(np.int32)  # shift=2 below: quarter-pixel vertices


def shape_mask(name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased float alpha mask (0..1) of one randomly placed class shape."""
    side = min(height, width)
    radius = side * rng.uniform(0.26, 0.40)
    margin = 0.8 * radius  # keep most of the shape inside the frame
    center = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
    angle, stretch = rng.uniform(0, 2 * math.pi), rng.uniform(0.85, 1.18)
    filled, holes = shape_outline(name)
    mask = np.zeros((height, width), np.uint8)
    for poly in filled:
        cv2.fillPoly(mask, [place(poly, center, radius, angle, stretch)], 255, cv2.LINE_AA, shift=2)
    for poly in holes:
        cv2.fillPoly(mask, [place(poly, center, radius, angle, stretch)], 0, cv2.LINE_AA, shift=2)
    return mask.astype(np.float32) / 255.0


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A textured float RGB background: gradient, color blobs or a faint pattern."""
    kind = rng.integers(3)
    base = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 0:  # linear gradient between two colors along a random direction
        other = rng.uniform(0, 255, 3).astype(np.float32)
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (xx * math.cos(theta) + yy * math.sin(theta)) / max(height, width)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = base + t[..., None] * (other - base) * rng.uniform(0.3, 0.8)
    elif kind == 1:  # smooth color blobs: low-resolution noise upsampled
        cells = int(rng.integers(3, 8))
        low = base + rng.normal(0, 30, (cells, cells, 3)).astype(np.float32)
        img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    else:  # faint stripes or checks
        period = rng.uniform(5, 14)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta = rng.uniform(0, math.pi)
        wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
        if rng.random() < 0.5:
            wave = wave * np.sin((-xx * math.sin(theta) + yy * math.cos(theta)) * 2 * math.pi / period)
        img = base + wave[..., None] * rng.uniform(6, 18) * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.float32)


def contrasting_color(bg_luma: float, rng: np.random.Generator) -> np.ndarray:
    """A random color whose luma differs from ``bg_luma`` by at least MIN_LUMA_CONTRAST."""
    for _ in range(64):
        color = rng.uniform(0, 255, 3).astype(np.float32)
        if abs(float(luma(color)) - bg_luma) >= MIN_LUMA_CONTRAST:
            return color
    return np.full(3, 255.0 if bg_luma < 128 else 0.0, np.float32)


def foreground(height: int, width: int, bg_luma: float, rng: np.random.Generator) -> np.ndarray:
    """The shape's fill: solid, two-tone stripes or noisy, always contrasting with the background."""
    color = contrasting_color(bg_luma, rng)
    fill = np.broadcast_to(color, (height, width, 3)).astype(np.float32)
    kind = rng.random()
    if kind < 0.2:  # stripes of a second shade, pushed further from the background so contrast only grows
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
        on = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period) > 0
        shade = color + (255 - color) * 0.5 if float(luma(color)) > bg_luma else color * 0.5
        fill = np.where(on[..., None], fill, shade)
    elif kind < 0.4:
        fill = fill + rng.normal(0, 18, (height, width, 3)).astype(np.float32)
    return fill


def draw_clutter(img: np.ndarray, rng: np.random.Generator) -> None:
    """Thin lines, small dots and arcs in random colors: distractors too small or thin to look like a class."""
    height, width = img.shape[:2]
    side = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        if kind == 0:
            p0 = (int(rng.integers(width)), int(rng.integers(height)))
            p1 = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(img, p0, p1, color, 1, cv2.LINE_AA)
        elif kind == 1:
            center = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.circle(img, center, int(rng.integers(1, max(2, side // 18))), color, -1, cv2.LINE_AA)
        else:
            center = (int(rng.integers(width)), int(rng.integers(height)))
            axes = (int(rng.integers(4, side // 4)), int(rng.integers(4, side // 4)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, center, axes, 0.0, start, start + float(rng.uniform(40, 120)), color, 1, cv2.LINE_AA)


def render_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of class ``label``."""
    height = int(rng.integers(BUILTIN_MIN_SIDE, BUILTIN_MAX_SIDE + 1))
    width = int(rng.integers(BUILTIN_MIN_SIDE, BUILTIN_MAX_SIDE + 1))
    bg = background(height, width, rng)
    alpha = shape_mask(BUILTIN_CLASSES[label], height, width, rng)[..., None]
    fg = foreground(height, width, float(luma(bg).mean()), rng)
    img = bg * (1 - alpha) + fg * alpha
    draw_clutter(img, rng)
    img = img + rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 1.0))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return data.tobytes()


def write_split(root: Path, split: str, count: int) -> list[str]:
    """Render ``count`` images of ``split`` (classes balanced, round robin) -> the list file's lines."""
    split_id = {"train": 0, "val": 1}[split]  # disjoint seed streams: val is held out
    for name in BUILTIN_CLASSES:
        (root / split / name).mkdir(parents=True)
    lines = []
    for index in range(count):
        label = index % BUILTIN_NUM_CLASSES
        rng = np.random.default_rng([BUILTIN_VERSION, split_id, index])
        image = render_image(label, rng)
        relative = f"{split}/{BUILTIN_CLASSES[label]}/{index:05d}.jpg"
        (root / relative).write_bytes(encode_jpeg(image, int(rng.integers(60, 96))))
        lines.append(f"{relative} {label}\n")
    return lines


def generate(root: Path, num_train: int, num_val: int) -> None:
    """Write the whole dataset into ``root`` (an empty folder)."""
    for split, count in (("train", num_train), ("val", num_val)):
        lines = write_split(root, split, count)
        (root / f"{split}_list.txt").write_text("".join(lines), encoding="utf-8")
    (root / "labels.txt").write_text("".join(f"{name}\n" for name in BUILTIN_CLASSES), encoding="utf-8")


def builtin_dataset_dir(num_train: int = BUILTIN_NUM_TRAIN, num_val: int = BUILTIN_NUM_VAL) -> Path:
    """The built-in dataset's folder, generated on first use (a few seconds; never touches the network)."""
    root = cache_root() / dataset_folder_name(num_train, num_val)
    if (root / "val_list.txt").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():  # not ours to keep: no list file means it is not a finished dataset
        shutil.rmtree(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        generate(tmp, num_train, num_val)
        os.rename(tmp, root)
    except OSError:
        if not (root / "val_list.txt").is_file():  # lost no race: a real failure
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
