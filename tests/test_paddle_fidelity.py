"""Each reader's default eval transform equals Paddle's val reader bit for bit.

``paddle_val_reader`` is a transcription of the eval path of Paddle's image-classification ``reader.py``
(``process_image`` with ``mode='val'``: ``cv2.imread``, ``resize_short`` with cv2's default bilinear and Python's
``round()``, ``crop_image(center=True)``, then BGR to RGB). It is compared with both readers, for every
(crop, resize_short) pair the model zoo uses, on generated images of many shapes and JPEG kinds and on the photographs
matplotlib ships. The native reader is required: without it this fails under CI.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from imgcls.data.preprocess import PreprocessSpec
from imgcls.data.readers import make_reader
from imgcls.models import get_model_cfg, list_models

from . import jpeg_corpus
from .conftest import require_native

# (crop, resize_short) of every registered model, read from the registry so that a new pair is covered at once.
ZOO_PAIRS = sorted({(get_model_cfg(n).input_size, get_model_cfg(n).resize_short) for n in list_models()})
# (height, width): odd, portrait, landscape, square, tiny, thin, one exact 2x reduction (512 -> 256), one large.
SHAPES = [(183, 251), (301, 199), (375, 500), (640, 427), (512, 512), (17, 9), (1, 1), (3, 700), (600, 2), (1536, 2048)]
KINDS = ("baseline_420", "baseline_444", "progressive_420", "gray", "cmyk", "png")


def paddle_val_reader(path: str, resize_short_size: int, crop_size: int) -> np.ndarray:
    """Paddle reader.py, mode='val' (resize_short, crop_image(center=True), img[:, :, ::-1]); uint8 HxWx3 RGB."""
    img = cv2.imread(path)
    percent = float(resize_short_size) / min(img.shape[0], img.shape[1])
    resized_width = int(round(img.shape[1] * percent))
    resized_height = int(round(img.shape[0] * percent))
    img = cv2.resize(img, (resized_width, resized_height))
    height, width = img.shape[:2]
    w_start = (width - crop_size) // 2
    h_start = (height - crop_size) // 2
    img = img[h_start : h_start + crop_size, w_start : w_start + crop_size, :]
    return img[:, :, ::-1]


def write_kind(folder: Path, rgb: np.ndarray, kind: str, name: str) -> str:
    """``rgb`` saved as one JPEG kind (libjpeg-turbo's encoder, which has every option) or as PNG."""
    from imgcls import _reader

    path = folder / f"{name}_{kind}.{'png' if kind == 'png' else 'jpg'}"
    if kind == "png":
        cv2.imwrite(str(path), rgb[..., ::-1])
    elif kind == "gray":
        path.write_bytes(_reader.encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 90))
    elif kind == "cmyk":  # Adobe-style inverted CMYK, as Photoshop writes it
        cmyk = 255 - np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 40, np.uint8)], axis=-1)
        path.write_bytes(_reader.encode(cmyk, 90))
    else:
        _, subsampling = kind.split("_")
        path.write_bytes(_reader.encode(rgb, 88, subsampling, progressive=kind.startswith("progressive")))
    return str(path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> list[str]:
    require_native()  # the encoder of the JPEG kinds; the native reader is checked below
    folder = tmp_path_factory.mktemp("fidelity")
    paths = []
    for i, (h, w) in enumerate(SHAPES):
        rgb = (
            jpeg_corpus.synthetic_photo(h, w, seed=i)
            if min(h, w) > 4
            else np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        )
        kinds = KINDS if h * w < 1_000_000 else ("baseline_420",)  # the large one once (CPU time)
        paths += [write_kind(folder, rgb, kind, f"{h}x{w}") for kind in kinds]
    return paths


def photographs() -> list[str]:
    """The sample photographs matplotlib ships (requirements.txt pins it): real camera JPEG and PNGs."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "sample_data"
    paths = [str(folder / name) for name in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png")]
    assert all(Path(p).is_file() for p in paths), paths
    return paths


def eval_pixels(kind: str, paths: list[str], crop: int, short: int) -> np.ndarray:
    reader = make_reader(kind, PreprocessSpec(crop, short, (0.5,) * 3, (0.25,) * 3), train=False, num_threads=2)
    out = np.zeros((len(paths), crop, crop, 3), np.uint8)
    try:
        errors = reader.read_batch(paths, [0] * len(paths), out)
    finally:
        reader.close()
    assert errors == [None] * len(paths), [(p, e) for p, e in zip(paths, errors) if e]
    return out


def assert_paddle_exact(kind: str, paths: list[str]) -> None:
    for crop, short in ZOO_PAIRS:
        out = eval_pixels(kind, paths, crop, short)
        for path, ours in zip(paths, out):
            want = paddle_val_reader(path, short, crop)
            diff = np.abs(ours.astype(int) - want)
            assert diff.max() == 0, f"{kind} {Path(path).name} {crop}/{short}: {np.count_nonzero(diff)} values differ"


def test_zoo_pairs_are_the_known_ones():
    """The pairs the zoo uses (Inception/Xception 299/320, DarkNet53 256/256, the WSL Fix model 320/320)."""
    assert ZOO_PAIRS == [(224, 256), (256, 256), (299, 320), (320, 320)]


@pytest.mark.parametrize("kind", ["opencv", "native"])
def test_eval_equals_paddle_val_reader_on_generated_images(kind, generated):
    if kind == "native":
        require_native()
    assert_paddle_exact(kind, generated)


@pytest.mark.parametrize("kind", ["opencv", "native"])
def test_eval_equals_paddle_val_reader_on_photographs(kind):
    if kind == "native":
        require_native()
    assert_paddle_exact(kind, photographs())


def test_dct_scaled_eval_is_opt_in_and_differs():
    """``dct_scaling="all"`` is the fast eval decode: it is not Paddle's pixels (why it is not the default)."""
    require_native()
    path = photographs()[0]  # 600 x 512: 1/2 scale still covers the 256 short side
    spec = PreprocessSpec(224, 256, (0.5,) * 3, (0.25,) * 3)
    out = np.zeros((1, 224, 224, 3), np.uint8)
    reader = make_reader("native", spec, train=False, dct_scaling="all")
    assert reader.read_batch([path], [0], out) == [None]
    assert np.count_nonzero(out[0].astype(int) - paddle_val_reader(path, 256, 224)) > 0
    with pytest.raises(ValueError, match="dct_scaling"):
        make_reader("opencv", spec, train=False, dct_scaling="fast")


def test_dct_scaling_none_trains_on_the_reference_pixels(tmp_path):
    """``make_reader(..., dct_scaling="none")``: the native train transform equals the OpenCV reader's, bit for bit,
    on textured content where the default (DCT-scaled) one differs."""
    require_native()
    from imgcls import _reader

    path = tmp_path / "textured.jpg"
    path.write_bytes(_reader.encode(jpeg_corpus.textured_photo(768, 1024, seed=3), 90, "420"))
    spec = PreprocessSpec(224, 256, (0.5,) * 3, (0.25,) * 3)
    paths, seeds = [str(path)] * 8, list(range(8))
    out = {}
    for kind, mode in (("opencv", "train"), ("native", "none"), ("native", "train")):
        reader = make_reader(kind, spec, train=True, dct_scaling=mode)
        out[kind, mode] = np.zeros((8, 224, 224, 3), np.uint8)
        assert reader.read_batch(paths, seeds, out[kind, mode]) == [None] * 8
    assert np.array_equal(out["native", "none"], out["opencv", "train"])
    assert not np.array_equal(out["native", "train"], out["opencv", "train"])


def test_the_flag_reaches_the_readers(tmp_path):
    """--dct_scaling -> ReadConfig -> the CLIs' loaders -> the native reader of each transform."""
    from imgcls.cli.data import make_loader
    from imgcls.cli.layering import read_config
    from imgcls.config import RunConfig
    from imgcls.data.datasets import Sample

    from .cli_helpers import parse_train

    require_native()
    assert read_config(parse_train("--model=ResNet50")).dct_scaling == "train"
    spec = PreprocessSpec(32, 36, (0.5,) * 3, (0.25,) * 3)
    for mode, train_scaled, eval_scaled in (("train", True, False), ("all", True, True), ("none", False, False)):
        read = read_config(parse_train("--model=ResNet50", f"--dct_scaling={mode}", "--reader=native"))
        config = RunConfig("ResNet50", 2, spec, 1, read=read)
        for train, want in ((True, train_scaled), (False, eval_scaled)):
            loader = make_loader(config, [Sample(str(tmp_path / "a.jpg"), 0)], train=train, batch_size=1)
            assert loader.reader.dct_scaling is want, (mode, train)
            loader.close()
