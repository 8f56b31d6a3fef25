"""The batch reader: thread count never changes results, bad images are per-image errors, the normalized entry
equals the Python normalization, EXIF handling, flat memory, a short mutation run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgcls import randomness
from imgcls.data import transforms as T
from imgcls.data.readers import OpenCVReader, make_reader
from imgcls.data.readers.native import MAX_DIFF_FULL_SCALE, NativeReader

from .. import jpeg_corpus
from .helpers import FULL_AUG, _reader, aug_kwargs, rss_kb, spec, torch_equal

pytestmark = pytest.mark.usefixtures("needs_native")


def test_batch_reader_matches_single_image_and_thread_count(files):
    names = [n for n in files if n not in ("truncated", "missing")] * 3
    paths = [files[n] for n in names]
    seeds = [randomness.sample_seed(7, 0, i) for i in range(len(paths))]
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
    reader = make_reader("native", spec(128, 150), train=False, num_threads=2)
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

    from imgcls.data.preprocess import normalize

    names = ["baseline_420", "png", "missing", "progressive_444", "gray", "cmyk"]
    paths = [files[n] for n in names]
    seeds = [randomness.sample_seed(3, 1, i) for i in range(len(paths))]
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
    assert np.array_equal(normalize(torch.from_numpy(pixels[ok]), scale, shift).numpy(), want[ok])
    with pytest.raises(ValueError, match="float32"):
        reader.read_batch_normalized(paths, seeds, out.astype(np.float64), scale.view(3).numpy(), shift.view(3).numpy())
    reader.close()


def test_normalized_batch_through_opencv_for_other_interpolations(files):
    """An interpolation the C++ reader lacks: both entries go through OpenCV, and still agree."""
    import torch

    from imgcls.data.preprocess import normalize

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
    want = normalize(torch.from_numpy(pixels[:1]), torch.from_numpy(scale), torch.from_numpy(shift)).numpy()
    assert np.array_equal(out[:1], want)


def test_loader_batches_from_normalized_reader_equal_uint8_path(files):
    """The loader's CPU path (normalize in C++) gives read_batch + normalize; bad images dropped alike."""
    import torch

    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader
    from imgcls.data.preprocess import normalize

    names = ["baseline_420", "missing", "png", "progressive_420", "gray"]
    samples = [Sample(files[n], i) for i, n in enumerate(names)]
    pre = spec(48, 56)
    loader = Loader(
        samples, preprocess=pre, train=True, batch_size=5, random_seed=1, num_workers=2, prefetch=1, reader="native"
    )
    indices = np.arange(len(samples))
    images, labels = loader.load_batch(indices, epoch=0)
    pixels = np.zeros((5, 48, 48, 3), np.uint8)
    seeds = [randomness.sample_seed(1, 0, i) for i in range(5)]
    errors = loader.reader.read_batch([files[n] for n in names], seeds, pixels)
    keep = [i for i, e in enumerate(errors) if e is None]
    want = normalize(torch.from_numpy(pixels[keep]), *pre.scale_shift())
    assert images.shape == (4, 3, 48, 48) and torch_equal(images, want)
    # ... and that is Paddle's (pixel / 255 - mean) / std, written out here
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (pre.mean, pre.std))
    paddle = (torch.from_numpy(pixels[keep]).permute(0, 3, 1, 2).double() / 255.0 - mean) / std
    torch.testing.assert_close(images.double(), paddle, rtol=0, atol=1e-5)
    assert torch_equal(labels, torch.tensor(keep))
    assert [p for p, _ in loader.skipped] == [files["missing"]]
    loader.close()


@pytest.mark.parametrize("train", [False, True], ids=["val", "train"])
def test_exif_orientation_raw_by_default_applied_on_request(files, train):
    """Both readers, through make_reader: raw pixels by default, the EXIF rotation with apply_exif=True."""
    data = Path(files["exif6"]).read_bytes()
    paths, seeds = [files["exif6"], files["baseline_420"]], [5, 6]
    outs = {}
    for kind in ("native", "opencv"):
        for apply_exif in (False, True):
            reader = make_reader(kind, spec(96, 150), train=train, num_threads=2, apply_exif=apply_exif)
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

    args = dict(train=False, batch_size=1, preprocess=spec(64, 80))
    for kind in ("native", "opencv"):
        loader = Loader(
            [Sample(files["exif6"], 0)],
            **args,
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
    seeds = list(jpeg_corpus.jpeg_variants(jpeg_corpus.synthetic_photo(24, 40, seed=9)).values())
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
