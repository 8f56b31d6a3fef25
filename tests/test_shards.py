"""Tar shards as a data source: patterns, the writer, streaming (local and HTTP), damage, order and rank split.

The expected values come from the source files and from plain ``tarfile`` reads, never from the shard code.
Training from shards (learning, resume, torchrun) is in test_shards_train.py.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from imgcls.data import PreprocessSpec
from imgcls.data.datasets import load_dataset
from imgcls.data.readers import Encoded, make_reader
from imgcls.data.shards import ShardLoader, ShardReadError, shard_dataset, stream_shard
from imgcls.data.shards.order import rank_sample_count, rank_shards, shard_order, shuffle_buffer
from imgcls.data.shards.pattern import ShardPatternError, expand_pattern
from imgcls.data.shards.writer import write_dataset

from .cli_helpers import tiny_shapes
from .conftest import require_native
from .weights_server import WeightsServer


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"), 60, 20)


@pytest.fixture(scope="module")
def shards(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_dataset(load_dataset(shapes), out, shard_size=20, log=lambda _: None)
    return out


def plain_tar_samples(path: Path) -> dict[str, tuple[bytes, int]]:
    """key -> (image bytes, label) of a shard, read with the standard library alone."""
    images, labels = {}, {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()
            if ext == "cls":
                labels[key] = int(data)
            else:
                images[key] = data
    return {key: (images[key], labels[key]) for key in images}


def preprocess(size: int = 32) -> PreprocessSpec:
    from imgcls.data.transforms import AugConfig

    return PreprocessSpec(size, 36, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), AugConfig(lower_scale=0.5))


def shard_loader(location_list, counts, **args) -> ShardLoader:
    from imgcls.data.shards import ShardSet

    defaults = dict(
        preprocess=preprocess(), train=True, batch_size=5, random_seed=7, num_workers=1, prefetch=2, reader="opencv"
    )
    return ShardLoader(ShardSet(location_list, counts, sum(counts)), **{**defaults, **args})


# ---- patterns --------------------------------------------------------------------------------------------------------


def test_brace_patterns_expand_with_padding_and_choices():
    assert expand_pattern("s/train-{000008..000011}.tar") == [f"s/train-0000{n:02d}.tar" for n in (8, 9, 10, 11)]
    assert expand_pattern("http://h/{a,b}-{1..2}.tar") == [
        "http://h/a-1.tar",
        "http://h/a-2.tar",
        "http://h/b-1.tar",
        "http://h/b-2.tar",
    ]
    assert expand_pattern("x.tar y-{0..1}.tar") == ["x.tar", "y-0.tar", "y-1.tar"]
    with pytest.raises(ShardPatternError, match="backwards"):
        expand_pattern("a-{5..3}.tar")


# ---- the writer ------------------------------------------------------------------------------------------------------


def test_writer_keeps_the_bytes_and_indexes_every_sample(shapes, shards):
    dataset = load_dataset(shapes)
    index = json.loads((shards / "index.json").read_text())
    assert index["num_classes"] == dataset.num_classes and index["classes"] == dataset.label_names
    for split, samples in (("train", dataset.train), ("val", dataset.val)):
        files = sorted(shards.glob(f"{split}-*.tar"))
        assert [e["shard"] for e in index["splits"][split]] == [f.name for f in files]
        read = {}
        for f, entry in zip(files, index["splits"][split]):
            part = plain_tar_samples(f)
            assert len(part) == entry["samples"]
            read.update(part)
        expected = sorted((Path(s.path).read_bytes(), s.label) for s in samples)
        assert sorted(read.values()) == expected  # every image once, bytes unchanged, its label
    # train is written in a shuffled order (classes mixed in every shard), val in list order
    first_train = plain_tar_samples(shards / "train-000000.tar")
    assert len({label for _, label in first_train.values()}) > 3
    val_first = [data for data, _ in plain_tar_samples(shards / "val-000000.tar").values()]
    assert val_first == [Path(s.path).read_bytes() for s in dataset.val[:20]]


def test_stream_matches_a_plain_tarfile_read(shards):
    shard = shards / "train-000001.tar"
    streamed = {s.key: (s.data, s.label) for s in stream_shard(str(shard))}
    assert streamed == plain_tar_samples(shard)


def test_shards_written_by_hand_read_too(shapes, tmp_path):
    """A plain tarfile in the WebDataset layout: keys in folders, extra members ignored, no index (counted)."""
    dataset = load_dataset(shapes)
    for split, samples in (("train", dataset.train[:12]), ("val", dataset.val[:6])):
        with tarfile.open(tmp_path / f"{split}-0.tar", "w") as tar:
            for i, s in enumerate(samples):
                for name, data in (
                    (f"part/{split}_{i}.JPG", Path(s.path).read_bytes()),
                    (f"part/{split}_{i}.json", b'{"source": "hand"}'),
                    (f"part/{split}_{i}.cls", f" {s.label}\n".encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    spec = shard_dataset(str(tmp_path), None, None)
    assert spec.num_train == 12 and spec.num_val == 6
    assert spec.num_classes == max(s.label for s in dataset.train[:12] + dataset.val[:6]) + 1
    got = [(s.key, s.data, s.label) for s in stream_shard(str(tmp_path / "train-0.tar"))]
    assert got == [(f"part/train_{i}", Path(s.path).read_bytes(), s.label) for i, s in enumerate(dataset.train[:12])]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, "gz"])
def test_fast_tar_reader_gives_tarfiles_members(tmp_path, fmt):
    """Long names (ustar prefix, pax path, GNU long name), non-ASCII names, folders, links and extra members."""
    import gzip

    from imgcls.data.shards.tar_members import TarFormatError, members, members_reference

    rng = np.random.default_rng(0)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT if fmt == "gz" else fmt) as tar:
        folder = tarfile.TarInfo("d" * 60 + "/sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for i, name in enumerate(["a.jpg", "a.cls", "é/ü.png", "x" * 90 + "/" + "y" * 80 + ".jpg", "z" * 130 + ".cls"]):
            if fmt == tarfile.USTAR_FORMAT and len(name.rsplit("/", 1)[-1]) > 99:
                continue  # ustar cannot hold a file name over 100 bytes
            data = rng.integers(0, 256, int(rng.integers(0, 1500)), dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            if i == 1:
                link = tarfile.TarInfo("link.jpg")
                link.type, link.linkname = tarfile.SYMTYPE, "a.jpg"
                tar.addfile(link)
    data = gzip.compress(raw.getvalue()) if fmt == "gz" else raw.getvalue()
    expected = list(members_reference(io.BytesIO(data)))
    assert len(expected) >= 4 and list(members(io.BytesIO(data))) == expected
    if fmt == "gz":
        return  # a cut gzip stream is tarfile's to judge (the fast path hands it over)
    cut = len(data) // 2 // 512 * 512 + 100  # inside a member, not between two
    for read in (members, members_reference):
        with pytest.raises((TarFormatError, tarfile.TarError, EOFError)):
            list(read(io.BytesIO(data[:cut])))


# ---- readers decode from memory --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["opencv", "native"])
@pytest.mark.parametrize("train", [True, False])
def test_readers_decode_bytes_exactly_as_files(shapes, kind, train):
    if kind == "native":
        require_native()
    samples = load_dataset(shapes).train[:6]
    paths = [s.path for s in samples]
    encoded = [Encoded(f"mem:{i}", Path(p).read_bytes()) for i, p in enumerate(paths)]
    encoded[2] = Encoded("mem:broken", b"\xff\xd8\xff\xe0 broken")
    reader = make_reader(kind, preprocess(), train=train, num_threads=2)
    seeds = list(range(100, 106))
    from_files = np.zeros((6, 32, 32, 3), np.uint8)
    from_bytes = np.zeros((6, 32, 32, 3), np.uint8)
    assert reader.read_batch(paths, seeds, from_files) == [None] * 6
    errors = reader.read_batch(encoded, seeds, from_bytes)
    assert [e is None for e in errors] == [True, True, False, True, True, True]
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(from_bytes[keep], from_files[keep])
    scale, shift = np.full(3, 0.5, np.float32), np.full(3, -1.0, np.float32)
    norm_files = np.zeros((6, 3, 32, 32), np.float32)
    norm_bytes = np.zeros((6, 3, 32, 32), np.float32)
    reader.read_batch_normalized(paths, seeds, norm_files, scale, shift)
    reader.read_batch_normalized(encoded, seeds, norm_bytes, scale, shift)
    np.testing.assert_array_equal(norm_bytes[keep], norm_files[keep])
    reader.close()


# ---- order: shard order, rank split, shuffle buffer ------------------------------------------------------------------


def test_rank_split_covers_every_sample_once_with_an_odd_number_of_shards():
    counts = [10, 10, 10]
    for epoch in range(4):
        order = shard_order(3, 5, epoch, True)
        assert sorted(order) == [0, 1, 2]
        owned = [rank_shards(order, r, 2) for r in range(2)]
        assert owned[0][1] == owned[1][1] == order[2:]  # the odd shard is shared
        assert sorted(owned[0][0] + owned[1][0]) == sorted(order[:2])
        assert [rank_sample_count(counts, order, r, 2) for r in range(2)] == [15, 15]
    assert len({tuple(shard_order(3, 5, epoch, True)) for epoch in range(8)}) > 2  # a new order per epoch
    assert shard_order(3, 5, 0, False) == [0, 1, 2]


def fnv1a_64(data: bytes) -> int:
    """FNV-1a, 64-bit, written from its definition (offset basis 14695981039346656037, prime 1099511628211)."""
    h = 14695981039346656037
    for byte in data:
        h = ((h ^ byte) * 1099511628211) % 2**64
    return h


def test_fnv1a_matches_its_published_vectors():
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_sample_seed_comes_from_the_run_seed_the_epoch_and_the_shard_key():
    from imgcls.data.shards.order import key_hash
    from imgcls.randomness import sample_seed, sample_seeds, splitmix64

    expected = splitmix64(fnv1a_64(b"train-000003.tar/000042"))
    assert key_hash("train-000003.tar", "000042") == expected
    assert int(sample_seeds(7, 2, [expected])[0]) == sample_seed(7, 2, expected)
    hashes = [key_hash(f, k) for f in ("a.tar", "b.tar") for k in ("1", "2")]
    seeds = {int(x) for s in (7, 8) for e in (0, 1) for x in sample_seeds(s, e, hashes)}
    assert len(seeds) == 16


def test_batch_seeds_equal_the_per_sample_seed_on_random_inputs():
    from imgcls.randomness import sample_seed, sample_seeds

    rng = np.random.default_rng()
    for _ in range(5):
        n = int(rng.integers(1, 300))
        indices = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
        indices[0] = 2**64 - 1  # the largest key
        random_seed, epoch = int(rng.integers(0, 2**63)), int(rng.integers(0, 1000))
        got = sample_seeds(random_seed, epoch, indices)
        assert got.dtype == np.uint64
        assert [int(x) for x in got] == [sample_seed(random_seed, epoch, int(i)) for i in indices]


def test_shuffle_buffer_is_a_bounded_seeded_permutation():
    items = list(range(200))
    out = list(shuffle_buffer(iter(items), 16, seed=3))
    assert sorted(out) == items and out != items
    assert out == list(shuffle_buffer(iter(items), 16, seed=3))
    assert out != list(shuffle_buffer(iter(items), 16, seed=4))
    # bounded: an item leaves at most ~size positions before it arrives
    assert all(pos >= item - 16 for pos, item in enumerate(out))
    assert list(shuffle_buffer(iter(items), 1, seed=3)) == items
    assert sorted(shuffle_buffer(iter(items[:5]), 16, seed=3)) == items[:5]  # fewer items than the buffer


def keys_of(loader: ShardLoader, epoch: int) -> list[str]:
    return [f"{Path(s.shard).name}:{s.key}" for batch in loader.batches_of(epoch) for s in batch]


def test_two_ranks_read_disjoint_halves_and_the_same_number_of_batches(shards):
    files = [str(p) for p in sorted(shards.glob("train-*.tar"))]  # 3 shards of 20
    everything = {f"{Path(f).name}:{key}" for f in files for key in plain_tar_samples(Path(f))}
    for epoch in range(2):
        ranks = [shard_loader(files, [20, 20, 20], rank=r, world_size=2, shuffle_buffer=8) for r in range(2)]
        seen = [keys_of(loader, epoch) for loader in ranks]
        assert len(ranks[0]) == len(ranks[1]) == 6 and [len(s) for s in seen] == [30, 30]
        assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == everything
    one = shard_loader(files, [20, 20, 20], shuffle_buffer=8)
    assert keys_of(one, 0) == keys_of(one, 0) and keys_of(one, 0) != keys_of(one, 1)


def test_unequal_shards_give_every_rank_the_same_steps(shards, tmp_path):
    files = [str(p) for p in sorted(shards.glob("train-*.tar"))]
    small = tmp_path / "train-small.tar"
    with tarfile.open(files[0]) as src, tarfile.open(small, "w") as dst:
        for member in src.getmembers()[:8]:  # 4 samples
            dst.addfile(member, src.extractfile(member))
    locations, counts = [*files[:2], str(small)], [20, 20, 4]
    padded = 0
    for seed, epoch in [(seed, epoch) for seed in (7, 8, 9) for epoch in range(3)]:
        ranks = [shard_loader(locations, counts, rank=r, world_size=2, random_seed=seed) for r in range(2)]
        seen = [keys_of(loader, epoch) for loader in ranks]
        # 44 samples: 22 a rank, 4 whole batches of 5 each, whatever this epoch's shares hold (30 and 14, or ...)
        assert [len(s) for s in seen] == [20, 20] and len(ranks[0]) == len(ranks[1]) == 4
        assert not set(seen[0]) & set(seen[1])
        padded += sum(len(set(s)) < len(s) for s in seen)  # a short share reads its shards again
    assert padded > 0


def test_mid_epoch_start_continues_the_same_batches(shards):
    files = [str(p) for p in sorted(shards.glob("train-*.tar"))]
    loader = shard_loader(files, [20, 20, 20])
    whole = [[s.key for s in b] for b in loader.batches_of(1)]
    assert [[s.key for s in b] for b in loader.batches_of(1)[5:]] == whole[5:]
    loader.set_epoch(1)
    full = [labels.tolist() for _, labels in loader]
    loader.set_epoch(1, start_batch=5)
    assert [labels.tolist() for _, labels in loader] == full[5:]


# ---- damage ----------------------------------------------------------------------------------------------------------


def damaged_copy(shards: Path, out: Path) -> Path:
    """train shards: 000000 intact, 000001 cut in the middle, 000002 with one image's bytes broken."""
    out.mkdir()
    for f in shards.glob("train-*.tar"):
        (out / f.name).write_bytes(f.read_bytes())
    cut = out / "train-000001.tar"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    raw = bytearray((out / "train-000002.tar").read_bytes())
    start = raw.index(b"\xff\xd8\xff", 1024)  # an image's first bytes, past the first header
    raw[start : start + 400] = b"\x00" * 400
    (out / "train-000002.tar").write_bytes(bytes(raw))
    return out


def test_damaged_shard_and_image_are_reported_and_the_epoch_goes_on(shards, tmp_path, capsys):
    out = damaged_copy(shards, tmp_path / "damaged")
    files = [str(out / f"train-{i:06d}.tar") for i in range(3)]
    loader = shard_loader(files, [20, 20, 20], batch_size=4, shuffle=False)
    images = sum(len(labels) for _, labels in loader)
    err = capsys.readouterr().err.splitlines()
    shard_lines = [line for line in err if "train-000001.tar" in line]
    assert len(shard_lines) == 1 and shard_lines[0].startswith("warning: shard ") and "going on" in shard_lines[0]
    assert [name for name, _ in loader.shard_errors] == [files[1]]
    assert len(loader.skipped) == 1 and loader.skipped[0][0].startswith(files[2] + ":")
    assert len(loader) == 15 and images == 15 * 4 - 1  # the short shard is padded by a second pass; one bad image


def test_nothing_readable_is_one_error(tmp_path):
    from imgcls.data.loader import NoReadableImageError

    bad = tmp_path / "train-0.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    loader = shard_loader([str(bad)], [10], batch_size=2)
    with pytest.raises(NoReadableImageError, match="none of its 1 shards"):
        list(loader)


def test_http_retries_a_dropped_connection_and_reports_a_404(shards, monkeypatch):
    import imgcls.data.shards.tar_stream as tar_stream

    monkeypatch.setattr(tar_stream, "HTTP_BACKOFF_SECONDS", 0.01)
    files = {p.name: p for p in shards.glob("*.tar")} | {"index.json": shards / "index.json"}
    expected = plain_tar_samples(shards / "train-000000.tar")
    with WeightsServer(files) as server:
        url = f"{server.url}/train-000000.tar"
        server.truncate_at = 30_000
        server.behaviours = ["truncate"]  # the first GET breaks off mid-shard; the second completes
        got = [(s.key, s.data, s.label) for s in stream_shard(url, backoff=0.01)]
        assert len(server.gets("train-000000.tar")) == 2
        assert {k: (d, c) for k, d, c in got} == expected and len(got) == len(expected)  # none twice, none lost
        server.behaviours = ["truncate"] * 3
        with pytest.raises(ShardReadError, match="after [0-9]+ samples"):
            list(stream_shard(url, retries=2, backoff=0.01))
        with pytest.raises(ShardReadError, match="HTTP 404"):
            list(stream_shard(f"{server.url}/missing.tar", backoff=0.01))
        assert len(server.gets("missing.tar")) == 1  # a 404 is final: no retry
        spec = shard_dataset(None, f"{server.url}/train-{{000000..000002}}.tar", f"{server.url}/val-000000.tar")
        assert spec.num_train == 60 and spec.num_val == 20 and spec.num_classes == 10
