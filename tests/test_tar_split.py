"""The C++ split of tar shards into samples (csrc/tar_samples.cpp) against its reference, Python's grouping of the
lean ustar reader (and both against plain ``tarfile``): every chunking, damaged and hostile streams, and proof that
the shard loader streams through the C++ split.

Expected samples come from ``tarfile`` and a grouping written out here, never from the shard code.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from imgcls.data.shards import ShardReadError
from imgcls.data.shards.tar_stream import read_samples

from .conftest import require_native
from .tar_corpus import tar_bytes

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def expected_samples(data: bytes) -> list[tuple[str, str, bytes, int]]:
    """(key, ext, image, label) by tarfile and a plain grouping: consecutive regular files sharing the path up to
    the first dot of the file name; image = the last image member, label = the last .cls; both needed."""
    out, key, image, ext, label = [], None, None, "", None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
        files = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    for name, member in files + [(None, b"")]:
        if name is not None:
            folder, _, base = name.rpartition("/")
            stem, dot, member_ext = base.partition(".")
            member_key = f"{folder}/{stem}" if folder else stem
        if name is None or member_key != key:
            if key is not None and image is not None and label is not None:
                out.append((key, ext, image, label))
            if name is None:
                break
            key, image, ext, label = member_key, None, "", None
        if member_ext.lower() in IMAGE_EXTS:
            image, ext = member, member_ext
        elif member_ext.lower() == "cls":
            label = int(member)
    return out


def rich_members(rng: np.random.Generator, fmt: int) -> list[tuple]:
    """Samples with everything a shard may hold: folders, links, extra members, upper-case extensions, long and
    non-ASCII names, empty images, samples missing their image or label, keys with dots, images of many sizes."""

    def blob(n: int | None = None) -> bytes:
        n = int(rng.integers(0, 3000)) if n is None else n
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    members: list[tuple] = [("d" * 40, b"", tarfile.DIRTYPE)]
    long_dir = "x" * 90 if fmt != tarfile.USTAR_FORMAT else "x" * 60
    for i in range(40):
        key = [f"s{i:03d}", f"{long_dir}/s{i:03d}", f"dir/é{i}", f"v{i}.seg"][i % 4]
        if fmt == tarfile.GNU_FORMAT and i % 7 == 3:
            key = f"raw\udce9{i}"  # not UTF-8: a surrogate escape, as tarfile reads it
        ext = ["jpg", "JPEG", "png", "webp"][i % 4]
        if i % 5 != 4:
            members.append((f"{key}.{ext}", blob(0 if i % 11 == 0 else (70_000 if i % 13 == 0 else None))))
        if i % 6 == 0:
            members.append((f"{key}.json", b'{"a": 1}'))
            members.append(("link.jpg", b"", tarfile.SYMTYPE))
        if i % 9 != 8:
            members.append((f"{key}.cls", f" {i % 17}\n".encode()))
    return members


FORMATS = [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]


def samples_of(data: bytes, native: bool, name: str = "shard-7.tar") -> list[tuple]:
    return [(s.key, s.ext, s.data, s.label, s.key_hash) for s in read_samples(io.BytesIO(data), name, native)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_split_gives_tarfiles_samples_in_both_paths(fmt):
    require_native()
    rng = np.random.default_rng()
    data = tar_bytes(fmt, rich_members(rng, fmt))
    expected = expected_samples(data)
    assert len(expected) > 15
    native, reference = samples_of(data, True), samples_of(data, False)
    assert [s[:4] for s in native] == expected
    assert native == reference


@pytest.mark.parametrize("fmt", FORMATS)
def test_split_does_not_depend_on_how_the_stream_is_chunked(fmt):
    require_native()
    from imgcls._reader import TarSamples

    rng = np.random.default_rng()
    data = tar_bytes(fmt, rich_members(rng, fmt))
    whole = TarSamples(b"a.tar", 1 << 20)
    expected = whole.feed(data) + whole.finish()
    for limit in (1, 7, 511, 512, 513, 4096, 100_000):
        split, got, pos = TarSamples(b"a.tar", 1 << 20), [], 0
        buffer = bytearray(limit)  # one buffer for every chunk, overwritten after each feed, as a reader reuses it
        while pos < len(data):
            step = min(int(rng.integers(1, limit + 1)), len(data) - pos)
            buffer[:step] = data[pos : pos + step]
            got += split.feed(memoryview(buffer)[:step])
            buffer[:] = b"\xaa" * limit
            pos += step
        assert got + split.finish() == expected, limit


def outcome(data: bytes, native: bool) -> tuple[list[tuple], str | None]:
    """The samples read before the stream ended, and the error that ended it (None for a clean end)."""
    got = []
    try:
        for sample in read_samples(io.BytesIO(data), "s.tar", native):
            got.append(tuple(sample))
    except ShardReadError as e:
        return got, str(e).split(":")[0]
    return got, None


def test_a_stream_cut_anywhere_gives_the_same_samples_and_error_in_both_paths():
    require_native()
    rng = np.random.default_rng()
    data = tar_bytes(tarfile.PAX_FORMAT, rich_members(rng, tarfile.PAX_FORMAT))
    errors = 0
    for cut in sorted({int(c) for c in rng.integers(1, len(data), 80)} | {100, 512, 1000}):
        native, reference = outcome(data[:cut], True), outcome(data[:cut], False)
        assert native == reference, cut
        errors += native[1] is not None
    assert errors > 40  # most cuts fall inside a member
    assert outcome(data[:1000], True)[1] == "TarFormatError"  # inside the first member's data


def test_one_flipped_byte_gives_the_same_result_in_both_paths():
    require_native()
    rng = np.random.default_rng()
    data = tar_bytes(tarfile.GNU_FORMAT, rich_members(rng, tarfile.GNU_FORMAT)[:30])
    for _ in range(300):
        damaged = bytearray(data)
        pos = int(rng.integers(0, len(data)))
        damaged[pos] = int(rng.integers(0, 256))
        assert outcome(bytes(damaged), True) == outcome(bytes(damaged), False), pos


def ustar_header(name: bytes, size_field: bytes, kind: bytes = b"0") -> bytes:
    """A raw ustar header with any size field, its checksum computed here."""
    header = bytearray(512)
    header[: len(name)] = name
    header[100:108] = b"0000644\x00"
    header[124:136] = size_field.ljust(12, b"\x00")[:12]
    header[156:157] = kind
    header[257:263] = b"ustar\x00"
    header[263:265] = b"00"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\x00 ".encode()
    return bytes(header)


@pytest.mark.parametrize("native", [True, False])
def test_hostile_sizes_fail_in_one_line_within_a_small_address_space(tmp_path, native):
    """Members claiming 20 GB (octal) or 2**80 bytes (base-256), kept or passed over, and a pax record of length
    0: each is one ShardReadError, read with 600 MB of address space beyond what is loaded and a 60 s timeout (no
    allocation of the claimed size, no endless loop)."""
    if native:
        require_native()
    good = b"".join(
        ustar_header(name, b"%011o\x00" % len(data)) + data.ljust(512, b"\x00")
        for name, data in [(b"a.jpg", b"\xff\xd8" * 100), (b"a.cls", b"3")]
    )
    cases = {
        "image_20gb": ustar_header(b"b.jpg", b"%011o\x00" % (20 << 30)) + b"x" * 4096,
        "json_20gb": ustar_header(b"b.json", b"%011o\x00" % (20 << 30)) + b"x" * 4096,
        "base256": ustar_header(b"b.jpg", b"\x80" + (1 << 80).to_bytes(11, "big")[-11:]) + b"x" * 4096,
        "pax_zero": ustar_header(b"pax", b"%011o\x00" % 16, b"x") + b"0 path=loop.jpg\n".ljust(512, b"\x00"),
    }
    for name, tail in cases.items():
        (tmp_path / f"{name}.tar").write_bytes(good + tail)
    script = textwrap.dedent(f"""
        import resource, sys
        from imgcls.data.shards import ShardReadError
        from imgcls.data.shards.tar_stream import read_samples
        import imgcls._reader  # loaded before the limit: only what reading allocates counts against it
        with open("/proc/self/status") as f:
            mapped = next(int(line.split()[1]) << 10 for line in f if line.startswith("VmSize:"))
        limit = mapped + (600 << 20)  # the libraries mapped so far, and 600 MB for reading
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for path in sys.argv[1:]:
            got = []
            try:
                with open(path, "rb") as f:
                    for sample in read_samples(f, path, {native}):
                        got.append(sample.key)
            except ShardReadError as e:
                print(path.rsplit("/", 1)[-1], got, str(e).splitlines()[0])
    """)
    paths = [str(tmp_path / f"{name}.tar") for name in cases]
    run = subprocess.run(
        [sys.executable, "-c", script, *paths],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == len(cases), run.stdout
    for line, name in zip(lines, cases):
        # Sample a is complete only once a member of another key is: the damage comes first, so only the error.
        assert line.startswith(f"{name}.tar [] "), line
    assert "over the limit" in lines[0] and "over the limit" in lines[2]
    assert "unexpected end of data" in lines[1] and "pax record" in lines[3]


def test_a_bad_label_is_one_error_after_the_samples_before_it_in_both_paths():
    require_native()
    data = tar_bytes(
        tarfile.USTAR_FORMAT,
        [("a.jpg", b"1"), ("a.cls", b"4"), ("b.jpg", b"2"), ("b.cls", b"+5"), ("c.jpg", b"3"), ("c.cls", b"6")],
    )
    for native in (True, False):
        got = []
        with pytest.raises(ShardReadError, match=r"s.tar:b.cls: label b'\+5' is not a non-negative integer"):
            for sample in read_samples(io.BytesIO(data), "s.tar", native):
                got.append(sample.key)
        assert got == ["a"]


def test_labels_take_digits_and_ascii_whitespace_only():
    from imgcls.data.shards.tar_stream import parse_label

    assert parse_label(b" \t12\r\n", "x") == 12 and parse_label(b"0", "x") == 0
    assert parse_label(b"9" * 18, "x") == int("9" * 18)
    for bad in (b"", b" ", b"-1", b"+1", b"1_0", b"1.0", b"\x1c1", b"9" * 19, "٣".encode(), b"0x1"):
        with pytest.raises(ValueError):
            parse_label(bad, "x")


def test_the_key_hash_is_the_same_in_cpp_and_python():
    require_native()
    from imgcls._reader import tar_key_hash

    from imgcls.data.shards.order import key_hash

    rng = np.random.default_rng()
    for _ in range(200):
        key = "".join(chr(int(c)) for c in rng.integers(1, 0x2FF, int(rng.integers(0, 30))))
        key += "\udcff" if rng.random() < 0.3 else ""
        shard = f"train-{int(rng.integers(0, 10**6)):06d}.tar"
        raw = key.encode("utf-8", "surrogateescape")
        assert tar_key_hash(shard.encode(), raw) == key_hash(shard, key)


def test_the_shard_loader_streams_through_the_cpp_split(tmp_path, monkeypatch):
    """The fast path ran: every shard of an epoch was fed to imgcls._reader.TarSamples (counted), and the batches
    equal those of the Python reference path."""
    require_native()
    import imgcls._reader as native_module

    from imgcls.data.datasets import load_dataset
    from imgcls.data.shards import ShardLoader, shard_dataset, tar_stream
    from imgcls.data.shards.writer import write_dataset

    from .cli_helpers import tiny_shapes
    from .test_shards import preprocess

    write_dataset(
        load_dataset(tiny_shapes(tmp_path / "shapes", 40, 8)), tmp_path / "shards", shard_size=9, log=lambda _: None
    )
    fed: list[int] = []

    class CountingSplit(native_module.TarSamples):
        def feed(self, chunk):
            fed.append(len(chunk))
            return super().feed(chunk)

    def epoch_keys() -> list[tuple]:
        spec = shard_dataset(str(tmp_path / "shards"), None, None)
        loader = ShardLoader(
            spec.train_shards,
            preprocess=preprocess(),
            train=True,
            batch_size=4,
            random_seed=3,
            num_workers=1,
            prefetch=2,
            reader="native",
            shuffle_buffer=6,
        )
        return [(s.key, s.label, s.key_hash) for batch in loader.batches_of(1) for s in batch]

    monkeypatch.setattr(native_module, "TarSamples", CountingSplit)
    fast = epoch_keys()
    shards = len(list((tmp_path / "shards").glob("train-*.tar")))
    assert shards >= 4 and len(fed) >= 2 * shards  # the header, then the rest of each shard
    monkeypatch.setattr(tar_stream, "native_split_available", lambda: False)
    fed.clear()
    assert epoch_keys() == fast and not fed
