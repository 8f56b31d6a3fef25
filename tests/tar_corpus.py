"""Seed tars for the tar split fuzz target (``python -m tests.tar_corpus OUT_DIR``, run from the repo root by
csrc/fuzz/run_fuzz.sh): shards in the ustar, pax and GNU formats with images, labels, extra members, folders, links,
long and non-ASCII names, and an empty archive."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path


def shard(fmt: int, count: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        folder = tarfile.TarInfo("dir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for i in range(count):
            key = [f"s{i}", "x" * 70 + f"/long{i}", f"dir/é{i}", f"v{i}.seg"][i % 4]
            members = [(f"{key}.{['jpg', 'PNG', 'jpeg', 'webp'][i % 4]}", bytes(range(i * 7 % 256)) * 3)]
            members += [(f"{key}.cls", f" {i}\n".encode()), (f"{key}.json", b"{}")]
            for name, data in members[: 3 if i % 3 == 0 else 2]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            if i == 1:
                link = tarfile.TarInfo("link.jpg")
                link.type, link.linkname = tarfile.SYMTYPE, "s0.jpg"
                tar.addfile(link)
    return raw.getvalue()


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
