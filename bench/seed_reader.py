"""The seed's training reader (PaddleCV image_classification ``reader.py``, release/1.8) beside imgcls's, on the same
list-format data: what each feeds a training run, compared without training.

The seed's side is a transcription of ``ImageNetReader.train`` for one process: each epoch ``np.random.shuffle`` of
the whole list, batches of ``batch_size`` consecutive lines with the partial last batch never yielded (``xmap_readers``
with ``order=False`` only reorders whole batches), and per image ``process_image``: ``cv2.imread`` (BGR),
``random_crop`` (aspect sqrt(U(lower_ratio, upper_ratio)), area U(min(lower_scale, bound), min(1, bound)), offsets
``np.random.randint``), ``cv2.resize`` with OpenCV's default (bilinear), a flip when ``np.random.randint(0, 2) == 1``,
then BGR -> RGB. imgcls's side is ``Loader``'s epoch plan and ``OpenCVReader``.

Printed: batches per epoch and images dropped; each image's appearances over the epochs; the crop boxes' area
fraction, aspect, offsets and flip rate (mean and the largest gap between the two empirical CDFs); and, given
imgcls's own crop box and flip, whether the seed's pixel path gives the same uint8 pixels.

    python bench/seed_reader.py --data_dir ~/.cache/imgcls/shapes10-v2 --size 48 --lower_scale 0.5
"""

from __future__ import annotations

import argparse
import math
import os

import cv2
import numpy as np

from imgcls.data.datasets import load_dataset
from imgcls.data.loader import epoch_order
from imgcls.data.readers.opencv import OpenCVReader
from imgcls.data.transforms import AugConfig, sample_train_params
from imgcls.randomness import sample_seed


def seed_random_crop(img: np.ndarray, size: int, lower_scale: float, ratio: tuple[float, float]) -> tuple:
    """reader.py ``random_crop`` (the draws in its order); returns the resized crop and its box (x, y, w, h)."""
    aspect_ratio = math.sqrt(np.random.uniform(*ratio))
    w, h = 1.0 * aspect_ratio, 1.0 / aspect_ratio
    bound = min((float(img.shape[0]) / img.shape[1]) / (h**2), (float(img.shape[1]) / img.shape[0]) / (w**2))
    scale_max, scale_min = min(1.0, bound), min(lower_scale, bound)
    target_area = img.shape[0] * img.shape[1] * np.random.uniform(scale_min, scale_max)
    target_size = math.sqrt(target_area)
    w, h = int(target_size * w), int(target_size * h)
    i = np.random.randint(0, img.shape[0] - h + 1)
    j = np.random.randint(0, img.shape[1] - w + 1)
    return cv2.resize(img[i : i + h, j : j + w, :], (size, size)), (j, i, w, h)


def seed_epoch(lines: list[int], batch_size: int) -> list[list[int]]:
    """reader.py ``read_file_list`` for training: shuffle the whole list, yield only full batches."""
    lines = list(lines)
    np.random.shuffle(lines)
    return [lines[k : k + batch_size] for k in range(0, len(lines) - batch_size + 1, batch_size)]


def ks_gap(a: np.ndarray, b: np.ndarray) -> float:
    """The largest gap between the empirical CDFs of ``a`` and ``b`` (two-sample Kolmogorov-Smirnov statistic)."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def box_features(boxes: np.ndarray, shapes: np.ndarray) -> dict[str, np.ndarray]:
    """(x, y, w, h, flip) per draw and (H, W) per image -> the quantities compared."""
    x, y, w, h, flip = boxes.T
    height, width = shapes.T
    return {
        "area fraction": w * h / (height * width),
        "aspect w/h": w / h,
        "x offset / free room": x / np.maximum(width - w, 1),
        "y offset / free room": y / np.maximum(height - h, 1),
        "flip": flip,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--lower_scale", type=float, default=0.5)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--random_seed", type=int, default=1000)
    p.add_argument("--pixel_images", type=int, default=400, help="images whose pixels are compared")
    args = p.parse_args()
    np.random.seed(0)  # reader.py seeds numpy's global RNG with 0 at import
    spec = load_dataset(os.path.expanduser(args.data_dir))
    paths = [s.path for s in spec.train]  # already joined with the data dir
    n = len(paths)
    aug = AugConfig(lower_scale=args.lower_scale)
    ratio = (aug.lower_ratio, aug.upper_ratio)

    # Epoch assembly.
    seed_seen, ours_seen = np.zeros(n, int), np.zeros(n, int)
    for epoch in range(args.epochs):
        batches = seed_epoch(list(range(n)), args.batch_size)
        for b in batches:
            seed_seen[b] += 1
        order = epoch_order(n, args.random_seed, epoch, True, 0, 1)
        ours = [order[k : k + args.batch_size] for k in range(0, n - args.batch_size + 1, args.batch_size)]
        for b in ours:
            ours_seen[b] += 1
    print(f"images {n}, batch {args.batch_size}: seed {len(batches)} batches/epoch, imgcls {len(ours)}")
    print(f"appearances per image over {args.epochs} epochs: seed {seed_seen.min()}-{seed_seen.max()}, imgcls ", end="")
    print(f"{ours_seen.min()}-{ours_seen.max()}; KS gap of the counts {ks_gap(seed_seen, ours_seen):.3f}")

    # Crop boxes and flips, and the pixel path, one draw per image and epoch-0 seed.
    reader = OpenCVReader(True, args.size, args.size, aug)
    shapes, seed_boxes, our_boxes, same, compared = [], [], [], 0, 0
    for index, path in enumerate(paths):
        img = cv2.imread(path)
        shapes.append(img.shape[:2])
        _, box = seed_random_crop(img, args.size, args.lower_scale, ratio)
        seed_boxes.append((*box, np.random.randint(0, 2)))
        seed = sample_seed(args.random_seed, 0, index)
        tp = sample_train_params(img.shape[0], img.shape[1], seed, aug)
        our_boxes.append((tp.x, tp.y, tp.w, tp.h, int(tp.flip)))
        if index < args.pixel_images:  # the seed's pixel path on imgcls's draws
            crop = cv2.resize(img[tp.y : tp.y + tp.h, tp.x : tp.x + tp.w, :], (args.size, args.size))
            if tp.flip:
                crop = crop[:, ::-1, :]
            same += int(np.array_equal(crop[:, :, ::-1], reader.read_one(path, seed)))
            compared += 1
    shapes = np.array(shapes, float)
    seed_f = box_features(np.array(seed_boxes, float), shapes)
    our_f = box_features(np.array(our_boxes, float), shapes)
    print(f"{'quantity':24} {'seed mean':>10} {'imgcls mean':>12} {'KS gap':>8}")
    for key in seed_f:
        print(f"{key:24} {seed_f[key].mean():10.4f} {our_f[key].mean():12.4f} {ks_gap(seed_f[key], our_f[key]):8.4f}")
    print(f"KS gap two samples of {n} from one distribution exceed with 1% probability: {1.63 * math.sqrt(2 / n):.4f}")
    print(f"pixels: {same} of {compared} images identical (uint8 RGB) through the seed's path on imgcls's draws")


if __name__ == "__main__":
    main()
