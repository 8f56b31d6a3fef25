"""Thin images: memory bounded by the output for any aspect ratio, in both readers, train and eval, and in infer.

The eval transform of a 1 x 20000 image at resize_short 256 would resize to 256 x 5,120,000 (3.9 GB) before its
224 x 224 crop; the readers compute the crop alone (imgcls/data/resize_window.py, csrc/resize_fixed.h). Checked
under an address-space limit far below that intermediate; and where Paddle's own full resize is affordable (a
1 x 1000 image), the crop-alone result is Paddle's, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from imgcls.data.preprocess import PreprocessSpec
from imgcls.data.readers import make_reader

from .cli_helpers import MODEL, run_limited, run_python_limited
from .conftest import require_native
from .test_paddle_fidelity import paddle_val_reader

ALLOWANCE = 400 << 20  # the smallest full resize here (1 x 20000 at 256) needs 3.9 GB
THIN = [(1, 20000), (1, 65000), (20000, 1)]

READ_ALL = """
import numpy as np
from imgcls.data.preprocess import PreprocessSpec
from imgcls.data.readers import make_reader
kind, paths = sys.argv[1], sys.argv[2:]
spec = PreprocessSpec(224, 256, (0.5,) * 3, (0.25,) * 3)
for train in (False, True):
    reader = make_reader(kind, spec, train=train, num_threads=1)
    out = np.zeros((len(paths), 224, 224, 3), np.uint8)
    errors = reader.read_batch(paths, list(range(len(paths))), out)
    assert errors == [None] * len(paths), errors
    reader.close()
print("read", len(paths), "thin images")
"""


def thin_pixels(height: int, width: int) -> np.ndarray:
    """A color ramp with a little noise: every resized value differs from its neighbours."""
    rng = np.random.default_rng(height + width)
    ramp = np.linspace(0, 255, height * width).reshape(height, width, 1)
    return np.clip(ramp + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)


def write_thin(folder: Path, height: int, width: int, jpeg: bool) -> str:
    path = folder / f"thin_{height}x{width}.{'jpg' if jpeg else 'png'}"
    rgb = thin_pixels(height, width)
    if jpeg:
        from imgcls import _reader

        path.write_bytes(_reader.encode(rgb, 90, "444"))
    else:
        cv2.imwrite(str(path), rgb[..., ::-1])
    return str(path)


@pytest.fixture(scope="module")
def thin_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("thin")
    paths = [write_thin(folder, h, w, jpeg=False) for h, w in THIN]
    try:
        import imgcls._reader  # noqa: F401  (the JPEG encoder)
    except ImportError:
        return paths
    return paths + [write_thin(folder, h, w, jpeg=True) for h, w in THIN]


@pytest.mark.parametrize("kind", ["opencv", "native"])
def test_thin_images_read_in_bounded_memory(kind, thin_files):
    if kind == "native":
        require_native()
    run = run_python_limited(READ_ALL, [kind, *thin_files], ALLOWANCE)
    assert run.returncode == 0 and f"read {len(thin_files)} thin images" in run.stdout, run.stderr[-3000:]


@pytest.mark.parametrize("reader", ["opencv", "native"])
def test_infer_on_thin_images_in_bounded_memory(reader, thin_files, tmp_path):
    if reader == "native":
        require_native()
    import torch

    from imgcls.models import create_model

    weights = tmp_path / "w.pt"
    torch.save(create_model(MODEL, num_classes=10).state_dict(), weights)
    flags = [f"--model={MODEL}", f"--pretrained_model={weights}", f"--reader={reader}", "--reader_thread=1"]
    run = run_limited("imgcls.infer", [*flags, "--image", *thin_files], 1 << 30)
    assert run.returncode == 0, run.stderr[-3000:]
    predicted = [line.split(": ", 1)[0] for line in run.stdout.splitlines() if not line.startswith("skipped ")]
    assert "skipped " not in run.stdout and all(p in predicted for p in thin_files), run.stdout[-3000:]


@pytest.mark.parametrize("kind", ["opencv", "native"])
def test_thin_eval_is_paddles_full_resize_bit_for_bit(kind, tmp_path):
    if kind == "native":
        require_native()
    paths = [write_thin(tmp_path, h, w, jpeg=False) for h, w in ((1, 1000), (1000, 2), (3, 600))]
    if kind == "native":
        paths += [write_thin(tmp_path, h, w, jpeg=True) for h, w in ((1, 1000), (1000, 2))]
    reader = make_reader(kind, PreprocessSpec(224, 256, (0.5,) * 3, (0.25,) * 3), train=False)
    out = np.zeros((len(paths), 224, 224, 3), np.uint8)
    assert reader.read_batch(paths, [0] * len(paths), out) == [None] * len(paths)
    for path, ours in zip(paths, out):
        assert np.array_equal(ours, paddle_val_reader(path, 256, 224)), path


def test_thin_image_with_another_interpolation_is_a_per_image_error(thin_files):
    """Only bilinear can compute the crop alone: cubic refuses the image (one message) instead of allocating."""
    from imgcls.data.transforms import AugConfig

    spec = PreprocessSpec(224, 256, (0.5,) * 3, (0.25,) * 3, AugConfig(interpolation="cubic"))
    reader = make_reader("opencv", spec, train=False)
    errors = reader.read_batch(thin_files[:1], [0], np.zeros((1, 224, 224, 3), np.uint8))
    assert errors[0] is not None and "1x20000 image" in errors[0] and "bilinear" in errors[0], errors
