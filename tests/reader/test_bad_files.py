"""Bad files: per-image errors with a message, never a crash."""

from __future__ import annotations

import struct

import pytest

from .helpers import _reader, set_sof_field

pytestmark = pytest.mark.usefixtures("needs_native")


def test_bad_files_raise_clear_errors(variants):
    base = variants["baseline_420"]
    cases = {
        "12-bit": set_sof_field(base, 4, b"\x0c"),
        "huge": set_sof_field(base, 5, struct.pack(">HH", 60000, 60000)),
        "truncated": base[: len(base) // 2],
        "corrupt": base[:700] + bytes(range(256)) * 4 + base[700 + 1024 :],
        "header only": base[:300],
        "empty": b"\xff\xd8\xff",
    }
    calls = {
        "train": lambda d: _reader.transform(d, 1, True, 64),
        "val": lambda d: _reader.transform(d, 1, False, 64),
        "decode": lambda d: _reader.decode(d),
    }
    for name, data in cases.items():
        for call_name, call in calls.items():
            try:
                call(data)
            except ValueError as e:
                assert str(e), (name, call_name)
            else:
                raise AssertionError(f"{call_name} accepted the {name} file")
    with pytest.raises(ValueError, match="not a JPEG"):
        _reader.decode(b"\x89PNG\r\n\x1a\n")
