"""Streaming a WebDataset tar shard: members in order, grouped by key, never extracted to disk.

Layout: consecutive members sharing a key (the member's path up to the first dot of its file name) form a sample:
``<key>.jpg|.jpeg|.png|.webp`` (the image, bytes unchanged) and ``<key>.cls`` (the integer label as text); other
members (``.json``, ``.txt``, ...) are passed over unread. Two ways to the same samples: the fast path, C++
(csrc/tar_samples.cpp, ``imgcls._reader.TarSamples``: the stream fed in 1 MiB chunks, headers parsed, members
grouped and key hashes computed without a Python object per member), and the reference, Python's grouping of
``tar_members.members`` (the lean ustar reader, or ``tarfile`` in stream mode for compressed tars), used where the
native module is not built and for any stream that is not an uncompressed tar. The source is a local file or an
HTTP(S) response.

A shard that cannot be opened (404, refused connection, missing file) or breaks off (truncated file, dropped
connection) raises ``ShardReadError`` after the samples it did give; an HTTP shard is fetched again with backoff (at
most ``retries`` more times), skipping the samples already given, before that.
"""

from __future__ import annotations

import http.client
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from itertools import islice
from typing import BinaryIO, NamedTuple

from .order import key_hash
from .pattern import is_url
from .tar_members import BLOCK, MAX_MEMBER_BYTES, Prepended, is_tar_header, members, read_upto

SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTENSION = "cls"
HTTP_RETRIES = 3  # further tries of an HTTP shard after a failed one
HTTP_BACKOFF_SECONDS = 0.5  # first wait; doubled after each failed try
HTTP_TIMEOUT_SECONDS = 60.0  # per connect / read
_RETRY_STATUS = frozenset([408, 429, 500, 502, 503, 504])  # worth another try; any other HTTP error is final
CHUNK_BYTES = 1 << 20  # what the fast path reads at a time
_LABEL = re.compile(rb"\s*[0-9]{1,18}\s*")  # the label format; csrc/tar_samples.cpp accepts the same


class ShardReadError(Exception):
    """A shard could not be opened, or broke off; ``status`` is the HTTP status when the server answered one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ShardSample(NamedTuple):
    """One sample of a shard: the shard's location, the sample's key, its image's extension, the encoded image
    bytes (unchanged), the label and the key's hash (``order.key_hash``: what its augmentation seeds come from)."""

    shard: str
    key: str
    ext: str
    data: bytes
    label: int
    key_hash: int

    @property
    def name(self) -> str:
        """What reports call it: ``<shard>:<key>.<ext>``."""
        return f"{self.shard}:{self.key}.{self.ext}"


def split_key(member_name: str) -> tuple[str, str]:
    """``dir/abc.seg.jpg`` -> (``dir/abc``, ``seg.jpg``): the key ends at the first dot of the file name."""
    folder, _, base = member_name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext if dot else "")


def open_shard(location: str, timeout: float = HTTP_TIMEOUT_SECONDS) -> BinaryIO:
    """A binary stream of the shard at ``location`` (a path or an HTTP(S) URL); ShardReadError if unreachable."""
    try:
        if is_url(location):
            return urllib.request.urlopen(location, timeout=timeout)  # noqa: S310 - http(s) only (is_url)
        return open(location, "rb")
    except urllib.error.HTTPError as e:
        raise ShardReadError(f"HTTP {e.code} {e.reason}", e.code) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise ShardReadError(f"cannot open ({reason})") from None


def wanted_member(name: str) -> bool:
    """Whether a member's data is part of a sample (an image or a label); others are passed over unread."""
    kind = split_key(name)[1].lower()
    return kind in SHARD_IMAGE_EXTENSIONS or kind == LABEL_EXTENSION


def native_split_available() -> bool:
    """Whether the C++ split (``imgcls._reader.TarSamples``) is built and loadable."""
    try:
        from imgcls import _reader
    except ImportError:
        return False
    return hasattr(_reader, "TarSamples")


def read_samples(stream: BinaryIO, shard_name: str, native: bool | None = None) -> Iterator[ShardSample]:
    """The complete samples of one tar stream, in order; a sample without image or label is left out. A stream that
    breaks off raises ShardReadError after the samples before the break. ``native``: the C++ split (default:
    when built) or the Python reference."""
    if native is None:
        native = native_split_available()
    try:
        yield from (_native_samples if native else _python_samples)(stream, shard_name)
    except (tarfile.TarError, EOFError, OSError, http.client.HTTPException, ValueError) as e:
        raise ShardReadError(f"{type(e).__name__}: {str(e).strip() or 'broken stream'}") from None


def _native_samples(stream: BinaryIO, shard_name: str) -> Iterator[ShardSample]:
    """The C++ split, fed in chunks read into one reused buffer; a stream that does not start with a tar header
    (a compressed tar, garbage) goes to the Python reference, which hands it to ``tarfile``."""
    from imgcls._reader import TarSamples

    head = read_upto(stream, BLOCK)
    if not is_tar_header(head):
        yield from _python_samples(Prepended(head, stream), shard_name)
        return
    split = TarSamples(_seed_name(shard_name).encode("utf-8", "surrogateescape"), MAX_MEMBER_BYTES)
    for done in _split_chunks(stream, head, split):
        for key, ext, image, label, hashed in done:
            if not isinstance(label, int):  # the split found a .cls that is not a label: parse_label says why
                label = parse_label(label, f"{shard_name}:{key}.{LABEL_EXTENSION}")
            yield ShardSample(shard_name, key, ext, image, label, hashed)


def _split_chunks(stream: BinaryIO, head: bytes, split) -> Iterator[list[tuple]]:
    """What ``split`` makes of ``head``, then of each chunk of the stream (read into one reused buffer), then of
    the stream's end: one list of sample tuples per chunk."""
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    yield split.feed(head)
    while not split.ended and (got := stream.readinto(buffer)):
        yield split.feed(view[:got])
    yield split.finish()


def _python_samples(stream: BinaryIO, shard_name: str) -> Iterator[ShardSample]:
    """The reference: ``tar_members.members`` grouped by key in Python (members no sample needs are not read)."""
    seed_name = _seed_name(shard_name)
    key, image, ext, label = None, None, "", None

    def sample() -> ShardSample | None:
        if key is None or image is None or label is None:
            return None
        return ShardSample(shard_name, key, ext, image, label, key_hash(seed_name, key))

    for name, data in members(stream, wanted_member):
        member_key, member_ext = split_key(name)
        if member_key != key:
            if (done := sample()) is not None:
                yield done
            key, image, ext, label = member_key, None, "", None
        if data is None:
            continue
        if member_ext.lower() in SHARD_IMAGE_EXTENSIONS:
            image, ext = data, member_ext
        else:
            label = parse_label(data, f"{shard_name}:{name}")
    if (done := sample()) is not None:
        yield done


def _seed_name(shard_name: str) -> str:
    """The shard's file name: what its samples' seeds hash (so a shard read locally or over HTTP gets the same)."""
    return os.path.basename(shard_name)


def parse_label(raw: bytes, where: str) -> int:
    """A ``.cls`` member's label: ASCII digits (at most 18) with optional surrounding whitespace; ValueError
    otherwise."""
    if _LABEL.fullmatch(raw) is None:
        raise ValueError(f"{where}: label {raw[:20]!r} is not a non-negative integer of at most 18 digits")
    return int(raw)


def stream_shard(
    location: str, retries: int = HTTP_RETRIES, backoff: float = HTTP_BACKOFF_SECONDS
) -> Iterator[ShardSample]:
    """The samples of the shard at ``location``. An HTTP shard that fails (unreachable, a 5xx, a dropped
    connection) is fetched again after ``backoff`` seconds, doubled each time, at most ``retries`` times, and
    continues after the samples already given; a local one is read once. ShardReadError when it gives up."""
    given, tries = 0, (1 + max(0, retries)) if is_url(location) else 1
    for attempt in range(tries):
        try:
            with open_shard(location) as stream:
                for item in islice(read_samples(stream, location), given, None):  # a retry skips what was given
                    given += 1
                    yield item
            return
        except ShardReadError as e:
            if attempt == tries - 1 or (e.status is not None and e.status not in _RETRY_STATUS):
                raise ShardReadError(f"{e} (after {given} samples)" if given else str(e), e.status) from None
            time.sleep(backoff * 2**attempt)
