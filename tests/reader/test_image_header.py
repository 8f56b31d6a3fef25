"""image_header.image_size against OpenCV's own decode, on every format it decodes, at random odd sizes; cut and
mutated headers are ValueErrors, never another exception; the pixel limit's boundary."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest

from imgcls.data.image_header import DEFAULT_MAX_PIXELS, check_pixels, image_size, jpeg_header_warning

# (extension, gray, float, imwrite params): everything the installed OpenCV both encodes and decodes.
CV2_ENCODINGS = {
    "jpeg": (".jpg", False, False, []),
    "png": (".png", False, False, []),
    "bmp": (".bmp", False, False, []),
    "webp_lossless": (".webp", False, False, []),
    "webp_lossy": (".webp", False, False, [cv2.IMWRITE_WEBP_QUALITY, 80]),
    "tiff": (".tiff", False, False, []),
    "ppm": (".ppm", False, False, []),
    "pgm_ascii": (".pgm", True, False, [cv2.IMWRITE_PXM_BINARY, 0]),
    "pbm": (".pbm", True, False, []),
    "pam": (".pam", False, False, []),
    "pfm": (".pfm", False, True, []),
    "sun_raster": (".sr", False, False, []),
    "jp2": (".jp2", False, False, []),
    "hdr": (".hdr", False, True, []),
    "gif": (".gif", False, False, []),
    "avif": (".avif", False, False, []),
}
# Pillow writes what OpenCV does not: BigTIFF, a raw JPEG 2000 codestream, WebP's extended (VP8X) layout.
PIL_ENCODINGS = {
    "bigtiff": ("TIFF", dict(big_tiff=True)),
    "tiff_lzw": ("TIFF", dict(compression="tiff_lzw")),
    "j2k": ("JPEG2000", dict(no_jp2=True)),
    "webp_vp8x": ("WEBP", dict(lossless=True, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00")),
    "gif_pillow": ("GIF", {}),
}


def random_image(rng: np.random.Generator, gray: bool = False, floating: bool = False) -> np.ndarray:
    height, width = (int(v) for v in rng.integers(32, 300, 2))  # jp2: 32+ for OpenJPEG's 6 resolution levels
    pixels = rng.integers(0, 256, (height, width) if gray else (height, width, 3), dtype=np.uint8)
    return pixels.astype(np.float32) / 255 if floating else pixels


def encode(name: str, pixels: np.ndarray) -> bytes:
    if name in PIL_ENCODINGS:
        from PIL import Image

        fmt, options = PIL_ENCODINGS[name]
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt, **options)
        return buffer.getvalue()
    ext, _, _, params = CV2_ENCODINGS[name]
    ok, data = cv2.imencode(ext, pixels, params)
    assert ok, name
    return data.tobytes()


def opencv_size(data: bytes) -> tuple[int, int]:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    return decoded.shape[1], decoded.shape[0]


@pytest.mark.parametrize("name", [*CV2_ENCODINGS, *PIL_ENCODINGS])
def test_image_size_equals_what_opencv_decodes(name, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    _, gray, floating, _ = CV2_ENCODINGS.get(name, (None, False, False, None))
    for _ in range(3):
        data = encode(name, random_image(rng, gray, floating))
        _, width, height = image_size(data)
        assert (width, height) == opencv_size(data), name


def bmp(width: int, height: int, core: bool) -> bytes:
    """A 24-bit BMP; ``core``: the OS/2 12-byte header with 16-bit sizes; else a top-down (negative height) one."""
    row = bytes(range(width * 3)) + b"\0" * (-width * 3 % 4)
    info = struct.pack("<IHHHH", 12, width, height, 1, 24) if core else None
    info = info or struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, len(row) * height, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(row) * height, 0, 0, 14 + len(info)) + info + row * height


@pytest.mark.parametrize(
    "data",
    [
        bmp(5, 3, core=True),
        bmp(7, 2, core=False),
        b"P6\n# a comment\n 5\t# another one\n3\n255\n" + bytes(45),
        b"P5 5 3 255 " + bytes(15),
        b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=1\n\n-Y 3 +X 5\n" + bytes(60),
    ],
    ids=["bmp_os2_core", "bmp_top_down", "pnm_comments", "pnm_one_line", "hdr_radiance"],
)
def test_image_size_of_handmade_headers(data):
    assert image_size(data)[1:] == opencv_size(data)


def test_cut_and_mutated_headers_raise_value_error_only(fresh_seed):
    """Every cut of the first 80 bytes and random byte changes: a size or a ValueError, nothing else."""
    rng = np.random.default_rng(fresh_seed)
    samples = [encode(name, random_image(rng, spec[1], spec[2])) for name, spec in CV2_ENCODINGS.items()]
    samples += [encode(name, random_image(rng)) for name in PIL_ENCODINGS]
    outcomes = {"sized": 0, "error": 0}
    for data in samples:
        variants = [data[:cut] for cut in range(80)]
        for _ in range(40):
            mutated = bytearray(data[:4096])
            for at in rng.integers(0, min(len(mutated), 64), int(rng.integers(1, 4))):
                mutated[at] = int(rng.integers(0, 256))
            variants.append(bytes(mutated))
        for variant in variants:
            try:
                _, width, height = image_size(variant)
                assert width >= 0 and height >= 0
                outcomes["sized"] += 1
            except ValueError:
                outcomes["error"] += 1
    assert outcomes["sized"] > 100 and outcomes["error"] > 1000, outcomes


@pytest.mark.parametrize(
    "data",
    [b"hello, world\n" * 4, b"v/1\x01" + bytes(40), b"\x00\x00\x00\x18ftypheic" + bytes(40), b"qoif" + bytes(20)],
    ids=["text", "openexr", "heic", "qoi"],
)
def test_unknown_formats_are_errors_not_guesses(data):
    with pytest.raises(ValueError, match="not a known image format"):
        image_size(data)


def test_an_empty_file_says_so():
    with pytest.raises(ValueError, match=r"^empty file \(0 bytes\)$"):
        image_size(b"")


def test_check_pixels_limit_is_inclusive():
    data = encode("png", np.zeros((30, 40, 3), np.uint8))
    check_pixels(data, 1200)
    with pytest.raises(ValueError, match=r"40x30 PNG \(1200 pixels\) is over max_pixels 1199"):
        check_pixels(data, 1199)
    check_pixels(data)  # the default
    assert DEFAULT_MAX_PIXELS == 1 << 27


def test_jpeg_header_warning_counts_bytes_as_libjpeg_does():
    base = encode("jpeg", np.zeros((16, 16, 3), np.uint8))
    assert jpeg_header_warning(base) is None
    at = base.find(b"\xff\xdb")  # before the first quantization table
    junk = base[:at] + b"\x00\x13\xff\x00\x37" + base[at:]  # 3 junk bytes and a stuffed FF 00 pair
    assert jpeg_header_warning(junk) == "Corrupt JPEG data: 5 extraneous bytes before marker 0xdb"
    assert jpeg_header_warning(base[:at] + b"\xff\xff\xff" + base[at:]) is None  # fill bytes are no junk
