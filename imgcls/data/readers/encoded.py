"""An image already in memory: what a data source that is not a folder of files (a tar shard) hands the readers.

Every reader takes, where the contract says ``paths``, either a file path (``str``) or an ``Encoded`` image: its
name (for error reports, e.g. ``shard.tar:key.jpg``) and its file bytes, decoded exactly as the file's would be.
"""

from __future__ import annotations

from typing import NamedTuple


class Encoded(NamedTuple):
    """An encoded image (JPEG, PNG, WebP, ... bytes as on disk) and the name it is reported under."""

    name: str
    data: bytes


ImageSource = str | Encoded


def source_name(source: ImageSource) -> str:
    """The name a reader reports ``source`` under: the path, or the in-memory image's name."""
    return source.name if isinstance(source, Encoded) else source


def source_bytes(source: ImageSource) -> bytes:
    """The encoded bytes of ``source``: read from its file, or the ones it holds."""
    if isinstance(source, Encoded):
        return source.data
    with open(source, "rb") as f:
        return f.read()
