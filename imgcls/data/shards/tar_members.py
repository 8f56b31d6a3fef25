"""A tar stream's regular-file members, in order: a lean ustar reader (the fast path) and ``tarfile`` (the reference).

Why not ``tarfile`` alone: it builds a TarInfo per member (checksums, every field decoded) and tops out near 11,000
small samples/s on one core, while the C++ reader decodes the built-in set's 80 px JPEGs at twice that
(bench/results/shards_cpu.md). The fast path reads each 512-byte header, takes the name (ustar prefix + name, or a
pax ``path`` record, or a GNU long name) and the size, reads the data and skips the padding: the same members as
``tarfile``'s stream mode for uncompressed tars (tests/test_shards.py compares them on ustar, pax and GNU tars). A
stream that is not an uncompressed tar (gzip, bzip2, xz) goes to the reference, ``tarfile`` in stream mode ``r|*``.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

BLOCK = 512
MAX_MEMBER_BYTES = 256 << 20  # a kept member (an image, a label) larger than this is damage, not data
MAX_LONG_NAME_BYTES = 1 << 20  # a pax header or a GNU long name holds a path
SKIP_PIECE = 1 << 20
_FILE_TYPES = (b"0", b"\x00", b"7")  # regular file (and old-style, contiguous)
_PAX_TYPES = (b"x",)
_SKIP_TYPES = (b"g",)  # global pax header: applies to nothing imgcls reads
_GNU_LONGNAME = b"L"


class TarFormatError(ValueError):
    """The stream is not a tar (a bad header checksum) or ends inside a member."""


def keep_all(name: str) -> bool:
    return True


def members_reference(
    stream: BinaryIO, keep: Callable[[str], bool] = keep_all, max_member_bytes: int = MAX_MEMBER_BYTES
) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of each regular file, by ``tarfile`` in stream mode (any compression); data None when not
    ``keep(name)``."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            if not keep(member.name):
                yield member.name, None
                continue
            _check_size(member.name, member.size, max_member_bytes)
            yield member.name, tar.extractfile(member).read()


def _check_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise TarFormatError(f"member {name} holds {size} bytes, over the limit of {limit}")


def read_upto(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the stream (a socket may hand over less per read)."""
    data = stream.read(size)
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = read_upto(stream, size)
    if len(data) < size:
        raise TarFormatError(f"unexpected end of data ({len(data)} of {size} bytes)")
    return data


def _skip(stream: BinaryIO, size: int) -> None:
    """Pass over ``size`` bytes in bounded pieces (a header may claim any size)."""
    done = 0
    while done < size:
        got = len(read_upto(stream, min(SKIP_PIECE, size - done)))
        if got == 0:
            raise TarFormatError(f"unexpected end of data ({done} of {size} bytes)")
        done += got


def _octal(field: bytes) -> int:
    """A header number: octal text, or base-256 (GNU, high bit set) for sizes over 8 GB."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip()
    if text.translate(None, b"01234567"):  # int() would also take a sign or underscores; a header has digits
        raise ValueError(f"bad number field {field!r}")
    return int(text, 8) if text else 0


def _checksum_ok(header: bytes) -> bool:
    """Whether a 512-byte block is a tar header: its stored checksum is the sum of its bytes (the field as spaces)."""
    try:
        stored = _octal(header[148:156])
    except ValueError:  # not octal text: not a header (compressed data, garbage)
        return False
    return stored == sum(header[:148]) + 8 * 32 + sum(header[156:])


def _pax_path(records: bytes) -> str | None:
    """The ``path`` of a pax extended header ('<len> path=<value>\\n' records), or None."""
    pos = 0
    while pos < len(records):
        space = records.find(b" ", pos)
        if space < 0:
            break
        digits = records[pos:space]
        if not digits.isdigit() or int(digits) <= len(digits) + 1 or pos + int(digits) > len(records):
            raise TarFormatError("bad pax record length")
        length = int(digits)
        key, _, value = records[space + 1 : pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        pos += length
    return None


def members(
    stream: BinaryIO, keep: Callable[[str], bool] = keep_all, max_member_bytes: int = MAX_MEMBER_BYTES
) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of each regular file of a tar stream, in order (data None when not ``keep(name)``); an
    uncompressed tar by the lean reader, anything else by ``members_reference``. TarFormatError (or tarfile's errors)
    for a stream that is not a tar or breaks."""
    header = read_upto(stream, BLOCK)
    if is_tar_header(header):
        yield from _lean(stream, header, keep, max_member_bytes)
        return
    yield from members_reference(Prepended(header, stream), keep, max_member_bytes)


def is_tar_header(block: bytes) -> bool:
    """Whether ``block`` is a whole 512-byte tar header with a good checksum (an uncompressed tar starts so)."""
    return len(block) == BLOCK and _checksum_ok(block)


def _lean(
    stream: BinaryIO, header: bytes, keep: Callable[[str], bool], max_member_bytes: int
) -> Iterator[tuple[str, bytes | None]]:
    long_name: str | None = None
    while True:
        if len(header) < BLOCK:
            if not header:
                return  # the end without the two zero blocks: as tarfile, accept it
            raise TarFormatError("unexpected end of data (a cut header)")
        if header == bytes(BLOCK):
            return  # end-of-archive marker
        if not _checksum_ok(header):
            raise TarFormatError("bad tar header checksum (not a tar, or damaged)")
        kind, size = header[156:157], _octal(header[124:136])
        padding = -size % BLOCK
        if kind in _FILE_TYPES:
            name = long_name
            if name is None:
                raw = header[:100].split(b"\x00", 1)[0]
                prefix = header[345:500].split(b"\x00", 1)[0] if header[257:262] == b"ustar" else b""
                name = ((prefix + b"/" + raw) if prefix else raw).decode("utf-8", "surrogateescape")
            long_name = None
            # A member is given once its data is read, before its padding (as csrc/tar_samples.cpp does).
            if keep(name):
                _check_size(name, size, max_member_bytes)
                yield name, _read_exact(stream, size)
            else:
                _skip(stream, size)
                yield name, None
            _skip(stream, padding)
        elif kind in _PAX_TYPES or kind == _GNU_LONGNAME:
            if size > MAX_LONG_NAME_BYTES:
                raise TarFormatError("a long-name header over 1 MiB")
            data = _read_exact(stream, size)
            _skip(stream, padding)
            if kind in _PAX_TYPES:
                long_name = _pax_path(data)
            else:
                long_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        else:
            _skip(stream, size + padding)
            if kind not in _SKIP_TYPES:
                long_name = None  # a folder, a link, ...: not a sample member
        header = read_upto(stream, BLOCK)


class Prepended:
    """A read-only stream: ``head`` first, then the rest of ``stream`` (the bytes peeked at go back in front)."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head, self._stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._stream.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:
            data += self._stream.read(size - len(data))
        return data
