"""The C++ reader's per-sample randomness and geometry: bit-identical to transforms.py."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls import randomness
from imgcls.data import transforms as T

from .helpers import FULL_AUG, _reader, aug_kwargs

pytestmark = pytest.mark.usefixtures("needs_native")


def test_train_params_identical_to_python():
    rng = np.random.default_rng(0)
    configs = [T.AugConfig(), T.AugConfig(lower_scale=0.5, lower_ratio=0.5, upper_ratio=2.0, **FULL_AUG)]
    for i in range(6000):
        cfg = configs[i % 2]
        h, w = (int(v) for v in rng.integers(1, 4000, 2))
        if i % 7 == 0:
            h = int(rng.integers(1, 4))  # degenerate strips
        seed = randomness.sample_seed(int(rng.integers(0, 2**63)), i, int(rng.integers(0, 2**40)))
        p = T.sample_train_params(h, w, seed, cfg)
        want = (p.x, p.y, p.w, p.h, p.flip, p.angle, p.brightness, p.contrast, p.saturation, p.hue)
        assert _reader.train_params(h, w, seed, **aug_kwargs(cfg)) == want, (h, w, seed)


def test_sample_seed_identical_to_python():
    for r, e, i in [(0, 0, 0), (1, 2, 3), (2**64 - 1, 7, 2**63), (12345, 89, 1_281_166)]:
        assert _reader.sample_seed(r, e, i) == randomness.sample_seed(r, e, i)


def test_choose_scale_keeps_crop_at_least_output():
    assert _reader.choose_scale(500, 375, 224, 224) == 1
    assert _reader.choose_scale(448, 448, 224, 224) == 2
    assert _reader.choose_scale(2048, 1536, 341, 256) == 4
    assert _reader.choose_scale(1792, 1792, 224, 224) == 8
