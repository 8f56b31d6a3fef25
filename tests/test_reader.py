"""The native JPEG reader (imgcls._reader, csrc/) against the OpenCV reference and libjpeg-turbo itself.

Geometry must be bit-identical to transforms.py; pixels within the documented bounds; every JPEG flavour decodes;
bad files are per-image errors; threads do not change results; memory stays flat.
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgcls.data import transforms as T

_reader = pytest.importorskip("imgcls._reader", reason="native reader not built (python setup.py build_ext)")

from csrc.fuzz import jpeg_zoo  # noqa: E402
from imgcls.data import reader as reader_module  # noqa: E402
from imgcls.data.native_reader import (  # noqa: E402
    MAX_DIFF_DCT,
    MAX_DIFF_FULL_SCALE,
    MAX_DIFF_ROTATE,
    MEAN_DIFF_DCT,
    NativeReader,
)
from imgcls.data.reader import OpenCVReader, jpeg_truncated, make_reader  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FULL_AUG = dict(rotate=10.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return jpeg_zoo.synthetic_photo(183, 251, seed=3)  # odd sizes: partial iMCUs on both axes


@pytest.fixture(scope="module")
def variants(photo) -> dict[str, bytes]:
    return jpeg_zoo.jpeg_variants(photo)


def pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def aug_kwargs(cfg: T.AugConfig) -> dict:
    return dict(
        lower_scale=cfg.lower_scale,
        lower_ratio=cfg.lower_ratio,
        upper_ratio=cfg.upper_ratio,
        flip=cfg.flip,
        rotate=cfg.rotate,
        brightness=cfg.brightness,
        contrast=cfg.contrast,
        saturation=cfg.saturation,
        hue=cfg.hue,
    )


# ---- geometry: bit-identical to transforms.py -------------------------------------------------------------------


def test_train_params_identical_to_python():
    rng = np.random.default_rng(0)
    configs = [T.AugConfig(), T.AugConfig(lower_scale=0.5, lower_ratio=0.5, upper_ratio=2.0, **FULL_AUG)]
    for i in range(6000):
        cfg = configs[i % 2]
        h, w = (int(v) for v in rng.integers(1, 4000, 2))
        if i % 7 == 0:
            h = int(rng.integers(1, 4))  # degenerate strips
        seed = T.sample_seed(int(rng.integers(0, 2**63)), i, int(rng.integers(0, 2**40)))
        p = T.sample_train_params(h, w, seed, cfg)
        want = (p.x, p.y, p.w, p.h, p.flip, p.angle, p.brightness, p.contrast, p.saturation, p.hue)
        assert _reader.train_params(h, w, seed, **aug_kwargs(cfg)) == want, (h, w, seed)


def test_sample_seed_identical_to_python():
    for r, e, i in [(0, 0, 0), (1, 2, 3), (2**64 - 1, 7, 2**63), (12345, 89, 1_281_166)]:
        assert _reader.sample_seed(r, e, i) == T.sample_seed(r, e, i)


def test_choose_scale_keeps_crop_at_least_output():
    assert _reader.choose_scale(500, 375, 224, 224) == 1
    assert _reader.choose_scale(448, 448, 224, 224) == 2
    assert _reader.choose_scale(2048, 1536, 341, 256) == 4
    assert _reader.choose_scale(1792, 1792, 224, 224) == 8


# ---- decode: bit-exact with libjpeg-turbo's full decode ---------------------------------------------------------


def test_decode_bit_exact_with_opencv_and_pillow(variants):
    for name, data in variants.items():
        ours = _reader.decode(data)
        if name in ("cmyk", "ycck"):
            # cv2 approximates C*K/255 with >> 8; Pillow rounds like we do.
            assert np.array_equal(ours, pil_decode(data)), name
            assert np.abs(ours.astype(int) - T.decode_image(data)).max() <= 2, name
        elif name == "junk_between_markers":
            assert np.array_equal(ours, _reader.decode(variants["baseline_420"])), name  # cv2 rejects this one
        else:
            assert np.array_equal(ours, T.decode_image(data)), name
            assert np.array_equal(ours, pil_decode(data)), name


def test_scaled_decode_bit_exact_with_opencv_reduced(variants):
    flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
    for name in ("baseline_420", "baseline_444", "progressive_420", "gray"):
        buf = np.frombuffer(variants[name], np.uint8)
        for s, flag in flags.items():
            ref = cv2.cvtColor(cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION), cv2.COLOR_BGR2RGB)
            assert np.array_equal(_reader.decode(variants[name], scale_denom=s), ref), (name, s)


@pytest.mark.parametrize("name", ["baseline_420", "baseline_422", "baseline_444", "progressive_420", "restart_420"])
def test_region_decode_equals_full_decode(variants, name):
    """Cropped columns + skipped rows: identical to the full decode away from the region's border pixel."""
    data = variants[name]
    rng = np.random.default_rng(1)
    for s in (1, 2):
        full = _reader.decode(data, scale_denom=s)
        h, w = full.shape[:2]
        for _ in range(12):
            x, y = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            rw, rh = int(rng.integers(4, w - x + 1)), int(rng.integers(4, h - y + 1))
            part = _reader.decode(data, scale_denom=s, region=(x, y, rw, rh))
            inner = (slice(1, rh - 1), slice(1, rw - 1))
            assert np.array_equal(part[inner], full[y : y + rh, x : x + rw][inner]), (s, x, y, rw, rh)


# ---- the resampler: vectorised pass == scalar reference, both within one level of cv2.resize ----------------------


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
        (dict(), MAX_DIFF_FULL_SCALE),
        (dict(interpolation="area"), MAX_DIFF_FULL_SCALE),
        (dict(lower_scale=0.02, lower_ratio=0.3, upper_ratio=3.0), MAX_DIFF_FULL_SCALE),
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
    for name in ("baseline_420", "baseline_411", "arithmetic_420", "cmyk"):
        ref_img = pil_decode(variants[name]) if name == "cmyk" else T.decode_image(variants[name])
        for size, short in ((64, 73), (97, 97), (150, 183), (33, 200)):
            ours = _reader.transform(
                variants[name], 0, False, size, short, interpolation=interpolation, dct_scaling=False
            )
            ref = T.val_transform(ref_img, size, short, interpolation)
            assert np.abs(ours.astype(int) - ref).max() <= MAX_DIFF_FULL_SCALE, (name, size, short)


@pytest.mark.parametrize("interpolation", ["linear", "area"])
def test_dct_scaled_transform_within_bound(interpolation):
    """Decoding at 1/2..1/8 low-passes where cv2's bilinear decimation aliases: bounded mean and max difference."""
    data = _reader.encode(jpeg_zoo.synthetic_photo(768, 1024, seed=5), 90, "420")
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
    val = _reader.transform(data, 0, False, 112, 128, interpolation=interpolation)
    diff = np.abs(val.astype(int) - T.val_transform(ref_img, 112, 128, interpolation))
    means.append(diff.mean())
    worst = max(worst, int(diff.max()))
    assert scaled >= 10
    assert max(means) < MEAN_DIFF_DCT, max(means)
    assert worst <= MAX_DIFF_DCT, worst


# ---- bad files: per-image errors, never a crash -----------------------------------------------------------------


def set_sof_field(data: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite bytes of the SOF0/SOF2 segment (offset counted from the marker's FF)."""
    at = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    return data[: at + offset] + value + data[at + offset + len(value) :]


def test_bad_files_raise_clear_errors(variants):
    base = variants["baseline_420"]
    cases = {
        "12-bit": set_sof_field(base, 4, b"\x0c"),
        "huge": set_sof_field(base, 5, struct.pack(">HH", 60000, 60000)),
        "truncated": base[: len(base) // 2],
        "corrupt": base[:700] + bytes(range(256)) * 4 + base[700 + 1024 :],
        "header only": base[:300],
        "empty": b"\xff\xd8\xff",
    }
    calls = {
        "train": lambda d: _reader.transform(d, 1, True, 64),
        "val": lambda d: _reader.transform(d, 1, False, 64),
        "decode": lambda d: _reader.decode(d),
    }
    for name, data in cases.items():
        for call_name, call in calls.items():
            try:
                call(data)
            except ValueError as e:
                assert str(e), (name, call_name)
            else:
                raise AssertionError(f"{call_name} accepted the {name} file")
    with pytest.raises(ValueError, match="not a JPEG"):
        _reader.decode(b"\x89PNG\r\n\x1a\n")


def exif_orientation_jpeg(data: bytes, orientation: int) -> bytes:
    """Insert an APP1 EXIF segment holding one Orientation tag after SOI."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += b"\x00\x00\x00\x00"
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


@pytest.fixture()
def files(tmp_path, variants, photo) -> dict[str, str]:
    paths = {}
    for name, data in variants.items():
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(data)
    paths["png"] = tmp_path / "image.png"
    cv2.imwrite(str(paths["png"]), photo[..., ::-1])
    paths["truncated"] = tmp_path / "truncated.jpg"
    paths["truncated"].write_bytes(variants["baseline_420"][:5000])
    paths["exif6"] = tmp_path / "exif6.jpg"
    paths["exif6"].write_bytes(exif_orientation_jpeg(variants["baseline_444"], 6))
    paths["missing"] = tmp_path / "missing.jpg"
    return {k: str(v) for k, v in paths.items()}


# ---- the batch reader -------------------------------------------------------------------------------------------


def test_batch_reader_matches_single_image_and_thread_count(files):
    names = [n for n in files if n not in ("truncated", "missing")] * 3
    paths = [files[n] for n in names]
    seeds = [T.sample_seed(7, 0, i) for i in range(len(paths))]
    cfg = T.AugConfig(**FULL_AUG)
    outs = []
    for threads in (1, 2, 3):
        reader = NativeReader(True, 80, 92, cfg, num_threads=threads)
        out = np.zeros((len(paths), 80, 80, 3), np.uint8)
        assert reader.read_batch(paths, seeds, out) == [None] * len(paths)
        reader.close()
        outs.append(out)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    with pytest.raises(RuntimeError, match="closed"):  # not a silent switch to the OpenCV path
        reader.read_batch(paths, seeds, np.zeros((len(paths), 80, 80, 3), np.uint8))
    for i, name in enumerate(names):
        data = Path(paths[i]).read_bytes()
        if name == "png":  # through the OpenCV reference
            ref = T.train_transform(T.decode_image(data), seeds[i], 80, cfg)
        else:
            ref = _reader.transform(data, seeds[i], True, 80, **aug_kwargs(cfg))
        assert np.array_equal(outs[0][i], ref), name


def test_batch_reader_reports_bad_images_and_keeps_going(files):
    # resize_short near the short side (183): a 1/1 decode, so the bound is the full-scale one.
    reader = make_reader("native", train=False, size=128, resize_short=150, aug=T.AugConfig(), num_threads=2)
    assert isinstance(reader, NativeReader)
    order = ["baseline_420", "truncated", "missing", "png", "gray"]
    out = np.zeros((len(order), 128, 128, 3), np.uint8)
    errors = reader.read_batch([files[n] for n in order], [0] * len(order), out)
    assert errors[0] is None and errors[3] is None and errors[4] is None
    assert "truncated" in errors[1] and "cannot open" in errors[2]
    ref = OpenCVReader(False, 128, 150, T.AugConfig())
    ref_out = np.zeros_like(out)
    ref_errors = ref.read_batch([files[n] for n in order], [0] * len(order), ref_out)
    assert [e is None for e in errors] == [e is None for e in ref_errors]
    assert np.abs(out.astype(int) - ref_out).max() <= MAX_DIFF_FULL_SCALE


@pytest.mark.parametrize("threads", [1, 2])
def test_normalized_batch_equals_python_normalization(files, threads):
    """read_batch_normalized == read_batch + the loader's (x * 1 / (255 std)) + (-mean / std), bit for bit."""
    import torch

    from imgcls.data.native_reader import normalize_chw

    names = ["baseline_420", "png", "missing", "progressive_444", "gray", "cmyk"]
    paths = [files[n] for n in names]
    seeds = [T.sample_seed(3, 1, i) for i in range(len(paths))]
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    scale, shift = 1.0 / (255.0 * std), -torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) / std
    reader = NativeReader(True, 72, 80, T.AugConfig(**FULL_AUG), num_threads=threads)
    pixels = np.zeros((len(paths), 72, 72, 3), np.uint8)
    errors = reader.read_batch(paths, seeds, pixels)
    out = np.full((len(paths), 3, 72, 72), np.nan, np.float32)
    assert reader.read_batch_normalized(paths, seeds, out, scale.view(3).numpy(), shift.view(3).numpy()) == errors
    assert errors[2] is not None and sum(e is None for e in errors) == len(paths) - 1
    want = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().mul_(scale).add_(shift).numpy()
    ok = [i for i, e in enumerate(errors) if e is None]
    assert np.array_equal(out[ok], want[ok])
    assert np.array_equal(normalize_chw(pixels[0], scale.view(3).numpy(), shift.view(3).numpy()), want[0])
    with pytest.raises(ValueError, match="float32"):
        reader.read_batch_normalized(paths, seeds, out.astype(np.float64), scale.view(3).numpy(), shift.view(3).numpy())
    reader.close()


def test_normalized_batch_through_opencv_for_other_interpolations(files):
    """An interpolation the C++ reader lacks: both entries go through OpenCV, and still agree."""
    from imgcls.data.native_reader import normalize_chw

    with pytest.warns(UserWarning, match="reading with OpenCV"):
        reader = NativeReader(False, 40, 48, T.AugConfig(interpolation="cubic"))
    paths = [files["baseline_420"], files["missing"]]
    pixels = np.zeros((2, 40, 40, 3), np.uint8)
    out = np.zeros((2, 3, 40, 40), np.float32)
    scale, shift = np.array([0.1, 0.2, 0.3], np.float32), np.array([-1.0, 0.0, 1.0], np.float32)
    errors = reader.read_batch(paths, [0, 0], pixels)
    assert reader.read_batch_normalized(paths, [0, 0], out, scale, shift) == errors
    assert errors[0] is None and errors[1] is not None
    assert np.array_equal(pixels[0], T.val_transform(T.decode_image(Path(paths[0]).read_bytes()), 40, 48, "cubic"))
    assert np.array_equal(out[0], normalize_chw(pixels[0], scale, shift))


def test_loader_batches_from_normalized_reader_equal_uint8_path(files):
    """The loader's native path (normalize in C++) gives the batches of its uint8 path; bad images dropped alike."""
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader

    names = ["baseline_420", "missing", "png", "progressive_420", "gray"]
    samples = [Sample(files[n], i) for i, n in enumerate(names)]
    args = dict(train=True, batch_size=5, size=48, resize_short=56, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    loader = Loader(samples, **args, aug=T.AugConfig(), random_seed=1, num_workers=2, prefetch=1, reader="native")
    assert hasattr(loader.reader, "read_batch_normalized")
    indices = np.arange(len(samples))
    images, labels = loader.load_batch(indices, epoch=0)
    native = loader.reader
    loader.reader = Uint8Only(native)
    want_images, want_labels = loader.load_batch(indices, epoch=0)
    assert images.shape == (4, 3, 48, 48) and torch_equal(images, want_images) and torch_equal(labels, want_labels)
    assert [p for p, _ in loader.skipped] == [files["missing"]] * 2
    native.close()


class Uint8Only:
    """The native reader without read_batch_normalized: the loader takes its uint8 + torch normalization path."""

    def __init__(self, reader: NativeReader):
        self.read_batch = reader.read_batch


def torch_equal(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())


@pytest.mark.parametrize("train", [False, True], ids=["val", "train"])
def test_exif_orientation_raw_by_default_applied_on_request(files, train):
    """Both readers, through make_reader: raw pixels by default, the EXIF rotation with apply_exif=True."""
    data = Path(files["exif6"]).read_bytes()
    paths, seeds = [files["exif6"], files["baseline_420"]], [5, 6]
    outs = {}
    for kind in ("native", "opencv"):
        for apply_exif in (False, True):
            reader = make_reader(
                kind, train=train, size=96, resize_short=150, aug=T.AugConfig(), num_threads=2, apply_exif=apply_exif
            )
            out = np.zeros((2, 96, 96, 3), np.uint8)
            assert reader.read_batch(paths, seeds, out) == [None, None]
            reader.close()
            outs[kind, apply_exif] = out
    img_raw, img_rotated = T.decode_image(data), T.decode_image(data, apply_exif=True)
    if train:
        raw, rotated = (T.train_transform(img, 5, 96, T.AugConfig()) for img in (img_raw, img_rotated))
    else:
        raw, rotated = (T.val_transform(img, 96, 150) for img in (img_raw, img_rotated))
    assert not np.array_equal(raw, rotated)
    assert np.array_equal(outs["opencv", False][0], raw) and np.array_equal(outs["opencv", True][0], rotated)
    assert np.abs(outs["native", False][0].astype(int) - raw).max() <= MAX_DIFF_FULL_SCALE
    assert np.array_equal(outs["native", True][0], rotated)  # through the OpenCV path, exactly
    # An image without the tag is read alike either way.
    assert np.array_equal(outs["native", True][1], outs["native", False][1])
    assert np.array_equal(outs["opencv", True][1], outs["opencv", False][1])


def test_loader_passes_apply_exif(files):
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader

    args = dict(train=False, batch_size=1, size=64, resize_short=80, mean=(0.5,) * 3, std=(0.25,) * 3)
    for kind in ("native", "opencv"):
        loader = Loader(
            [Sample(files["exif6"], 0)],
            **args,
            aug=T.AugConfig(),
            random_seed=0,
            num_workers=1,
            prefetch=1,
            reader=kind,
            apply_exif=True,
        )
        assert loader.reader.apply_exif
        loader.close()


def test_rss_flat_over_many_decodes(variants):
    """Good and bad images alike: memory must not grow (the 100k-decode run is csrc/fuzz/rss_check.py)."""

    def rss_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    inputs = list(variants.values()) + [variants["baseline_420"][:3000], b"\xff\xd8\xff\xe0garbage"]

    def run(n: int) -> None:
        for i in range(n):
            try:
                _reader.transform(inputs[i % len(inputs)], i, i % 2 == 0, 48, 56)
            except ValueError:
                pass

    run(300)  # warm up allocator pools and per-thread buffers
    before = rss_kb()
    run(1500)
    assert rss_kb() - before < 4096, "RSS grew by more than 4 MiB over 1500 decodes"


def test_rss_flat_over_many_batches(files):
    """The batch reader too (its threads' decoders and buffers, bad files in every batch): RSS must not grow."""

    def rss_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    names = [n for n in files if n != "png"]  # every JPEG flavour, a truncated and a missing file
    paths = [files[n] for n in names]
    reader = NativeReader(True, 48, 56, T.AugConfig(**FULL_AUG), num_threads=2)
    out = np.zeros((len(paths), 48, 48, 3), np.uint8)

    def run(batches: int) -> None:
        for b in range(batches):
            errors = reader.read_batch(paths, list(range(b * len(paths), (b + 1) * len(paths))), out)
            assert sum(e is not None for e in errors) == 2

    run(20)
    before = rss_kb()
    run(100)  # ~1,700 images
    growth = rss_kb() - before
    reader.close()
    assert growth < 4096, f"RSS grew by {growth} KiB over 100 batches"


def test_bounded_fuzz_no_crash(variants):
    """A short in-process mutation run (the ASan/libFuzzer run is csrc/fuzz/run_fuzz.sh)."""
    rng = np.random.default_rng(2024)
    seeds = list(jpeg_zoo.jpeg_variants(jpeg_zoo.synthetic_photo(24, 40, seed=9)).values())
    for i in range(400):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(0, len(data)))
            data[at] = int(rng.integers(0, 256))
        if i % 5 == 0:
            data = data[: int(rng.integers(2, len(data)))]
        for fn in (
            lambda d, i=i: _reader.decode(d),
            lambda d, i=i: _reader.transform(d, i, True, 32),
            lambda d, i=i: _reader.transform(d, i, False, 32, 40),
        ):
            try:
                out = fn(bytes(data))
                assert out.dtype == np.uint8
            except ValueError:
                pass


# ---- concurrency, exceptions and decoder state -------------------------------------------------------------------


def test_batch_reader_shared_by_two_python_threads(files):
    """Two threads calling one reader: calls are serialized, each gets its own batch right (and none hangs)."""
    names = ["baseline_420", "progressive_444", "gray", "cmyk", "restart_420", "baseline_411"]
    paths = [files[n] for n in names]
    reader = NativeReader(True, 56, 64, T.AugConfig(**FULL_AUG), num_threads=2)
    want = {}
    for t in range(2):
        seeds = [T.sample_seed(t, 0, i) for i in range(len(paths))]
        want[t] = np.zeros((len(paths), 56, 56, 3), np.uint8)
        assert reader.read_batch(paths, seeds, want[t]) == [None] * len(paths)
    failures: list[str] = []

    def work(t: int) -> None:
        seeds = [T.sample_seed(t, 0, i) for i in range(len(paths))]
        out = np.zeros_like(want[t])
        for _ in range(40):
            out[:] = 0
            if reader.read_batch(paths, seeds, out) != [None] * len(paths) or not np.array_equal(out, want[t]):
                failures.append(f"thread {t}: wrong batch")
                return

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "read_batch hung with two callers"
    assert not failures, failures
    reader.close()


def test_decoder_usable_after_a_failed_image(variants):
    """An error after the header (center crop larger than the image) must not leave the thread's decoder stuck."""
    data = variants["baseline_420"]
    with pytest.raises(ValueError, match="larger than the resized image"):
        _reader.transform(data, 0, False, 300, 256)
    assert _reader.transform(data, 0, False, 64, 80).shape == (64, 64, 3)


# Runs in a child process: the address-space limit makes the next big buffer fail with std::bad_alloc.
_BAD_ALLOC_SCRIPT = """
import resource, sys, time
import numpy as np
from imgcls import _reader
huge, good = sys.argv[1], sys.argv[2]
spec = dict(train=False, size=1024, resize_short=1024, lower_scale=0.08, lower_ratio=0.75, upper_ratio=4 / 3,
            flip=True, rotate=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, interpolation="linear",
            apply_exif=False, num_threads=1, max_pixels=1 << 32)
reader = _reader.BatchReader(**spec)
out = np.zeros((2, 1024, 1024, 3), np.uint8)
seeds = np.zeros(2, np.uint64)
print([s for s, _ in reader.read_batch([good, good], seeds, out)])  # warm: every buffer of the good image
with open(good, "rb") as f:
    good_bytes = f.read()
_reader.transform(good_bytes, 0, False, 1024, 1024)
time.sleep(0.2)
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (48 << 20), resource.RLIM_INFINITY))
print(reader.read_batch([huge, good], seeds, out))
try:
    with open(huge, "rb") as f:
        _reader.transform(f.read(), 0, False, 1024, 1024, dct_scaling=False, max_pixels=1 << 32)
except MemoryError:
    print("MemoryError")
print(_reader.transform(good_bytes, 0, False, 1024, 1024).shape)
"""


def test_out_of_memory_is_a_per_image_error(tmp_path, variants):
    """std::bad_alloc in a worker becomes that image's error (not std::terminate); the decoder stays usable."""
    base = variants["baseline_420"]
    huge = tmp_path / "huge.jpg"  # header of 40000 x 40000: the region buffer (>= 300 MB) cannot be allocated
    huge.write_bytes(set_sof_field(base, 5, struct.pack(">HH", 40000, 40000)))
    good = tmp_path / "good.jpg"
    good.write_bytes(base)
    run = subprocess.run(
        [sys.executable, "-c", _BAD_ALLOC_SCRIPT, str(huge), str(good)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0] == "[0, 0]"
    assert lines[1] == "[(2, 'out of memory'), (0, '')]", lines[1]
    assert lines[2:] == ["MemoryError", "(1024, 1024, 3)"]


def test_region_overflow_rejected(variants):
    data = variants["baseline_420"]
    with pytest.raises(ValueError, match="outside the 251x183 image"):
        _reader.decode(data, region=(1, 0, 2**31 - 1, 1))
    with pytest.raises(ValueError, match="outside"):
        _reader.decode(data, region=(2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1))
    with pytest.raises(ValueError, match=r"0\.\.2\*\*31-1"):
        _reader.decode(data, region=(0, 0, 2**31, 1))
    assert _reader.decode(data, region=(250, 182, 1, 1)).shape == (1, 1, 3)


# ---- end-of-image detection: trailers are fine, cuts are not -----------------------------------------------------


def with_exif_thumbnail(data: bytes, thumbnail: bytes) -> bytes:
    """An APP1 EXIF segment holding a whole JPEG (a thumbnail, with its own FF D9) after SOI."""
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x00" + thumbnail
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_trailer_after_end_marker_accepted_by_both_readers(tmp_path, variants):
    """MPF / Motion Photo files carry data after the image's FF D9: 8 KiB of it must not read as truncated."""
    rng = np.random.default_rng(8)
    noise = rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    second = _reader.encode(jpeg_zoo.synthetic_photo(64, 80, seed=2), 80, "420")  # MPF: a second JPEG
    trailers = {"noise": noise, "mpf": second + noise[: 8192 - len(second)] if len(second) < 8192 else second}
    trailers["markers"] = b"\xff\xda\x00\x08" + noise[:4000] + b"\xff\xd8" + noise[4000:]  # SOS-, SOI-like bytes
    for name in ("baseline_420", "progressive_444", "restart_420", "arithmetic_420"):
        base = variants[name]
        for kind, trailer in trailers.items():
            assert len(trailer) >= 8192
            data = base + trailer
            assert not jpeg_truncated(data), (name, kind)
            path = tmp_path / f"{name}_{kind}.jpg"
            path.write_bytes(data)
            outs = []
            for reader_kind in ("native", "opencv"):
                reader = make_reader(reader_kind, train=True, size=64, resize_short=72, aug=T.AugConfig())
                out = np.zeros((1, 64, 64, 3), np.uint8)
                assert reader.read_batch([str(path)], [3], out) == [None], (name, kind, reader_kind)
                outs.append(out[0])
            # The trailer changes nothing: each reader gives what it gives for the file without it.
            assert np.array_equal(outs[0], _reader.transform(base, 3, True, 64)), (name, kind)
            assert np.array_equal(outs[1], T.train_transform(T.decode_image(base), 3, 64)), (name, kind)


def test_cut_files_rejected_by_both_readers_even_with_a_thumbnail(variants):
    """A cut anywhere is caught, though the EXIF thumbnail's own FF D9 sits in the file's first segment."""
    thumb = _reader.encode(jpeg_zoo.synthetic_photo(16, 16, seed=4), 80, "420")
    for name in ("baseline_420", "progressive_420", "restart_420"):
        data = with_exif_thumbnail(variants[name], thumb)
        assert not jpeg_truncated(data)
        assert _reader.transform(data, 0, True, 32).shape == (32, 32, 3)
        for cut in np.linspace(len(thumb) + 40, len(data) - 1, 25).astype(int):
            part = data[:cut]
            assert jpeg_truncated(part), (name, cut)
            with pytest.raises(ValueError, match="truncated"):
                _reader.transform(part, 0, True, 32)


def test_end_marker_walks_agree_on_mutated_files(variants):
    """reader.jpeg_truncated (Python) and the C++ has_end_marker make the same call on random mutations."""
    rng = np.random.default_rng(77)
    seeds = [variants[n] for n in ("baseline_420", "progressive_444", "restart_420", "junk_between_markers")]
    checked = 0
    for i in range(600):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(2, len(data)))
            data[at] = int(rng.choice([0xFF, 0xD9, 0xDA, 0x00, int(rng.integers(0, 256))]))
        if i % 3 == 0:
            data = data[: int(rng.integers(4, len(data)))]
        data = bytes(data)
        try:
            _reader.transform(data, i, True, 16)
            native_truncated = False
        except ValueError as e:
            native_truncated = "truncated JPEG" in str(e)
        if native_truncated or not jpeg_truncated(data):  # other decode errors say nothing about the walk
            assert native_truncated == jpeg_truncated(data), i
            checked += 1
    assert checked > 500


# ---- the loader's two normalization paths ------------------------------------------------------------------------


def test_uint8_batch_normalized_on_device_equals_same_pass(files):
    """The CUDA path (pinned uint8 NHWC + normalize_on_device), run here on CPU, == the C++ same-pass normalize."""
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader, normalize_on_device

    names = ["baseline_420", "missing", "png", "progressive_420", "gray", "cmyk"]
    samples = [Sample(files[n], i) for i, n in enumerate(names)]
    args = dict(
        train=True, batch_size=6, size=48, resize_short=56, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    loader = Loader(
        samples,
        **args,
        aug=T.AugConfig(**FULL_AUG),
        random_seed=4,
        num_workers=2,
        prefetch=1,
        reader="native",
        device="cpu",
    )
    assert not loader.gpu_normalize  # CPU: the same-pass path
    indices = np.arange(len(samples))
    images, labels = loader.load_batch(indices, epoch=2)
    pixels, pixel_labels = loader.read_pixels(indices, epoch=2)
    assert pixels.dtype == torch_uint8() and pixels.shape == (5, 48, 48, 3)
    on_device = normalize_on_device(pixels, loader._scale, loader._shift)
    assert on_device.is_contiguous() and torch_equal(on_device, images) and torch_equal(pixel_labels, labels)
    assert [p for p, _ in loader.skipped] == [files["missing"]] * 2
    loader.close()


def torch_uint8():
    import torch

    return torch.uint8


def test_cuda_loader_batches_equal_cpu_batches(files):
    """On a GPU: the loader's CUDA path (uint8 to the device, normalized there) gives the CPU path's batches."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the uint8 + normalize_on_device path is checked on CPU by the test above")
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader

    samples = [Sample(files[n], i) for i, n in enumerate(["baseline_420", "missing", "png", "gray", "cmyk"])]
    args = dict(train=True, batch_size=2, size=48, resize_short=56, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    batches = {}
    for device in ("cpu", "cuda"):
        loader = Loader(samples, **args, aug=T.AugConfig(), random_seed=3, num_workers=2, prefetch=2, device=device)
        assert loader.gpu_normalize == (device == "cuda")
        batches[device] = list(loader)
        loader.close()
    assert len(batches["cpu"]) == len(batches["cuda"]) == 2
    for (images, labels), (gpu_images, gpu_labels) in zip(batches["cpu"], batches["cuda"]):
        assert gpu_images.is_cuda and gpu_images.dtype == torch.float32 and gpu_images.is_contiguous()
        assert torch_equal(images, gpu_images.cpu()) and torch_equal(labels, gpu_labels.cpu())


# ---- availability and fallbacks ----------------------------------------------------------------------------------


def test_unloadable_native_module_falls_back_with_one_warning(monkeypatch):
    """A built module that cannot load (its libjpeg .so missing): "auto" warns once and reads with OpenCV."""
    real_import = importlib.import_module

    def failing_import(name: str, *args, **kwargs):
        if name == "imgcls._reader":
            raise ImportError("libjpeg.so.62: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", failing_import)
    monkeypatch.setattr(reader_module, "_warned_native_missing", False)
    args = dict(train=True, size=8, resize_short=9, aug=T.AugConfig())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        readers = [make_reader("auto", **args), make_reader("auto", **args)]
    assert all(isinstance(r, OpenCVReader) for r in readers)
    assert len(caught) == 1 and "not loadable" in str(caught[0].message) and "libjpeg.so.62" in str(caught[0].message)
    with pytest.raises(RuntimeError, match="not loadable"):
        make_reader("native", **args)


def test_fallback_images_read_on_the_reader_threads(files):
    """Non-JPEG files and interpolations the C++ reader lacks go through OpenCV on num_threads threads."""
    paths = [files["png"]] * 6 + [files["baseline_420"]]
    seeds = list(range(len(paths)))
    for aug in (T.AugConfig(), T.AugConfig(interpolation="cubic")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = NativeReader(True, 40, 48, aug, num_threads=3)
        used = set()
        fill = reader._reference.fill

        def recording_fill(*a, fill=fill, used=used):
            used.add(threading.current_thread().name)
            return fill(*a)

        reader._reference.fill = recording_fill
        out = np.zeros((len(paths), 40, 40, 3), np.uint8)
        assert reader.read_batch(paths, seeds, out) == [None] * len(paths)
        assert used and all(name.startswith("imgcls-reader") for name in used), used
        ref = OpenCVReader(True, 40, 48, aug)
        for i in range(6):
            assert np.array_equal(out[i], ref.read_one(paths[i], seeds[i]))
        reader.close()


# ---- the ASan fuzz run -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fuzz_decode_under_asan(tmp_path):
    """csrc/fuzz/run_fuzz.sh for 20 s: ASan + UBSan build of the decode entry, mutated seeds of every flavour."""
    missing = [tool for tool in ("cmake", "c++", "pkg-config") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to build the fuzz target")
    run = subprocess.run(
        ["bash", str(REPO / "csrc" / "fuzz" / "run_fuzz.sh"), "20", str(tmp_path / "fuzz")],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "no crash" in run.stdout or "Done" in run.stderr, run.stdout[-2000:]
