"""Tar shards written with the standard library, for tests/test_tar_split.py and as the seeds of the tar split fuzz
target (``python -m tests.tar_corpus OUT_DIR``, run from the repo root by csrc/fuzz/run_fuzz.sh): the ustar, pax and
GNU formats with images, labels, extra members, folders, links, long and non-ASCII names, and an empty archive."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> None:
    """One member: a regular file holding ``data``, a folder, or a symbolic link."""
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "elsewhere.jpg"
        tar.addfile(info)
        return
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def tar_bytes(fmt: int, members: list[tuple]) -> bytes:
    """A tar of ``members`` (``add``'s arguments) in format ``fmt``; non-UTF-8 names as surrogate escapes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for member in members:
            add(tar, *member)
    return raw.getvalue()


def shard(fmt: int, count: int) -> bytes:
    """``count`` samples of four key shapes, some with an extra .json, a folder first and a link among them."""
    members: list[tuple] = [("dir", b"", tarfile.DIRTYPE)]
    for i in range(count):
        key = [f"s{i}", "x" * 70 + f"/long{i}", f"dir/é{i}", f"v{i}.seg"][i % 4]
        files = [(f"{key}.{['jpg', 'PNG', 'jpeg', 'webp'][i % 4]}", bytes(range(i * 7 % 256)) * 3)]
        files += [(f"{key}.cls", f" {i}\n".encode()), (f"{key}.json", b"{}")]
        members += files[: 3 if i % 3 == 0 else 2]
        if i == 1:
            members.append(("link.jpg", b"", tarfile.SYMTYPE))
    return tar_bytes(fmt, members)


def write_seeds(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    seeds = {
        f"{name}.tar": shard(fmt, 6)
        for name, fmt in [("ustar", tarfile.USTAR_FORMAT), ("pax", tarfile.PAX_FORMAT), ("gnu", tarfile.GNU_FORMAT)]
    }
    seeds["empty.tar"] = shard(tarfile.USTAR_FORMAT, 0)
    for name, data in seeds.items():
        (out / name).write_bytes(data[: len(data) - len(data) % 512 if len(data) > 4096 else len(data)])
    return [out / name for name in seeds]


if __name__ == "__main__":
    print(f"tar_corpus: {len(write_seeds(Path(sys.argv[1])))} seeds in {sys.argv[1]}")
