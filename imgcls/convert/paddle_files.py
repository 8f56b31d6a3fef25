"""Paddle 1.x parameter files, from a tar (plain or compressed) or a folder, read with memory bounded by a plan.

A released ``<Model>_pretrained.tar`` holds one folder with one file per variable (file name = variable name),
each in Paddle's LoDTensor format (little-endian):

    uint32 version (0) | uint64 lod_level, then per level uint64 nbytes + offsets
    uint32 tensor version (0) | int32 desc_len | TensorDesc protobuf (1: data_type varint, 2: dims int64)
    raw data, C order

A file's header gives its dtype and shape before any data, so a ``plan`` decides per file from its name and header:
read it (then its size must be exactly header + data), pass over it (its data is never read), or refuse it (the
plan raises ValueError). Files that are not tensors are passed over too. A tar is read as a stream of members: a
plain tar passes over data by seeking; a compressed one (gzip, bzip2, xz) by decompressing, so it may decompress
to at most ``max_unpacked`` bytes, checked before a member's data is decompressed. No single read takes more than
``MAX_TAR_READ`` bytes (tarfile reads a long name or a pax header whole), and no tar has more than
``MAX_TAR_MEMBERS`` members. Every problem is a ValueError whose message is one line.
"""

from __future__ import annotations

import io
import lzma
import math
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from imgcls.limits import MAX_TAR_MEMBERS, MAX_TAR_READ, MAX_TENSOR_HEADER

PADDLE_DTYPES = {
    0: np.bool_,
    1: np.int16,
    2: np.int32,
    3: np.int64,
    4: np.float16,
    5: np.float32,
    6: np.float64,
    20: np.uint8,
    21: np.int8,
}
COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
DATA_CHUNK = 4 << 20  # tensor data is read in pieces of this size (each one read of the tar stream)


@dataclass(frozen=True)
class TensorHeader:
    """What a tensor file says before its data: dtype (little-endian), shape, and how many bytes the header takes."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        """Bytes of data that follow the header."""
        return math.prod(self.shape) * self.dtype.itemsize


# plan(name, header) -> True: read the tensor; False: pass over it; raises ValueError: refuse the checkpoint.
Plan = Callable[[str, TensorHeader], bool]


@dataclass
class PaddleCheckpoint:
    """What ``load_paddle_checkpoint`` read: the tensors, the files that were not Paddle tensors, and the tensors the
    plan passed over (their data unread)."""

    tensors: dict[str, np.ndarray]
    skipped: list[str] = field(default_factory=list)  # released tars hold some non-tensor files
    unread: list[str] = field(default_factory=list)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint in TensorDesc")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _parse_tensor_desc(desc: bytes) -> tuple[int, list[int]]:
    """(data_type, dims) from a VarType.TensorDesc message; dims packed or not."""
    dtype, dims, pos = None, [], 0
    while pos < len(desc):
        key, pos = _varint(desc, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 1 and wire == 0:
            dtype, pos = _varint(desc, pos)
        elif field_no == 2 and wire == 0:
            d, pos = _varint(desc, pos)
            dims.append(d - (1 << 64) if d >= 1 << 63 else d)
        elif field_no == 2 and wire == 2:
            n, pos = _varint(desc, pos)
            end = pos + n
            while pos < end:
                d, pos = _varint(desc, pos)
                dims.append(d - (1 << 64) if d >= 1 << 63 else d)
        else:
            raise ValueError(f"unexpected field {field_no} (wire {wire}) in TensorDesc")
    if dtype is None:
        raise ValueError("TensorDesc without data_type")
    return dtype, dims


def read_tensor_header(read: Callable[[int], bytes]) -> TensorHeader:
    """Parse a tensor file's header through ``read(n)``, reading nothing past it; ValueError when the bytes are not a
    Paddle tensor header (or one over ``MAX_TENSOR_HEADER`` bytes: parameters carry no LoD)."""
    taken = 0

    def take(n: int) -> bytes:
        nonlocal taken
        if n < 0 or taken + n > MAX_TENSOR_HEADER:
            raise ValueError(f"not a parameter file (a header over {MAX_TENSOR_HEADER} bytes)")
        data = read(n)
        if len(data) != n:
            raise ValueError("truncated Paddle tensor file")
        taken += n
        return data

    if int.from_bytes(take(4), "little") != 0:
        raise ValueError("unsupported LoDTensor version")
    for _ in range(int.from_bytes(take(8), "little")):
        take(int.from_bytes(take(8), "little"))
    if int.from_bytes(take(4), "little") != 0:
        raise ValueError("unsupported Tensor version")
    dtype_id, dims = _parse_tensor_desc(take(int.from_bytes(take(4), "little", signed=True)))
    if dtype_id not in PADDLE_DTYPES:
        raise ValueError(f"unsupported Paddle dtype {dtype_id}")
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in {dims}")
    return TensorHeader(np.dtype(PADDLE_DTYPES[dtype_id]).newbyteorder("<"), tuple(dims), taken)


def _read_data(file: BinaryIO, header: TensorHeader) -> np.ndarray:
    """The tensor whose header was just read from ``file``, in pieces of ``DATA_CHUNK`` into one buffer."""
    data = bytearray(header.nbytes)
    view = memoryview(data)
    done = 0
    while done < len(data):
        piece = file.read(min(DATA_CHUNK, len(data) - done))
        if not piece:
            raise ValueError("truncated Paddle tensor file")
        view[done : done + len(piece)] = piece
        done += len(piece)
    array = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
    return array.astype(header.dtype.newbyteorder("="), copy=False)


def read_lod_tensor(data: bytes) -> np.ndarray:
    """Decode one Paddle LoDTensor file."""
    f = io.BytesIO(data)
    header = read_tensor_header(f.read)
    if len(data) != header.offset + header.nbytes:
        raise ValueError("truncated Paddle tensor file" if len(data) < header.offset + header.nbytes else "trailing "
                         "bytes after Paddle tensor data")  # fmt: skip
    return _read_data(f, header)


def _take_file(name: str, size: int, file: BinaryIO, plan: Plan, found: PaddleCheckpoint) -> None:
    """One file of the checkpoint: its header, then its data when the plan wants it."""
    try:
        header = read_tensor_header(file.read)
    except ValueError:
        found.skipped.append(name)
        return
    wanted = plan(name, header)
    described = header.offset + header.nbytes
    if size != described:
        if wanted:
            raise ValueError(
                f"{name}: the file holds {size} bytes but its header describes a {header.dtype.name} tensor of shape "
                f"{header.shape}, {described} bytes (damaged, or not a Paddle parameter file)"
            )
        found.skipped.append(name)
    elif wanted:
        found.tensors[name] = _read_data(file, header)
    else:
        found.unread.append(name)


class _BoundedStream(io.RawIOBase):
    """A read-only view of ``stream`` that refuses any single read over ``max_read`` bytes and any position past
    ``max_position`` (checked before the read or seek that would go there, so a compressed stream is never
    decompressed beyond it)."""

    def __init__(self, stream: BinaryIO, max_read: int, max_position: int | None, what: str) -> None:
        super().__init__()
        self.stream, self.max_read, self.max_position, self.what = stream, max_read, max_position, what

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.stream.tell()

    def _reach(self, end: int) -> None:
        if self.max_position is not None and end > self.max_position:
            raise ValueError(f"the {self.what} archive decompresses to more than {self.max_position} bytes, more than "
                             "the model's tensors can fill (a compression bomb?)")  # fmt: skip

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.max_read:
            raise ValueError(f"a tar header record of {size} bytes, more than the {self.max_read} a weights tar needs "
                             "(damaged or hostile)")  # fmt: skip
        self._reach(self.stream.tell() + size)
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.stream.tell() + offset if whence == os.SEEK_CUR else None
        if target is None:
            raise ValueError("a weights tar is read front to back")
        self._reach(target)
        return self.stream.seek(target)


@contextmanager
def _decompressed(raw: BinaryIO) -> Iterator[tuple[BinaryIO, str | None]]:
    """(``raw`` decompressed when it starts with a compressor's magic, the compressor's name or None)."""
    magic = raw.read(6)
    raw.seek(0)
    kind = next((k for m, k in COMPRESSED_MAGIC.items() if magic.startswith(m)), None)
    if kind is None:
        yield raw, None
        return
    if kind == "gzip":
        import gzip

        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    elif kind == "bzip2":
        import bz2

        stream = bz2.BZ2File(raw, mode="rb")
    else:
        stream = lzma.LZMAFile(raw, mode="rb")
    with stream:
        yield stream, kind


@contextmanager
def _opened_archive(raw: BinaryIO, max_unpacked: int | None) -> Iterator[tarfile.TarFile]:
    """``raw`` as a tar stream (decompressed when compressed), bounded by _BoundedStream."""
    with _decompressed(raw) as (stream, kind):
        bounded = _BoundedStream(stream, MAX_TAR_READ, max_unpacked if kind else None, kind or "tar")
        with tarfile.open(fileobj=bounded, mode="r:") as tar:
            yield tar


def is_tar_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with a valid tar header block (after decompression, for a compressed file). Unlike
    ``tarfile.is_tarfile`` it reads that one block only, never a long name or pax record a header announces."""
    try:
        with open(path, "rb") as raw, _decompressed(raw) as (stream, _):
            block = stream.read(tarfile.BLOCKSIZE)
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError):
        return False
    return True


def _tar_files(path: Path, max_unpacked: int | None) -> Iterator[tuple[str, int, BinaryIO]]:
    """(file name, size, open file) of each regular member, in archive order; links, folders and devices pass."""
    with open(path, "rb") as raw, _opened_archive(raw, max_unpacked) as tar:
        for count, member in enumerate(tar, 1):
            if count > MAX_TAR_MEMBERS:
                raise ValueError(f"more than {MAX_TAR_MEMBERS} members (not a Paddle checkpoint)")
            if member.isfile():
                yield Path(member.name).name, member.size, tar.extractfile(member)


def _folder_files(path: Path) -> Iterator[tuple[str, int, BinaryIO]]:
    """(file name, size, open file) of each file in ``path`` and below, sorted by path."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if len(files) > MAX_TAR_MEMBERS:
        raise ValueError(f"more than {MAX_TAR_MEMBERS} files (not a Paddle checkpoint)")
    for file in files:
        with open(file, "rb") as f:
            yield file.name, os.fstat(f.fileno()).st_size, f


def read_everything(name: str, header: TensorHeader) -> bool:
    """The plan that reads every tensor (memory bounded only by the files' sizes)."""
    return True


def load_paddle_checkpoint(
    path: str | os.PathLike, plan: Plan = read_everything, max_unpacked: int | None = None
) -> PaddleCheckpoint:
    """Read a ``<Model>_pretrained.tar`` (plain or compressed) or its unpacked folder, as ``plan`` says; files that
    are not Paddle tensors are skipped and named in the result. ValueError (one line, naming ``path``) for a file
    the plan refuses, a tensor whose size is not what its header says, a damaged tar or one over the bounds above;
    FileNotFoundError when ``path`` is neither a folder nor a tar."""
    path = Path(path)
    found = PaddleCheckpoint({})
    if path.is_dir():
        files = _folder_files(path)
    elif path.is_file() and is_tar_archive(path):
        files = _tar_files(path, max_unpacked)
    else:
        raise FileNotFoundError(f"{path}: not a Paddle checkpoint folder or .tar")
    try:
        for name, size, file in files:
            _take_file(name, size, file, plan, found)
    except ValueError as e:
        raise ValueError(f"{path}: {str(e).splitlines()[0]}") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
        damage = "cannot read it" if path.is_dir() else "truncated or corrupt tar archive"
        raise ValueError(f"{path}: {damage} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    finally:
        files.close()
    if not found.tensors and not found.unread:
        raise ValueError(f"{path}: no Paddle tensors found")
    return found
