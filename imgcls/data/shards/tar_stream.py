"""Streaming a WebDataset tar shard: members in order, grouped by key, never extracted to disk.

Layout: consecutive members sharing a key (the member's path up to the first dot of its file name) form a sample:
``<key>.jpg|.jpeg|.png|.webp`` (the image, bytes unchanged) and ``<key>.cls`` (the integer label as text); other
members (``.json``, ``.txt``, ...) are ignored. The standard library's ``tarfile`` in stream mode (``r|*``: one
forward pass, any compression) is the reference reader; ``tar_members.py`` has the lean fast path used for
uncompressed tars. The source is a local file or an HTTP(S) response.

A shard that cannot be opened (404, refused connection, missing file) or breaks off (truncated file, dropped
connection) raises ``ShardReadError`` after the samples it did give; an HTTP shard is fetched again with backoff (at
most ``retries`` more times), skipping the samples already given, before that.
"""

from __future__ import annotations

import http.client
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .pattern import is_url
from .tar_members import members

SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTENSION = "cls"
HTTP_RETRIES = 3  # further tries of an HTTP shard after a failed one
HTTP_BACKOFF_SECONDS = 0.5  # first wait; doubled after each failed try
HTTP_TIMEOUT_SECONDS = 60.0  # per connect / read
_RETRY_STATUS = frozenset([408, 429, 500, 502, 503, 504])  # worth another try; any other HTTP error is final


class ShardReadError(Exception):
    """A shard could not be opened, or broke off; ``status`` is the HTTP status when the server answered one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ShardSample:
    """One sample of a shard: the shard's location, the sample's key, its image's extension, the encoded image
    bytes (unchanged) and the label."""

    shard: str
    key: str
    ext: str
    data: bytes
    label: int

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


def read_samples(stream: BinaryIO, shard_name: str) -> Iterator[ShardSample]:
    """The complete samples of one tar stream, in order; a sample without image or label is left out. A stream that
    breaks off raises ShardReadError after the samples before the break."""
    key, image, ext, label = None, None, "", None

    def sample() -> ShardSample | None:
        if key is None or image is None or label is None:
            return None
        return ShardSample(shard_name, key, ext, image, label)

    try:
        for name, data in members(stream):
            member_key, member_ext = split_key(name)
            if member_key != key:
                if (done := sample()) is not None:
                    yield done
                key, image, ext, label = member_key, None, "", None
            kind = member_ext.lower()
            if kind in SHARD_IMAGE_EXTENSIONS:
                image, ext = data, member_ext
            elif kind == LABEL_EXTENSION:
                label = parse_label(data, f"{shard_name}:{name}")
    except (tarfile.TarError, EOFError, OSError, http.client.HTTPException, ValueError) as e:
        raise ShardReadError(f"{type(e).__name__}: {str(e).strip() or 'broken stream'}") from None
    if (done := sample()) is not None:
        yield done


def parse_label(raw: bytes, where: str) -> int:
    """A ``.cls`` member's integer label (ASCII digits, surrounding whitespace allowed); ValueError otherwise."""
    try:
        label = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{where}: label {raw[:20]!r} is not an integer") from None
    if label < 0:
        raise ValueError(f"{where}: negative label {label}")
    return label


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
                for i, item in enumerate(read_samples(stream, location)):
                    if i >= given:
                        given += 1
                        yield item
            return
        except ShardReadError as e:
            if attempt == tries - 1 or (e.status is not None and e.status not in _RETRY_STATUS):
                raise ShardReadError(f"{e} (after {given} samples)" if given else str(e), e.status) from None
            time.sleep(backoff * 2**attempt)
