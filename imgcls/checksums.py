"""The checksum manifest of a checkpoint folder: ``checksums.sha256``, one ``<sha256 hex>  <file name>`` line per
file, the format of ``sha256sum`` (``cd <checkpoint> && sha256sum -c checksums.sha256`` checks it by hand).

``imgcls.checkpoint`` hashes each file as it streams it to disk and writes the manifest into the same hidden temp
folder, so a published checkpoint always carries the manifest of exactly its files; every read checks a file
against it before loading it. A folder without a manifest (written before manifests existed) loads unchecked, as
does a file the manifest does not list.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

MANIFEST_FILE = "checksums.sha256"
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


def write_manifest(folder: Path, digests: dict[str, str]) -> None:
    """Write ``folder/checksums.sha256`` for {file name: sha256 hex}, fsynced."""
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))
    with open(folder / MANIFEST_FILE, "x", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(folder: Path) -> dict[str, str] | None:
    """{file name: sha256 hex} of ``folder``'s manifest; None when it has none; ValueError when it is unreadable."""
    manifest = folder / MANIFEST_FILE
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{manifest}: unreadable checksum manifest ({e})") from None
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        found = _LINE.fullmatch(line)
        if found is None:
            raise ValueError(f"{manifest}:{number}: not a '<sha256>  <file>' line (a damaged checkpoint?)")
        digests[found.group(2)] = found.group(1)
    return digests


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in pieces."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(path: Path) -> None:
    """Check ``path`` against the manifest of its folder; ValueError naming the file when its bytes differ from what
    was written. No manifest, or one that does not list the file: nothing to check."""
    recorded = (read_manifest(path.parent) or {}).get(path.name)
    if recorded is not None and file_sha256(path) != recorded:
        raise ValueError(
            f"{path}: its sha256 differs from the one recorded in {MANIFEST_FILE} when it was saved: the file is "
            "damaged (a disk or copy error?); use another checkpoint"
        )
