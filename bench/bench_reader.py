"""Reader throughput, images/s on one core: native (C++) vs the OpenCV reference vs Pillow, train and val.

The corpus is synthetic photos (csrc/fuzz/jpeg_zoo.py: no photo ships with the installed packages here) encoded
at ~500x375, 1024x768 and 2048x1536, quality 75 and 90, 4:2:0 and 4:4:4, baseline and progressive, cached in
``$IMGCLS_CACHE`` (default ~/.cache/imgcls/reader_corpus; never committed). Every reader's output is checked
against the reference before it is timed. Methods are timed in alternating rounds and the best round is kept,
so that other load on the machine hurts all of them alike.

    .venv/bin/python bench/bench_reader.py                 # the table in bench/results/reader_cpu.md
    .venv/bin/python -m pytest bench/bench_reader.py       # pytest-benchmark, per method
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

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"500x375": (375, 500), "1024x768": (768, 1024), "2048x1536": (1536, 2048)}
OUT, SHORT = 224, 256


def load_zoo():
    spec = importlib.util.spec_from_file_location("jpeg_zoo", ROOT / "csrc" / "fuzz" / "jpeg_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_corpus(per_kind: int = 4) -> dict[tuple[str, int, str, bool], list[bytes]]:
    """{(size, quality, subsampling, progressive): [jpeg bytes]}, from the cache when already built."""
    from imgcls import _reader

    cache = Path(os.environ.get("IMGCLS_CACHE", Path.home() / ".cache" / "imgcls")) / "reader_corpus"
    cache.mkdir(parents=True, exist_ok=True)
    zoo = None
    corpus = {}
    for size_name, (h, w) in SIZES.items():
        for quality in (75, 90):
            for sub in ("420", "444"):
                for progressive in (False, True):
                    key = (size_name, quality, sub, progressive)
                    files = []
                    for i in range(per_kind):
                        path = cache / f"{size_name}_q{quality}_{sub}_{'prog' if progressive else 'base'}_{i}.jpg"
                        if not path.exists():
                            zoo = zoo or load_zoo()
                            rgb = zoo.synthetic_photo(h, w, seed=1000 + i)
                            path.write_bytes(_reader.encode(rgb, quality, sub, progressive=progressive))
                        files.append(path.read_bytes())
                    corpus[key] = files
    return corpus


# ---- the three readers, one image at a time (bytes already in memory) --------------------------------------------


def native_train(data: bytes, seed: int) -> np.ndarray:
    from imgcls import _reader

    return _reader.transform(data, seed, True, OUT)


def native_val(data: bytes, seed: int) -> np.ndarray:
    from imgcls import _reader

    return _reader.transform(data, seed, False, OUT, SHORT)


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
    new_h, new_w = T.resize_short_dims(img.height, img.width, SHORT)
    y, x = T.center_crop_offsets(new_h, new_w, OUT)
    return np.asarray(img.resize((new_w, new_h), Image.BILINEAR).crop((x, y, x + OUT, y + OUT)))


READERS = {
    "native": (native_train, native_val),
    "opencv": (opencv_train, opencv_val),
    "pillow": (pillow_train, pillow_val),
}


def check_outputs(images: list[bytes]) -> None:
    """Native and Pillow against the reference before anything is timed (geometry exact, pixels close)."""
    for i, data in enumerate(images[:4]):
        for train in (True, False):
            ref = (opencv_train if train else opencv_val)(data, i)
            for name in ("native", "pillow"):
                out = READERS[name][0 if train else 1](data, i)
                mean = np.abs(out.astype(int) - ref).mean()
                assert out.shape == ref.shape and mean < 6.0, (name, train, mean)


def images_per_second(fn, images: list[bytes], rounds: int) -> list[float]:
    """One timing per round: images/s over the whole list."""
    results = []
    for r in range(rounds):
        start = time.perf_counter()
        for i, data in enumerate(images):
            fn(data, r * 1000 + i)
        results.append(len(images) / (time.perf_counter() - start))
    return results


def compare(images: list[bytes], train: bool, names: list[str], rounds: int = 5) -> dict[str, float]:
    """Best-of-rounds images/s per reader, rounds interleaved across readers."""
    best = dict.fromkeys(names, 0.0)
    for _ in range(rounds):
        for name in names:
            rate = images_per_second(READERS[name][0 if train else 1], images, 1)[0]
            best[name] = max(best[name], rate)
    return best


def thread_scaling(images: list[bytes], threads: int, batch: int = 64, rounds: int = 5) -> dict[int, float]:
    """NativeReader images/s (train) with 1 and ``threads`` threads over files in the cache."""
    import tempfile

    from imgcls.data.native_reader import NativeReader

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(batch):
            path = Path(tmp) / f"{i}.jpg"
            path.write_bytes(images[i % len(images)])
            paths.append(str(path))
        out = np.empty((batch, OUT, OUT, 3), np.uint8)
        readers = {n: NativeReader(True, OUT, SHORT, T.AugConfig(), num_threads=n) for n in sorted({1, threads})}
        best = dict.fromkeys(readers, 0.0)
        for r in range(rounds):
            for n, reader in readers.items():
                start = time.perf_counter()
                errors = reader.read_batch(paths, list(range(r * batch, (r + 1) * batch)), out)
                best[n] = max(best[n], batch / (time.perf_counter() - start))
                assert errors == [None] * batch
        for reader in readers.values():
            reader.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-kind", type=int, default=4, help="images per (size, quality, subsampling, mode)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core for every reader
    corpus = build_corpus(args.per_kind)
    names = ["native", "opencv"] + (["pillow"] if importlib.util.find_spec("PIL") else [])
    from imgcls import _reader

    print(f"libjpeg-turbo {_reader.libjpeg_turbo_version} (native), OpenCV {cv2.__version__}, cpus {os.cpu_count()}")
    print("| images | transform | " + " | ".join(f"{n} img/s" for n in names) + " | native / opencv |")
    print("|---|---|" + "---|" * len(names) + "---|")
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
                cells = " | ".join(f"{best[n]:.0f}" for n in names)
                label = "train" if train else "val"
                print(
                    f"| {size_name} {mode} (q75+q90, 4:2:0+4:4:4) | {label} | {cells} | "
                    f"{best['native'] / best['opencv']:.2f}x |",
                    flush=True,
                )
    small = [d for (s, _, _, prog), files in corpus.items() if s == "500x375" and not prog for d in files]
    scaling = thread_scaling(small, args.threads, rounds=args.rounds)
    print(
        "\nthreads (NativeReader, train, 500x375 baseline, batch 64): "
        + ", ".join(f"{n}: {v:.0f} img/s" for n, v in scaling.items())
        + f"; {max(scaling)} / 1 = {scaling[max(scaling)] / scaling[1]:.2f}x"
    )


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


if __name__ == "__main__":
    main()
