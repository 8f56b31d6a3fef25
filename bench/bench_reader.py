"""Reader throughput, images/s on one core: native (C++) vs the OpenCV reference vs Pillow, train and val.

``native`` is the C++ reader's default (``--dct_scaling train``: train decodes at 1/2..1/8 when the crop allows,
eval decodes at 1/1 and resizes with OpenCV's arithmetic, Paddle's pixels); ``native-alt`` is the other setting of
each transform (train ``--dct_scaling none``: 1/1; eval ``--dct_scaling all``: DCT-scaled, not Paddle's pixels).
The pixel differences of each mode: bench/bench_reader_diffs.py.

The corpus is synthetic photos (tests/jpeg_corpus.py: no photo ships with the installed packages here) encoded
at ~500x375, 1024x768 and 2048x1536, quality 75 and 90, 4:2:0 and 4:4:4, baseline and progressive, cached in
``reader_corpus`` of ``imgcls.home`` (default ~/.cache/imgcls/reader_corpus; never committed). Every reader's
output is checked against the reference before it is timed. Methods are timed in alternating rounds and the best
round is kept, so that other load on the machine hurts all of them alike.

    .venv/bin/python -m bench.bench_reader                 # the table in bench/results/reader_cpu.md
    .venv/bin/python -m pytest bench/bench_reader.py       # pytest-benchmark, per method
    python -m bench.bench_reader --feed-rate --threads 16 --json feed.json   # can it feed a GPU?

``--feed-rate``: the rate at which the native reader fills training batches (the train transform into a uint8
NHWC batch of 256, what the loader hands a CUDA device) with ``--threads`` threads, wall clock, best of
``--rounds`` batches, on 500x375 images (ImageNet's typical size) generated on the spot; bench/gpu_session.sh
puts it beside each model's training img/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgcls.data import transforms as T
from imgcls.data.readers.native import MAX_DIFF_DCT, MEAN_DIFF_DCT
from imgcls.data.resize_window import center_crop_offsets, resize_short_dims
from imgcls.home import imgcls_home

SIZES = {"500x375": (375, 500), "1024x768": (768, 1024), "2048x1536": (1536, 2048)}
OUT, SHORT = 224, 256


def build_corpus(per_kind: int = 4, sizes: list[str] | None = None) -> dict[tuple[str, int, str, bool], list[bytes]]:
    """{(size, quality, subsampling, progressive): [jpeg bytes]} for ``sizes`` (default: all), from the cache when
    already built."""
    from imgcls import _reader  # only once the benchmark knows it is built
    from tests import jpeg_corpus

    cache = imgcls_home() / "reader_corpus"
    cache.mkdir(parents=True, exist_ok=True)
    corpus = {}
    for size_name, (h, w) in SIZES.items():
        if sizes is not None and size_name not in sizes:
            continue
        for quality in (75, 90):
            for sub in ("420", "444"):
                for progressive in (False, True):
                    key = (size_name, quality, sub, progressive)
                    files = []
                    for i in range(per_kind):
                        path = cache / f"{size_name}_q{quality}_{sub}_{'prog' if progressive else 'base'}_{i}.jpg"
                        if not path.exists():
                            rgb = jpeg_corpus.synthetic_photo(h, w, seed=1000 + i)
                            path.write_bytes(_reader.encode(rgb, quality, sub, progressive=progressive))
                        files.append(path.read_bytes())
                    corpus[key] = files
    return corpus


# ---- the three readers, one image at a time (bytes already in memory) --------------------------------------------


def native_train(data: bytes, seed: int) -> np.ndarray:
    from imgcls import _reader

    return _reader.transform(data, seed, True, OUT)


def native_val(data: bytes, seed: int) -> np.ndarray:
    """The default eval transform: 1/1 decode + OpenCV's fixed-point resize (Paddle's pixels)."""
    from imgcls import _reader

    return _reader.transform(data, seed, False, OUT, SHORT, dct_scaling=False)


def native_train_full_scale(data: bytes, seed: int) -> np.ndarray:
    """``--dct_scaling none``: the train transform from a 1/1 decode (the reference's pixels)."""
    from imgcls import _reader

    return _reader.transform(data, seed, True, OUT, dct_scaling=False)


def native_val_dct(data: bytes, seed: int) -> np.ndarray:
    """``--dct_scaling all``: the fast eval decode at 1/2..1/8 (not Paddle's pixels)."""
    from imgcls import _reader

    return _reader.transform(data, seed, False, OUT, SHORT, dct_scaling=True)


def opencv_train(data: bytes, seed: int) -> np.ndarray:
    return T.train_transform(T.decode_image(data), seed, OUT)


def opencv_val(data: bytes, seed: int) -> np.ndarray:
    return T.val_transform(T.decode_image(data), OUT, SHORT)


def pillow_train(data: bytes, seed: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    p = T.sample_train_params(img.height, img.width, seed, T.AugConfig())
    img = img.resize((OUT, OUT), Image.BILINEAR, box=(p.x, p.y, p.x + p.w, p.y + p.h))
    out = np.asarray(img)
    return out[:, ::-1] if p.flip else out


def pillow_val(data: bytes, seed: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    new_h, new_w = resize_short_dims(img.height, img.width, SHORT)
    y, x = center_crop_offsets(new_h, new_w, OUT)
    return np.asarray(img.resize((new_w, new_h), Image.BILINEAR).crop((x, y, x + OUT, y + OUT)))


READERS = {  # name -> (train, val); "native" is the default --dct_scaling train, "native-alt" the other setting
    "native": (native_train, native_val),
    "native-alt": (native_train_full_scale, native_val_dct),
    "opencv": (opencv_train, opencv_val),
    "pillow": (pillow_train, pillow_val),
}


def check_outputs(images: list[bytes]) -> None:
    """Before anything is timed: the native geometry exact and its pixels the reference's at a 1/1 decode (both
    defaults' eval, ``none``'s train), within readers.native's DCT bounds with a DCT scale; Pillow, whose resize
    filter differs, close (mean < 6)."""
    from imgcls import _reader

    for i, data in enumerate(images[:4]):
        ref_img = T.decode_image(data)
        h, w = ref_img.shape[:2]
        p = T.sample_train_params(h, w, i, T.AugConfig())
        want = (p.x, p.y, p.w, p.h, p.flip, p.angle, p.brightness, p.contrast, p.saturation, p.hue)
        assert _reader.train_params(h, w, i) == want, "native geometry differs from the reference"
        new_h, new_w = resize_short_dims(h, w, SHORT)
        for train, scale in (
            (True, _reader.choose_scale(p.w, p.h, OUT, OUT)),
            (False, _reader.choose_scale(w, h, new_w, new_h)),
        ):
            ref = T.train_transform(ref_img, i, OUT) if train else T.val_transform(ref_img, OUT, SHORT)
            for name in ("native", "native-alt"):
                diff = np.abs(READERS[name][0 if train else 1](data, i).astype(int) - ref)
                if scale == 1 or (name == "native") != train:  # a 1/1 decode: OpenCV's pixels exactly
                    assert diff.max() == 0, (name, train, int(diff.max()))
                else:
                    assert diff.mean() < MEAN_DIFF_DCT and diff.max() <= MAX_DIFF_DCT, (name, train, scale, diff.mean())
            if importlib.util.find_spec("PIL") is not None:
                out = READERS["pillow"][0 if train else 1](data, i)
                assert out.shape == ref.shape and np.abs(out.astype(int) - ref).mean() < 6.0, ("pillow", train)


def images_per_second(fn, images: list[bytes], seed0: int) -> tuple[float, float]:
    """(images/s of the calling thread's CPU time, images/s of wall time) over the whole list.

    Every reader here runs in the calling thread (cv2.setNumThreads(1); the native call releases the GIL but
    does not leave the thread), so thread CPU time is its one-core cost, and other processes on a shared machine
    change it much less than the wall clock.
    """
    cpu, wall = time.thread_time(), time.perf_counter()
    for i, data in enumerate(images):
        fn(data, seed0 + i)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return len(images) / max(cpu, 1e-9), len(images) / wall


def compare(images: list[bytes], train: bool, names: list[str], rounds: int = 5) -> dict[str, tuple[float, float]]:
    """Best-of-rounds (cpu, wall) images/s per reader, rounds interleaved across readers."""
    best = {name: (0.0, 0.0) for name in names}
    for r in range(rounds):
        for name in names:
            cpu, wall = images_per_second(READERS[name][0 if train else 1], images, r * 1000)
            best[name] = (max(best[name][0], cpu), max(best[name][1], wall))
    return best


def batch_files(folder: str, images: list[bytes], batch: int) -> list[str]:
    """``batch`` files in ``folder`` cycling through ``images``; their paths."""
    paths = [str(Path(folder) / f"{i}.jpg") for i in range(batch)]
    for i, path in enumerate(paths):
        Path(path).write_bytes(images[i % len(images)])
    return paths


def thread_scaling(
    images: list[bytes], threads: int, batch: int = 64, rounds: int = 5
) -> dict[int, tuple[float, float]]:
    """NativeReader (train) with 1 and ``threads`` threads: (images/s of wall time, process CPU ms per image).

    The CPU cost per image staying flat with more threads means the threads do not slow each other down; the wall
    clock scales with the cores that are actually free.
    """
    import tempfile

    from imgcls.data.readers.native import NativeReader

    with tempfile.TemporaryDirectory() as tmp:
        paths = batch_files(tmp, images, batch)
        out = np.empty((batch, OUT, OUT, 3), np.uint8)
        readers = {n: NativeReader(True, OUT, SHORT, T.AugConfig(), num_threads=n) for n in sorted({1, threads})}
        best = {n: (0.0, 1e9) for n in readers}
        for r in range(rounds):
            for n, reader in readers.items():
                cpu, start = time.process_time(), time.perf_counter()
                errors = reader.read_batch(paths, list(range(r * batch, (r + 1) * batch)), out)
                rate, cpu_ms = batch / (time.perf_counter() - start), (time.process_time() - cpu) / batch * 1e3
                best[n] = (max(best[n][0], rate), min(best[n][1], cpu_ms))
                assert errors == [None] * batch
        for reader in readers.values():
            reader.close()
    return best


def feed_rate(images: list[bytes], threads: int, batch: int = 256, rounds: int = 5) -> dict:
    """The native reader's training-batch rate with ``threads`` threads: train transform (random crop, flip,
    jitter) into a reused uint8 [batch, 224, 224, 3] buffer, as the loader fills its pinned slots for a GPU.
    -> {img_per_s (best batch), median_img_per_s, threads, batch, rounds, ...}."""
    import statistics
    import tempfile

    from imgcls.data.native_reader import NativeReader

    with tempfile.TemporaryDirectory() as tmp:
        paths = batch_files(tmp, images, batch)
        out = np.empty((batch, OUT, OUT, 3), np.uint8)
        reader = NativeReader(True, OUT, SHORT, T.AugConfig(), num_threads=threads)
        rates = []
        for r in range(rounds + 1):  # the first batch warms the page cache and the threads: not counted
            start = time.perf_counter()
            errors = reader.read_batch(paths, list(range(r * batch, (r + 1) * batch)), out)
            rates.append(batch / (time.perf_counter() - start))
            assert errors == [None] * batch, [e for e in errors if e is not None][:3]
        reader.close()
    rates = rates[1:]
    return {
        "img_per_s": round(max(rates), 1),
        "median_img_per_s": round(statistics.median(rates), 1),
        "threads": threads,
        "batch": batch,
        "rounds": rounds,
        "images": f"{len(images)} distinct 500x375 JPEGs (baseline, q75/q90, 4:2:0/4:4:4), train transform to {OUT}",
        "cpu_count": os.cpu_count(),
        "load1": round(os.getloadavg()[0], 2),
    }


def resize_speed(rounds: int) -> tuple[float, float, float]:
    """ms per 224x224 resize of a 330x330 crop (the val case at 500x375): (float vectorised, float scalar reference,
    OpenCV's fixed-point arithmetic: what a 1/1 bilinear transform runs)."""
    from imgcls import _reader

    src = np.random.default_rng(0).integers(0, 256, (330, 330, 3), dtype=np.uint8)
    assert np.array_equal(_reader.resize(src, OUT, OUT), _reader.resize(src, OUT, OUT, vectorized=False))
    assert np.array_equal(_reader.resize_exact(src, OUT, OUT), cv2.resize(src, (OUT, OUT)))
    calls = (
        lambda: _reader.resize(src, OUT, OUT, vectorized=True),
        lambda: _reader.resize(src, OUT, OUT, vectorized=False),
        lambda: _reader.resize_exact(src, OUT, OUT),
    )
    best = [1e9] * len(calls)
    for _ in range(rounds):
        for k, call in enumerate(calls):
            start = time.thread_time()
            for _ in range(50):
                call()
            best[k] = min(best[k], (time.thread_time() - start) / 50 * 1e3)
    return best[0], best[1], best[2]


def normalize_speed(images: list[bytes], threads: int, batch: int = 64, rounds: int = 5) -> tuple[float, float]:
    """ms per batch of 64: (read_batch_normalized, read_batch + the loader's torch normalization), same reader."""
    import tempfile

    import torch

    from imgcls.data.readers.native import NativeReader

    torch.set_num_threads(1)
    scale = np.full(3, 1 / (255 * 0.226), np.float32)
    shift = np.full(3, -0.449 / 0.226, np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        paths = batch_files(tmp, images, batch)
        reader = NativeReader(True, OUT, SHORT, T.AugConfig(), num_threads=threads)
        pixels = np.empty((batch, OUT, OUT, 3), np.uint8)
        out = np.empty((batch, 3, OUT, OUT), np.float32)
        scale_t, shift_t = torch.from_numpy(scale).view(1, 3, 1, 1), torch.from_numpy(shift).view(1, 3, 1, 1)
        images_t = torch.empty((batch, 3, OUT, OUT))
        best = [1e9, 1e9]
        for r in range(rounds):
            seeds = list(range(r * batch, (r + 1) * batch))
            start = time.perf_counter()
            reader.read_batch_normalized(paths, seeds, out, scale, shift)
            best[0] = min(best[0], time.perf_counter() - start)
            start = time.perf_counter()
            reader.read_batch(paths, seeds, pixels)
            images_t.copy_(torch.from_numpy(pixels).permute(0, 3, 1, 2)).mul_(scale_t).add_(shift_t)
            best[1] = min(best[1], time.perf_counter() - start)
            assert np.array_equal(out, images_t.numpy())
        reader.close()
    return best[0] * 1e3, best[1] * 1e3


def loader_overhead(images: list[bytes], threads: int, batch: int = 64, rounds: int = 5) -> dict[str, float]:
    """ms per batch (wall): the C++ read into a reused buffer, into a fresh tensor, and the loader's whole batch.

    The loader's Python work between two C++ calls is what a prefetch ring inside C++ could hide.
    """
    import tempfile

    import torch

    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader
    from imgcls.data.preprocess import PreprocessSpec

    with tempfile.TemporaryDirectory() as tmp:
        samples = [Sample(str(Path(tmp) / f"{i}.jpg"), 0) for i in range(batch)]
        for i, sample in enumerate(samples):
            Path(sample.path).write_bytes(images[i % len(images)])
        loader = Loader(
            samples,
            preprocess=PreprocessSpec(OUT, SHORT, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            train=True,
            batch_size=batch,
            random_seed=0,
            num_workers=threads,
            prefetch=1,
            reader="native",
        )
        paths = [s.path for s in samples]
        scale, shift = loader._scale.view(3).numpy(), loader._shift.view(3).numpy()
        reused = np.empty((batch, 3, OUT, OUT), np.float32)
        cases = {
            "C++ read, reused buffer": lambda seeds: loader.reader.read_batch_normalized(
                paths, seeds, reused, scale, shift
            ),
            "C++ read, fresh torch.empty": lambda seeds: loader.reader.read_batch_normalized(
                paths, seeds, torch.empty((batch, 3, OUT, OUT)).numpy(), scale, shift
            ),
            "Loader.load_batch": lambda seeds: loader.load_batch(np.arange(batch), seeds[0]),
        }
        best = dict.fromkeys(cases, 1e9)
        for r in range(rounds):
            for name, fn in cases.items():
                start = time.perf_counter()
                fn(list(range(r * batch, (r + 1) * batch)))
                best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
        loader.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-kind", type=int, default=4, help="images per (size, quality, subsampling, mode)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--feed-rate", action="store_true", help="only the native reader's batch rate (see above)")
    parser.add_argument("--json", help="--feed-rate: also write the result here")
    parser.add_argument("--co", action="store_true", help="--feed-rate: only count the cases (pytest --co's words)")
    args = parser.parse_args()
    if args.feed_rate:
        feed_rate_main(args)
        return
    cv2.setNumThreads(1)  # one core for every reader
    corpus = build_corpus(args.per_kind)
    names = ["native", "native-alt", "opencv"] + (["pillow"] if importlib.util.find_spec("PIL") else [])
    from imgcls import _reader

    print(
        f"libjpeg-turbo {_reader.libjpeg_turbo_version} (native), OpenCV {cv2.__version__}, cpus {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    header = " | ".join(f"{n} img/s" for n in names)
    print(f"| images | transform | {header} | native / opencv | (wall) | native / native-alt |")
    print("|---|---|" + "---|" * len(names) + "---|---|---|")
    for size_name in args.sizes:
        for mode in ("baseline", "progressive"):
            images = [
                d
                for (s, _, _, prog), files in corpus.items()
                if s == size_name and prog == (mode != "baseline")
                for d in files
            ]
            check_outputs(images)
            rounds = args.rounds if size_name != "2048x1536" else max(2, args.rounds // 2)
            for train in (True, False):
                best = compare(images, train, names, rounds)
                cells = " | ".join(f"{best[n][0]:.0f}" for n in names)
                label = "train" if train else "val"
                cpu_ratio, wall_ratio = (best["native"][k] / best["opencv"][k] for k in (0, 1))
                alt_ratio = best["native"][0] / best["native-alt"][0]
                print(
                    f"| {size_name} {mode} (q75+q90, 4:2:0+4:4:4) | {label} | {cells} | {cpu_ratio:.2f}x | "
                    f"{wall_ratio:.2f}x | {alt_ratio:.2f}x |",
                    flush=True,
                )
    small = [d for (s, _, _, prog), files in corpus.items() if s == "500x375" and not prog for d in files]
    # A batch takes ~20-40 ms: many short rounds give the best-of a chance to find the second core free.
    scaling = thread_scaling(small, args.threads, rounds=4 * args.rounds)
    top = max(scaling)
    print(
        f"\nthreads (NativeReader, train, 500x375 baseline, batch 64, wall clock, load {os.getloadavg()[0]:.2f}): "
        + ", ".join(f"{n}: {rate:.0f} img/s ({cpu:.3f} CPU ms/img)" for n, (rate, cpu) in scaling.items())
        + f"; {top} / 1 = {scaling[top][0] / scaling[1][0]:.2f}x"
    )
    fast, ref, exact = resize_speed(args.rounds)
    print(
        f"resize 330x330 -> 224x224 (one core): float vectorised {fast:.3f} ms, float reference {ref:.3f} ms "
        f"= {ref / fast:.2f}x; OpenCV fixed-point (exact) {exact:.3f} ms"
    )
    for threads in sorted({1, args.threads}):
        fused, separate = normalize_speed(small, threads, rounds=args.rounds)
        print(
            f"batch of 64 to normalized float32, {threads} thread(s): read_batch_normalized {fused:.1f} ms, "
            f"read_batch + torch normalize (1 thread) {separate:.1f} ms = {separate / fused:.2f}x"
        )
    overhead = loader_overhead(small, args.threads, rounds=args.rounds)
    print(f"batch of 64, {args.threads} threads: " + ", ".join(f"{k} {v:.1f} ms" for k, v in overhead.items()))


def feed_rate_main(args: argparse.Namespace) -> None:
    """--feed-rate: check the native output against the reference, measure, print (and write) the result."""
    import json

    if args.co:
        print("1 tests collected")  # one measurement; the dry run of bench/gpu_session.sh counts it
        return
    corpus = build_corpus(args.per_kind, ["500x375"])
    images = [d for (_, _, _, prog), files in corpus.items() if not prog for d in files]
    check_outputs(images)
    result = feed_rate(images, args.threads, rounds=args.rounds)
    print(
        f"native reader, {result['threads']} threads, train transform, batch {result['batch']}: "
        f"{result['img_per_s']:.0f} img/s (best batch), {result['median_img_per_s']:.0f} img/s (median of "
        f"{result['rounds']}); {result['images']}; {result['cpu_count']} CPUs, load {result['load1']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


# ---- pytest-benchmark entries -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_baseline() -> list[bytes]:
    pytest.importorskip("imgcls._reader")
    cv2.setNumThreads(1)
    corpus = build_corpus(2)
    images = [d for (s, _, _, prog), files in corpus.items() if s == "500x375" and not prog for d in files]
    check_outputs(images)
    return images


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("train", [True, False], ids=["train", "val"])
def test_reader_500x375(benchmark, small_baseline, reader, train):
    if reader == "pillow":
        pytest.importorskip("PIL")
    fn = READERS[reader][0 if train else 1]
    benchmark(lambda: [fn(d, i) for i, d in enumerate(small_baseline)])


@pytest.mark.parametrize("vectorized", [True, False], ids=["vectorized", "reference"])
def test_resize_330_to_224(benchmark, vectorized):
    """The reader's resampler alone (the val crop at 500x375), SSE2 pass vs the scalar reference: same bytes."""
    _reader = pytest.importorskip("imgcls._reader")
    src = np.random.default_rng(0).integers(0, 256, (330, 330, 3), dtype=np.uint8)
    out = benchmark(lambda: _reader.resize(src, OUT, OUT, vectorized=vectorized))
    assert np.array_equal(out, _reader.resize(src, OUT, OUT, vectorized=not vectorized))


if __name__ == "__main__":
    main()
