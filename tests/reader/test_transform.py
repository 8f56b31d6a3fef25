"""The C++ resampler and transforms against cv2.resize and the OpenCV reference (transforms.py), within the
documented bounds.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgcls.data import transforms as T
from imgcls.data.readers.native import (
    MAX_DIFF_DCT,
    MAX_DIFF_FULL_SCALE,
    MAX_DIFF_ROTATE,
    MEAN_DIFF_DCT,
)

from .. import jpeg_corpus
from .helpers import FULL_AUG, _reader, aug_kwargs

pytestmark = pytest.mark.usefixtures("needs_native")


@pytest.mark.parametrize("interpolation", ["linear", "area"])
def test_resize_vectorized_equals_reference_and_cv2(interpolation):
    """Random noise (the worst case for rounding), shrinking and enlarging, odd sizes, flipped or not."""
    rng = np.random.default_rng(11)
    flag = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_AREA
    for i in range(150):
        h, w, out_h, out_w = (int(v) for v in rng.integers(1, 130, 4))
        src = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        flip = i % 2 == 1
        fast = _reader.resize(src, out_w, out_h, interpolation, flip, vectorized=True)
        ref = _reader.resize(src, out_w, out_h, interpolation, flip, vectorized=False)
        assert np.array_equal(fast, ref), (h, w, out_h, out_w, flip)
        want = cv2.resize(src, (out_w, out_h), interpolation=flag)
        want = want[:, ::-1] if flip else want
        assert np.abs(fast.astype(int) - want).max() <= MAX_DIFF_FULL_SCALE, (h, w, out_h, out_w, flip)


# ---- transforms vs the OpenCV reference -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aug,bound",
    [
        (dict(), 0),  # bilinear at 1/1: OpenCV's fixed-point arithmetic
        (dict(interpolation="area"), MAX_DIFF_FULL_SCALE),
        (dict(lower_scale=0.02, lower_ratio=0.3, upper_ratio=3.0), 0),
        (FULL_AUG, MAX_DIFF_ROTATE),
    ],
)
def test_train_transform_matches_reference_at_full_scale(variants, aug, bound):
    cfg = T.AugConfig(**aug)
    for name in ("baseline_420", "progressive_444", "gray"):
        ref_img = T.decode_image(variants[name])
        for seed in range(40):
            for size in (64, 97):
                ours = _reader.transform(
                    variants[name],
                    seed,
                    True,
                    size,
                    dct_scaling=False,
                    interpolation=cfg.interpolation,
                    **aug_kwargs(cfg),
                )
                ref = T.train_transform(ref_img, seed, size, cfg)
                diff = np.abs(ours.astype(int) - ref)
                assert diff.max() <= bound, (name, seed, size, diff.max())
                if aug is FULL_AUG:
                    assert diff.mean() < 0.5


@pytest.mark.parametrize("interpolation", ["linear", "area"])
def test_val_transform_matches_reference(variants, interpolation):
    """Bilinear at 1/1 is OpenCV's fixed-point resize: equal bytes; area keeps float weights (within one level)."""
    bound = 0 if interpolation == "linear" else MAX_DIFF_FULL_SCALE
    for name in ("baseline_420", "baseline_411", "arithmetic_420", "cmyk"):
        ref_img = T.decode_image(variants[name])
        for size, short in ((64, 73), (97, 97), (150, 183), (33, 200)):
            ours = _reader.transform(
                variants[name], 0, False, size, short, interpolation=interpolation, dct_scaling=False
            )
            ref = T.val_transform(ref_img, size, short, interpolation)
            assert np.abs(ours.astype(int) - ref).max() <= bound, (name, size, short)


@pytest.mark.parametrize("interpolation", ["linear", "area"])
@pytest.mark.parametrize("content", ["photo", "textured"])
def test_dct_scaled_transform_within_bound(interpolation, content):
    """Decoding at 1/2..1/8 low-passes where cv2's bilinear decimation aliases: bounded mean and max difference, on
    smooth photos and on fine texture, stripes and one-pixel lines (where the bounds were measured)."""
    make = jpeg_corpus.textured_photo if content == "textured" else jpeg_corpus.synthetic_photo
    data = _reader.encode(make(768, 1024, seed=5), 90, "420")
    ref_img = T.decode_image(data)
    cfg = T.AugConfig(interpolation=interpolation)
    means, worst, scaled = [], 0, 0
    for seed in range(30):
        p = T.sample_train_params(768, 1024, seed, cfg)
        scaled += _reader.choose_scale(p.w, p.h, 112, 112) > 1
        ours = _reader.transform(data, seed, True, 112, interpolation=interpolation)
        diff = np.abs(ours.astype(int) - T.train_transform(ref_img, seed, 112, cfg))
        means.append(diff.mean())
        worst = max(worst, int(diff.max()))
    val = _reader.transform(data, 0, False, 112, 128, interpolation=interpolation, dct_scaling=True)
    diff = np.abs(val.astype(int) - T.val_transform(ref_img, 112, 128, interpolation))
    means.append(diff.mean())
    worst = max(worst, int(diff.max()))
    assert scaled >= 10
    assert max(means) < MEAN_DIFF_DCT, max(means)
    assert worst <= MAX_DIFF_DCT, worst


def test_train_without_dct_scaling_is_the_reference_on_textured_content():
    """``--dct_scaling none``: a 1/1 decode, so the train transform is OpenCV's pixels exactly on the content where
    DCT scaling differs most (and within the rotation bound with rotation on)."""
    data = _reader.encode(jpeg_corpus.textured_photo(768, 1024, seed=6), 90, "420")
    ref_img = T.decode_image(data)
    for aug, bound in ((dict(), 0), (FULL_AUG, MAX_DIFF_ROTATE)):
        cfg = T.AugConfig(**aug)
        for seed in range(20):
            ours = _reader.transform(data, seed, True, 224, dct_scaling=False, **aug_kwargs(cfg))
            diff = np.abs(ours.astype(int) - T.train_transform(ref_img, seed, 224, cfg))
            assert diff.max() <= bound, (aug, seed, int(diff.max()))
