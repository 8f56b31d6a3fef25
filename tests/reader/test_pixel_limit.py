"""Decompression bombs: a few KB whose header claims 30000 x 30000 pixels, in every format OpenCV decodes.

Both readers refuse them from the header (max_pixels), as a per-image error naming the limit, without ever calling
a decoder (cv2.imdecode is replaced by a recorder) and at once; images at the limit are read, one pixel over is not.
"""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from imgcls.data.datasets import Sample
from imgcls.data.image_header import DEFAULT_MAX_PIXELS
from imgcls.data.loader import Loader
from imgcls.data.readers import make_reader

from ..conftest import require_native
from .helpers import set_sof_field, spec

SIDE = 30000  # 900M pixels, 6.7 times the default limit
WEBP_SIDE = 16383  # the most VP8 and VP8L can say: 268M pixels, still twice the limit
FILLER = bytes(2000)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def riff_webp(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WEBP" + b"".join(kind + struct.pack("<I", len(payload)) + payload for kind, payload in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def iso_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def tiff(big: bool) -> bytes:
    tags = [(256, 4, SIDE), (257, 4, SIDE), (258, 3, 8), (259, 3, 1), (262, 3, 2), (273, 4, 512), (277, 3, 3)]
    tags += [(278, 4, SIDE), (279, 4, len(FILLER))]
    if big:
        entries = b"".join(struct.pack("<HHQQ", tag, 16 if kind == 4 else 3, 1, value) for tag, kind, value in tags)
        ifd = struct.pack("<Q", len(tags)) + entries + struct.pack("<Q", 0)
        return b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + ifd + FILLER
    entries = b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0) + FILLER


def j2k() -> bytes:
    siz = struct.pack(">HHIIIIIIIIH", 47, 0, SIDE, SIDE, 0, 0, SIDE, SIDE, 0, 0, 3) + b"\x07\x01\x01" * 3
    return b"\xff\x4f\xff\x51" + siz + FILLER


def bombs() -> dict[str, bytes]:
    """name -> file bytes (a few KB each) whose header claims far more pixels than the default limit."""
    jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    ihdr = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * SIDE) * 4)
    bmp_info = struct.pack("<IiiHHIIiiII", 40, SIDE, SIDE, 1, 24, 0, 0, 2835, 2835, 0, 0)
    vp8_frame = b"\x50\x02\x00\x9d\x01\x2a" + struct.pack("<HH", WEBP_SIDE, WEBP_SIDE) + FILLER  # tag, start code
    vp8x = struct.pack("<B3x", 0) + (SIDE - 1).to_bytes(3, "little") * 2
    ispe = iso_box(b"ispe", struct.pack(">III", 0, SIDE, SIDE))
    meta = iso_box(b"meta", b"\x00" * 4 + iso_box(b"iprp", iso_box(b"ipco", ispe)))
    return {
        "jpeg": set_sof_field(jpeg, 5, struct.pack(">HH", SIDE, SIDE)),
        "png": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b""),
        "bmp": b"BM" + struct.pack("<IHHI", 54 + len(FILLER), 0, 0, 54) + bmp_info + FILLER,
        "webp_vp8": riff_webp((b"VP8 ", vp8_frame)),
        "webp_vp8l": riff_webp((b"VP8L", b"\x2f" + struct.pack("<I", WEBP_SIDE | WEBP_SIDE << 14) + FILLER)),
        "webp_vp8x": riff_webp((b"VP8X", vp8x), (b"VP8 ", vp8_frame)),
        "tiff": tiff(big=False),
        "bigtiff": tiff(big=True),
        "gif": b"GIF89a" + struct.pack("<HHBBB", SIDE, SIDE, 0x80, 0, 0) + bytes(6) + b"," + bytes(9) + b"\x02\x00;",
        "ppm": b"P6\n30000 30000\n255\n" + FILLER,
        "pam": b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + FILLER,
        "pfm": b"PF\n30000 30000\n-1.0\n" + FILLER,
        "sun_raster": struct.pack(">8I", 0x59A66A95, SIDE, SIDE, 24, len(FILLER), 1, 0, 0) + FILLER,
        "j2k": j2k(),
        "jp2": b"\x00\x00\x00\x0cjP  \r\n\x87\n"
        + iso_box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ")
        + iso_box(b"jp2h", iso_box(b"ihdr", struct.pack(">IIHBBBB", SIDE, SIDE, 3, 7, 7, 0, 0)))
        + iso_box(b"jp2c", j2k()),
        "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + FILLER,
        "avif": iso_box(b"ftyp", b"avif\x00\x00\x00\x00avifmif1") + meta + iso_box(b"mdat", FILLER),
    }


@pytest.fixture()
def decoder_calls(monkeypatch) -> list:
    """cv2.imdecode replaced by a recorder that refuses: no bomb may reach a decoder."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("cv2.imdecode called")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    return calls


@pytest.mark.parametrize("kind", ["opencv", "native"])
def test_bombs_are_per_image_errors_before_any_decode(tmp_path, decoder_calls, kind):
    if kind == "native":
        require_native()
    paths = []
    for name, data in bombs().items():
        assert len(data) < 8192, name
        paths.append(str(tmp_path / f"{name}.img"))
        (tmp_path / f"{name}.img").write_bytes(data)
    reader = make_reader(kind, spec(32, 36), train=True, num_threads=2)
    out = np.zeros((len(paths), 32, 32, 3), np.uint8)
    start = time.perf_counter()
    errors = reader.read_batch(paths, list(range(len(paths))), out)
    elapsed = time.perf_counter() - start
    reader.close()
    assert decoder_calls == []
    for path, error in zip(paths, errors):
        assert error is not None and f"is over max_pixels {DEFAULT_MAX_PIXELS}" in error, (path, error)
    assert elapsed < 1.0, f"{len(paths)} bombs took {elapsed:.2f} s to refuse"  # a decode takes seconds each


@pytest.mark.parametrize("kind", ["opencv", "native"])
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_limit_is_inclusive_in_both_readers(tmp_path, kind, ext):
    """A 40 x 30 image is read with max_pixels=1200 and refused with 1199 (JPEG: libjpeg's header in C++)."""
    if kind == "native":
        require_native()
    path = tmp_path / f"image{ext}"
    path.write_bytes(cv2.imencode(ext, np.full((30, 40, 3), 90, np.uint8))[1].tobytes())
    for limit, ok in ((1200, True), (1199, False)):
        reader = make_reader(kind, spec(16, 24), train=False, max_pixels=limit)
        (error,) = reader.read_batch([str(path)], [0], np.zeros((1, 16, 16, 3), np.uint8))
        reader.close()
        assert (error is None) == ok, (limit, error)
        if not ok:
            assert "40x30" in error and f"over max_pixels {limit}" in error


def test_loader_skips_and_names_a_bomb(tmp_path):
    good, bomb = tmp_path / "good.png", tmp_path / "bomb.png"
    good.write_bytes(cv2.imencode(".png", np.full((30, 40, 3), 90, np.uint8))[1].tobytes())
    bomb.write_bytes(bombs()["png"])
    samples = [Sample(str(good), 0), Sample(str(bomb), 1)]
    args = dict(batch_size=2, preprocess=spec(16, 24, mean=(0.5,) * 3, std=(0.25,) * 3))
    loader = Loader(samples, train=False, **args, random_seed=0, num_workers=1, prefetch=1, reader="opencv")
    assert [len(labels) for _, labels in loader] == [1]
    assert [path for path, _ in loader.skipped] == [str(bomb)]
    assert "over max_pixels" in loader.skipped[0][1]
    small = Loader(samples, train=False, **args, random_seed=0, num_workers=1, prefetch=1, max_pixels=1000)
    assert list(small) == [] and len(small.skipped) == 2  # the parameter reaches the reader
    loader.close()
    small.close()


def test_max_pixels_must_be_positive():
    with pytest.raises(ValueError, match="max_pixels"):
        make_reader("opencv", spec(8, 9), train=True, max_pixels=0)


def test_native_default_limit_is_the_documented_one():
    require_native()
    from imgcls import _reader

    assert _reader.default_max_pixels == DEFAULT_MAX_PIXELS
