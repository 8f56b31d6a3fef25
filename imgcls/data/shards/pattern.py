"""Where shards are: brace patterns (``train-{000000..000146}.tar``), local paths or ``http(s)://`` URLs, and the
``train-*.tar`` / ``val-*.tar`` files of a data dir."""

from __future__ import annotations

import re
from pathlib import Path

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICES = re.compile(r"\{([^{}]*,[^{}]*)\}")
MAX_EXPANDED = 1_000_000  # a pattern naming more shards than this is a typo (a range of the wrong width)


class ShardPatternError(ValueError):
    """A shard pattern that names no shard or cannot be expanded."""


def is_url(location: str) -> bool:
    """Whether ``location`` is fetched over HTTP(S) rather than opened as a local file."""
    return location.startswith(("http://", "https://"))


def expand_pattern(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero padding from the first number's width);
    ``{a,b}`` lists choices; several braces expand left to right. Space-separated patterns are joined in order."""
    names: list[str] = []
    for part in pattern.split():
        names.extend(_expand_one(part))
        if len(names) > MAX_EXPANDED:
            raise ShardPatternError(f"shard pattern {pattern!r} names more than {MAX_EXPANDED} shards")
    if not names:
        raise ShardPatternError("empty shard pattern")
    return names


def _expand_one(pattern: str) -> list[str]:
    """Expand the first brace of ``pattern``, then the rest of each result."""
    ranged, chosen = _RANGE.search(pattern), _CHOICES.search(pattern)
    match = min((m for m in (ranged, chosen) if m is not None), key=lambda m: m.start(), default=None)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match is ranged:
        first, last = match.group(1), match.group(2)
        if int(last) < int(first):
            raise ShardPatternError(f"shard pattern {pattern!r}: range {{{first}..{last}}} runs backwards")
        if int(last) - int(first) >= MAX_EXPANDED:
            raise ShardPatternError(f"shard pattern {pattern!r} names more than {MAX_EXPANDED} shards")
        items = [str(i).zfill(len(first)) for i in range(int(first), int(last) + 1)]
    else:
        items = match.group(1).split(",")
    return [name for item in items for name in _expand_one(head + item + tail)]


def split_shards(data_dir: str | Path, split: str) -> list[str]:
    """The ``<split>-*.tar`` files directly in ``data_dir``, sorted by name (empty when there are none)."""
    folder = Path(data_dir)
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.glob(f"{split}-*.tar")) if p.is_file()]
