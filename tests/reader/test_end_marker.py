"""End-of-image detection in both readers: trailers after the image are fine, cuts are not."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.data import transforms as T
from imgcls.data.readers import make_reader
from imgcls.data.readers.opencv import jpeg_truncated

from .. import jpeg_corpus
from .helpers import _reader, spec, with_exif_thumbnail

pytestmark = pytest.mark.usefixtures("needs_native")


def test_trailer_after_end_marker_accepted_by_both_readers(tmp_path, variants):
    """MPF / Motion Photo files carry data after the image's FF D9: 8 KiB of it must not read as truncated."""
    rng = np.random.default_rng(8)
    noise = rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    second = _reader.encode(jpeg_corpus.synthetic_photo(64, 80, seed=2), 80, "420")  # MPF: a second JPEG
    trailers = {"noise": noise, "mpf": second + noise[: 8192 - len(second)] if len(second) < 8192 else second}
    trailers["markers"] = b"\xff\xda\x00\x08" + noise[:4000] + b"\xff\xd8" + noise[4000:]  # SOS-, SOI-like bytes
    for name in ("baseline_420", "progressive_444", "restart_420", "arithmetic_420"):
        base = variants[name]
        for kind, trailer in trailers.items():
            assert len(trailer) >= 8192
            data = base + trailer
            assert not jpeg_truncated(data), (name, kind)
            path = tmp_path / f"{name}_{kind}.jpg"
            path.write_bytes(data)
            outs = []
            for reader_kind in ("native", "opencv"):
                reader = make_reader(reader_kind, spec(64, 72), train=True)
                out = np.zeros((1, 64, 64, 3), np.uint8)
                assert reader.read_batch([str(path)], [3], out) == [None], (name, kind, reader_kind)
                outs.append(out[0])
            # The trailer changes nothing: each reader gives what it gives for the file without it.
            assert np.array_equal(outs[0], _reader.transform(base, 3, True, 64)), (name, kind)
            assert np.array_equal(outs[1], T.train_transform(T.decode_image(base), 3, 64)), (name, kind)


def test_cut_files_rejected_by_both_readers_even_with_a_thumbnail(variants):
    """A cut anywhere is caught, though the EXIF thumbnail's own FF D9 sits in the file's first segment."""
    thumb = _reader.encode(jpeg_corpus.synthetic_photo(16, 16, seed=4), 80, "420")
    for name in ("baseline_420", "progressive_420", "restart_420"):
        data = with_exif_thumbnail(variants[name], thumb)
        assert not jpeg_truncated(data)
        assert _reader.transform(data, 0, True, 32).shape == (32, 32, 3)
        for cut in np.linspace(len(thumb) + 40, len(data) - 1, 25).astype(int):
            part = data[:cut]
            assert jpeg_truncated(part), (name, cut)
            with pytest.raises(ValueError, match="truncated"):
                _reader.transform(part, 0, True, 32)


def test_end_marker_walks_agree_on_mutated_files(variants):
    """reader.jpeg_truncated (Python) and the C++ has_end_marker make the same call on random mutations."""
    rng = np.random.default_rng(77)
    seeds = [variants[n] for n in ("baseline_420", "progressive_444", "restart_420", "junk_between_markers")]
    checked = 0
    for i in range(600):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(2, len(data)))
            data[at] = int(rng.choice([0xFF, 0xD9, 0xDA, 0x00, int(rng.integers(0, 256))]))
        if i % 3 == 0:
            data = data[: int(rng.integers(4, len(data)))]
        data = bytes(data)
        try:
            _reader.transform(data, i, True, 16)
            native_truncated = False
        except ValueError as e:
            native_truncated = "truncated JPEG" in str(e)
        if native_truncated or not jpeg_truncated(data):  # other decode errors say nothing about the walk
            assert native_truncated == jpeg_truncated(data), i
            checked += 1
    assert checked > 500
