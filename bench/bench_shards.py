"""Tar shards vs files: the same images, the same reader and threads, timed in alternating rounds of one run.

Two measurements, both on ImageNet-sized photos (500x375 synthetic photos of bench_reader's corpus, ~60-110 KB)
and on the built-in demo set (72-96 px images, where the per-sample tar work weighs most):
- loader epoch: every train batch of one epoch (of 8 consecutive epochs a round on the built-in set) through
  ``Loader`` (files) or ``ShardLoader`` (local shards written by ``python -m imgcls.data.shards``, the default
  2000-sample shuffle buffer), the native reader's train transform, normalized on the CPU; images/s;
- training epoch (built-in set): ``python -m imgcls.train`` for one epoch from the files and from the shards
  (ShuffleNetV2_x0_25); the train img/s of metrics.csv. (At 224 px the model's compute hides the data path on a
  CPU: the loader epoch is the stricter comparison.)
Before timing, the readers' output from shard bytes is checked against their output from the files (bit-equal).
Best round of each is kept, so other load on the machine hurts both alike.

    .venv/bin/python -m bench.bench_shards                     # the table of bench/results/shards_cpu.md
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.data import Loader, PreprocessSpec
from imgcls.data.datasets import load_dataset
from imgcls.data.readers import Encoded, make_reader
from imgcls.data.shards import ShardLoader, shard_dataset
from imgcls.data.shards.writer import write_dataset
from imgcls.data.transforms import AugConfig

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo_dataset(root: Path, count: int) -> Path:
    """``count`` 500x375 photos (bench_reader's corpus, cycled) as list files, 10 labels; 1/8 of them as val."""
    from bench.bench_reader import build_corpus

    photos = [data for key, images in build_corpus(sizes=["500x375"]).items() for data in images]
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = {"train": [], "val": []}
    for i in range(count):
        (root / "img" / f"{i:06d}.jpg").write_bytes(photos[i % len(photos)])
        lines["val" if i % 8 == 7 else "train"].append(f"img/{i:06d}.jpg {i % 10}\n")
    for split, rows in lines.items():
        (root / f"{split}_list.txt").write_text("".join(rows))
    return root


def check_bytes_equal_files(files: Path, size: int) -> None:
    """The native reader's batch from in-memory bytes equals its batch from the files (same seeds)."""
    samples = load_dataset(files).train[:16]
    spec = PreprocessSpec(size, round(size / 0.875), MEAN, STD, AugConfig())
    reader = make_reader("native", spec, train=True, num_threads=2)
    a, b = np.zeros((16, size, size, 3), np.uint8), np.zeros((16, size, size, 3), np.uint8)
    seeds = list(range(16))
    assert reader.read_batch([s.path for s in samples], seeds, a) == [None] * 16
    assert reader.read_batch([Encoded(s.path, Path(s.path).read_bytes()) for s in samples], seeds, b) == [None] * 16
    assert np.array_equal(a, b), "shard bytes decode differently from the files"
    reader.close()


def loader_epochs(loader: Loader, epochs: list[int]) -> tuple[float, float]:
    """(images/s, CPU microseconds of this process per image) of ``loader`` over consecutive ``epochs`` (each with
    its own order and its own start: the shard loader fills its shuffle buffer at the start of every epoch). The
    CPU time counts every thread of the process (the C++ decoders, the shard stream) and not other processes."""
    start, cpu, images = time.perf_counter(), time.process_time(), 0
    for epoch in epochs:
        loader.set_epoch(epoch)
        for _, labels in loader:
            images += len(labels)
    return images / (time.perf_counter() - start), (time.process_time() - cpu) / images * 1e6


def make_loaders(files: Path, shards: Path, size: int, threads: int) -> tuple[Loader, ShardLoader]:
    spec = PreprocessSpec(size, round(size / 0.875), MEAN, STD, AugConfig())
    args = dict(
        preprocess=spec, train=True, batch_size=64, random_seed=0, num_workers=threads, prefetch=4, reader="native"
    )
    dataset = shard_dataset(str(shards), None, None)
    return Loader(load_dataset(files).train, **args), ShardLoader(dataset.train_shards, **args)


def train_epoch(data: Path, out: Path, size: int, threads: int) -> float:
    """Train img/s of one ``imgcls.train`` epoch on ``data`` (a subprocess: its own threads and memory)."""
    command = [
        *(sys.executable, "-m", "imgcls.train", "--model=ShuffleNetV2_x0_25", f"--data_dir={data}"),
        *(f"--model_save_dir={out}", "--overwrite", "--reader=native", f"--reader_thread={threads}"),
        *(f"--image_shape=3,{size},{size}", "--batch_size=64", "--num_epochs=1", "--tensorboard=False", "--lr=0.05"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, capture_output=True, env=env)
    with open(out / "ShuffleNetV2_x0_25" / "metrics.csv") as f:
        return float(list(csv.DictReader(f))[-1]["images_per_sec"])


def measure(
    name: str,
    files: Path,
    size: int,
    threads: list[int],
    rounds: int,
    work: Path,
    train_rounds: int = 0,
    epochs_per_round: int = 1,
) -> list[str]:
    """Table rows for one dataset: ``rounds`` rounds of ``epochs_per_round`` loader epochs of each per thread count,
    then ``train_rounds`` training epochs of each."""
    shards = work / f"{name}_shards"
    write_dataset(load_dataset(files), shards, shard_size=256, log=lambda _: None)
    check_bytes_equal_files(files, size)
    rows = []
    for t in threads:
        file_loader, shard_loader = make_loaders(files, shards, size, t)
        speeds: dict[str, list[float]] = {"files": [], "shards": []}
        cpu: dict[str, list[float]] = {"files": [], "shards": []}
        for r in range(rounds):
            pair = (("files", file_loader), ("shards", shard_loader))
            for kind, loader in pair if r % 2 == 0 else pair[::-1]:  # alternate which goes first
                epochs = list(range(r * epochs_per_round, (r + 1) * epochs_per_round))
                speed, cpu_per_image = loader_epochs(loader, epochs)
                speeds[kind].append(speed)
                cpu[kind].append(cpu_per_image)
        best = {kind: max(v) for kind, v in speeds.items()}
        paired = float(np.median([s / f for f, s in zip(speeds["files"], speeds["shards"])]))
        cpu_median = {kind: float(np.median(v)) for kind, v in cpu.items()}
        rows.append(
            f"| {name} | loader epoch | {t} | {best['files']:.0f} | {best['shards']:.0f} | "
            f"{best['shards'] / best['files']:.3f} | {paired:.3f} | {best['shards'] / t:.0f} | "
            f"{cpu_median['files']:.1f} / {cpu_median['shards']:.1f} |"
        )
        file_loader.close()
        shard_loader.close()
    if not train_rounds:
        return rows
    t = max(threads)
    best = {"files": 0.0, "shards": 0.0}
    for _ in range(train_rounds):
        for kind, data in (("files", files), ("shards", shards)):
            best[kind] = max(best[kind], train_epoch(data, work / f"run_{kind}", size, t))
    rows.append(
        f"| {name} | training epoch | {t} | {best['files']:.1f} | {best['shards']:.1f} | "
        f"{best['shards'] / best['files']:.3f} | | | |"
    )
    return rows


def stream_speed(shards: Path, rounds: int) -> list[str]:
    """Samples/s and MB/s of reading every train shard's images into memory (no decode): the C++ split (what
    stream_shard uses), its Python reference (the lean ustar reader grouped in Python), the standard library's
    ``tarfile`` in stream mode and the ``webdataset`` package when installed. All must give the same images."""
    from imgcls.data.shards.tar_members import members_reference
    from imgcls.data.shards.tar_stream import read_samples

    locations = [str(p) for p in sorted(shards.glob("train-*.tar"))]
    megabytes = sum(Path(loc).stat().st_size for loc in locations) / 1e6

    def samples(native: bool):
        def run() -> list:
            out = []
            for loc in locations:
                with open(loc, "rb") as f:
                    out.extend(sample.data for sample in read_samples(f, loc, native))
            return out

        return run

    def tarfile_images() -> list:
        out = []
        for loc in locations:
            with open(loc, "rb") as f:
                out.extend(data for name, data in members_reference(f) if not name.endswith(".cls"))
        return out

    readers = {
        "C++ split (imgcls, what stream_shard uses)": samples(True),
        "Python reference (lean ustar reader + grouping)": samples(False),
        "tarfile r|* (members only)": tarfile_images,
    }
    try:
        import webdataset as wds

        def theirs() -> list:
            dataset = wds.WebDataset(locations, shardshuffle=False, empty_check=False)
            return [value for sample in dataset for key, value in sample.items() if key in ("jpg", "png")]

        readers[f"webdataset {wds.__version__}"] = theirs
    except ImportError:
        pass
    best = dict.fromkeys(readers, 0.0)
    results = {}
    for _ in range(rounds):
        for name, read in readers.items():
            start = time.perf_counter()
            results[name] = read()
            best[name] = max(best[name], 1.0 / (time.perf_counter() - start))
    reference = results["tarfile r|* (members only)"]
    assert all(r == reference for r in results.values()), "the readers disagree"
    return [f"| {name} | {len(reference) * best[name]:.0f} | {megabytes * best[name]:.0f} |" for name in readers]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=1024, help="500x375 photos in the photo set")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=10, help="loader epochs of each, alternating")
    p.add_argument("--train-rounds", type=int, default=2, help="training epochs of each (built-in set)")
    p.add_argument("--stream-only", action="store_true", help="only the tar streaming table (tarfile vs webdataset)")
    args = p.parse_args()
    torch.set_num_threads(max(args.threads))
    from imgcls.data import builtin_dataset_dir

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = photo_dataset(work / "photos", args.photos)
        write_dataset(load_dataset(photos), work / "stream", shard_size=256, log=lambda _: None)
        print("| tar streaming, photo shards | samples/s | MB/s |\n|---|---|---|")
        print("\n".join(stream_speed(work / "stream", args.rounds)))
        if args.stream_only:
            return
        rows = measure("photos 500x375 @224", photos, 224, args.threads, args.rounds, work)
        # A built-in epoch lasts ~0.1 s: 8 of them a round, so that a round is not mostly start-up.
        rows += measure(
            "built-in 72-96 px @48", builtin_dataset_dir(), 48, args.threads, args.rounds, work, args.train_rounds, 8
        )
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(
        "| data | what | reader threads | files img/s (best) | shards img/s (best) | shards / files (best) | "
        "shards / files (median of paired rounds) | shards img/s per thread | CPU us per image, files / shards "
        "(median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


# ---- pytest-benchmark entries -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builtin_shards(tmp_path_factory) -> list[str]:
    """The built-in set's train shards (256 samples each), written by the writer."""
    from imgcls.data import builtin_dataset_dir

    out = tmp_path_factory.mktemp("shards")
    write_dataset(load_dataset(builtin_dataset_dir()), out, shard_size=256, log=lambda _: None)
    return [str(p) for p in sorted(out.glob("train-*.tar"))]


@pytest.mark.parametrize("native", [True, False], ids=["cpp_split", "python_reference"])
def test_tar_split(benchmark, builtin_shards, native):
    """Every sample of the built-in shards, through the C++ split (counted: it ran) or its Python reference; both
    checked against ``tarfile`` first."""
    from imgcls.data.shards.tar_members import members_reference
    from imgcls.data.shards.tar_stream import read_samples

    if native:
        pytest.importorskip("imgcls._reader")
    expected = []
    for loc in builtin_shards:
        with open(loc, "rb") as f:
            expected.extend(data for name, data in members_reference(f) if not name.endswith(".cls"))

    def read() -> list[bytes]:
        out = []
        for loc in builtin_shards:
            with open(loc, "rb") as f:
                out.extend(sample.data for sample in read_samples(f, loc, native))
        return out

    assert read() == expected
    if native:
        from imgcls import _reader

        fed = []
        real = _reader.TarSamples

        class Counting(real):
            def feed(self, chunk):
                fed.append(len(chunk))
                return super().feed(chunk)

        _reader.TarSamples = Counting
        try:
            read()
        finally:
            _reader.TarSamples = real
        assert len(fed) >= len(builtin_shards)
    benchmark(read)


if __name__ == "__main__":
    main()
