"""Pixel differences of the native reader vs the OpenCV reference (= Paddle's pixels), per --dct_scaling mode.

|native - reference| over uint8 RGB for the same seeds, 224 output, resize_short 256, bilinear: the train transform
with DCT-scaled decoding (the default) and without (``--dct_scaling none``), the eval transform exact (the default)
and DCT-scaled (``--dct_scaling all``). Content: tests/jpeg_corpus.py's synthetic photos and its textured photos
(fine texture, stripes, checkerboards, one-pixel lines), at 500x375, 1024x768 and 2048x1536, baseline 4:2:0 at
quality 75 and 90, generated on the spot. The rows are what readers.native's MAX_DIFF_* / MEAN_DIFF_* bounds and
tests/reader/test_transform.py hold to.

    PYTHONPATH=. .venv/bin/python bench/bench_reader_diffs.py [--images 3] [--seeds 4]
"""

from __future__ import annotations

import argparse

import numpy as np

from imgcls.data import transforms as T
from imgcls.data.resize_window import eval_window

SIZES = {"500x375": (375, 500), "1024x768": (768, 1024), "2048x1536": (1536, 2048)}
OUT, SHORT = 224, 256
MODES = (  # (transform, --dct_scaling setting that gives it, train, DCT-scaled decoding allowed)
    ("train", "train / all (default)", True, True),
    ("train", "none", True, False),
    ("val", "train / none (default)", False, False),
    ("val", "all", False, True),
)


def corpus(height: int, width: int, content: str, count: int) -> list[bytes]:
    """``count`` JPEGs of one content kind, baseline 4:2:0, alternating quality 90 and 75."""
    from imgcls import _reader
    from tests import jpeg_corpus

    make = jpeg_corpus.textured_photo if content == "textured" else jpeg_corpus.synthetic_photo
    return [_reader.encode(make(height, width, seed=2000 + i), 90 if i % 2 == 0 else 75, "420") for i in range(count)]


def mode_differences(images: list[bytes], train: bool, dct: bool, seeds: int) -> tuple[int, int, list[float], int]:
    """(DCT-scaled samples, samples, mean |diff| per sample, max |diff|) of one mode over ``images``."""
    from imgcls import _reader

    scaled, count, means, worst = 0, 0, [], 0
    for data in images:
        ref_img = T.decode_image(data)
        h, w = ref_img.shape[:2]
        for seed in range(seeds if train else 1):
            if train:
                p = T.sample_train_params(h, w, seed, T.AugConfig())
                scale = _reader.choose_scale(p.w, p.h, OUT, OUT)
                ref = T.train_transform(ref_img, seed, OUT)
            else:
                window = eval_window(h, w, SHORT, OUT)
                scale = _reader.choose_scale(w, h, window.new_w, window.new_h)
                ref = T.val_transform(ref_img, OUT, SHORT)
            ours = _reader.transform(data, seed, train, OUT, SHORT, dct_scaling=dct)
            diff = np.abs(ours.astype(int) - ref)
            scaled += dct and scale > 1
            count += 1
            means.append(float(diff.mean()))
            worst = max(worst, int(diff.max()))
    return scaled, count, means, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3, help="images per (size, content)")
    parser.add_argument("--seeds", type=int, default=4, help="train samples per image")
    args = parser.parse_args()
    print(
        "| images | content | transform | --dct_scaling | DCT-scaled samples | mean abs diff (avg) | "
        "mean abs diff (worst sample) | max abs diff |\n|---|---|---|---|---|---|---|---|"
    )
    for size_name, (h, w) in SIZES.items():
        for content in ("photo", "textured"):
            images = corpus(h, w, content, args.images)
            for label, setting, train, dct in MODES:
                scaled, count, means, worst = mode_differences(images, train, dct, args.seeds)
                print(
                    f"| {size_name} | {content} | {label} | {setting} | {scaled}/{count} | {np.mean(means):.2f} | "
                    f"{max(means):.2f} | {worst} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
