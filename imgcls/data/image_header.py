"""Image width x height from the header, for every format the OpenCV reference decodes; the reader's pixel limit.

The pixel limit: a reader decodes no image whose header claims more than ``max_pixels`` pixels (width x height),
default ``DEFAULT_MAX_PIXELS`` = 2**27 = 134,217,728 (e.g. 16384 x 8192; a full decode of that is ~400 MB of RGB).
A few KB of JPEG or PNG can claim 30000 x 30000 and cost gigabytes and seconds to decode into a flat image, so the
limit is checked from the header before any decode, for every format and in both readers (``make_reader(...,
max_pixels=...)``; the C++ reader checks JPEG headers with libjpeg, everything else goes through ``check_pixels``).
An image over it is a per-image error (the loader skips and reports it), never a decode.

``image_size`` reads only header structures, never pixel data: JPEG (the first SOF, found by walking the marker
segments as libjpeg does), PNG (IHDR), BMP, WebP (VP8, VP8L, VP8X), TIFF and BigTIFF (the first IFD), GIF (the
logical screen, which bounds every frame), PBM/PGM/PPM, PAM, PFM, Sun raster, JPEG 2000 (JP2 and raw codestream),
Radiance HDR and AVIF (the ``ispe`` properties). A file it cannot size is an error, not a blind decode: these are
all the formats the installed OpenCV decodes (OpenEXR is off in its build).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator

DEFAULT_MAX_PIXELS = 1 << 27
KNOWN_FORMATS = "JPEG, PNG, BMP, WebP, TIFF, GIF, PNM/PAM/PFM, Sun raster, JPEG 2000, Radiance HDR, AVIF"

# JPEG markers that start a frame (SOF0..SOF15 less DHT C4, JPG C8, DAC CC) and those without a length field.
_JPEG_SOF = frozenset([*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)])
_JPEG_NO_LENGTH = frozenset([0x01, *range(0xD0, 0xD8)])
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_HDR_RESOLUTION = re.compile(rb"([-+])([XY]) +(\d+) +([-+])([XY]) +(\d+)")


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    """struct.unpack_from that says "cut short" (a ValueError) instead of struct.error."""
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise ValueError("image header cut short")
    return struct.unpack_from(fmt, data, offset)


# ---- JPEG --------------------------------------------------------------------------------------------------------


def jpeg_markers(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, payload offset, bytes discarded before it) for each marker after SOI, up to and including the
    first SOS or EOI. Skips bytes between segments as libjpeg's next_marker does: any non-FF bytes and stuffed
    FF 00 pairs are discarded (libjpeg warns "N extraneous bytes before marker"), runs of FF are fill."""
    pos, size = 2, len(data)
    while pos < size:
        discarded = 0
        while True:
            start, pos = pos, data.find(b"\xff", pos)
            if pos < 0:
                return
            discarded += pos - start
            while pos < size and data[pos] == 0xFF:
                pos += 1
            if pos >= size:
                return
            if data[pos] != 0x00:
                break
            discarded += 2
            pos += 1
        marker = data[pos]
        pos += 1
        yield marker, pos, discarded
        if marker in (0xD9, 0xDA):  # EOI, or the first scan: the header ends here
            return
        if marker not in _JPEG_NO_LENGTH:
            (length,) = _unpack(">H", data, pos)
            if length < 2:
                raise ValueError(f"JPEG marker 0x{marker:02x} with a bad length {length}")
            pos += length


def jpeg_size(data: bytes) -> tuple[int, int]:
    """The first frame header's width x height (the one libjpeg decodes)."""
    for marker, pos, _ in jpeg_markers(data):
        if marker in _JPEG_SOF:
            height, width = _unpack(">HH", data, pos + 3)  # length (2), precision (1), then Y and X
            return width, height
    raise ValueError("JPEG without a frame header (no SOF marker before the scan)")


def jpeg_header_warning(data: bytes) -> str | None:
    """libjpeg's warning for junk between the header's marker segments, or None.

    Only the header up to the first scan is walked: junk or corrupt entropy data inside or after a scan (libjpeg's
    other warnings) shows only when decoding, which OpenCV does without telling us.
    """
    if data[:2] != b"\xff\xd8":
        return None
    try:
        for marker, _, discarded in jpeg_markers(data):
            if discarded:
                return f"Corrupt JPEG data: {discarded} extraneous bytes before marker 0x{marker:02x}"
    except ValueError:
        return None  # a header the decoder will reject with its own error
    return None


# ---- the other formats -------------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise ValueError("PNG whose first chunk is not IHDR")
    return _unpack(">II", data, 16)


def bmp_size(data: bytes) -> tuple[int, int]:
    (header_size,) = _unpack("<I", data, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _unpack("<HH", data, 18)
    width, height = _unpack("<ii", data, 18)
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: frame tag (3), start code 9D 01 2A, 14-bit sizes with 2 bits of scale
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("WebP VP8 chunk without the key-frame start code")
        width, height = _unpack("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature 2F, then width - 1 and height - 1 in 14 bits each
        if data[20:21] != b"\x2f":
            raise ValueError("WebP VP8L chunk without its signature byte")
        (bits,) = _unpack("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, width - 1 and height - 1 in 24 bits each
        b = _unpack("<6B", data, 24)
        return (b[0] | b[1] << 8 | b[2] << 16) + 1, (b[3] | b[4] << 8 | b[5] << 16) + 1
    raise ValueError(f"WebP with an unknown first chunk {chunk!r}")


def tiff_size(data: bytes) -> tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first IFD, classic or BigTIFF, either byte order."""
    order = "<" if data[:2] == b"II" else ">"
    (version,) = _unpack(order + "H", data, 2)
    big = version == 43
    (ifd,) = _unpack(order + ("Q" if big else "I"), data, 8 if big else 4)
    (count,) = _unpack(order + ("Q" if big else "H"), data, ifd)
    entry, first = (20, ifd + 8) if big else (12, ifd + 2)
    values: dict[int, int] = {}
    for i in range(min(count, (len(data) - first) // entry)):
        at = first + i * entry
        tag, kind = _unpack(order + "HH", data, at)
        if tag in (256, 257):
            value_at = at + (12 if big else 8)
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                raise ValueError(f"TIFF size tag {tag} of type {kind}")
            (values[tag],) = _unpack(order + fmt, data, value_at)
    if 256 not in values or 257 not in values:
        raise ValueError("TIFF whose first IFD has no ImageWidth/ImageLength")
    return values[256], values[257]


def gif_size(data: bytes) -> tuple[int, int]:
    return _unpack("<HH", data, 6)


def _pnm_tokens(data: bytes, start: int) -> Iterator[bytes]:
    """Whitespace-separated header tokens of a PBM/PGM/PPM/PFM file, skipping ``#`` comments to the line end."""
    pos, size = start, min(len(data), start + 4096)  # a header is short; pixel data never parsed as one
    while pos < size:
        if data[pos] in b" \t\r\n\v\f":
            pos += 1
        elif data[pos] == ord("#"):
            while pos < size and data[pos] not in b"\r\n":
                pos += 1
        else:
            end = pos
            while end < size and data[end] not in b" \t\r\n\v\f#":
                end += 1
            yield data[pos:end]
            pos = end


def _decimal(token: bytes, what: str) -> int:
    if not token.isdigit():
        raise ValueError(f"{what} {token[:16]!r} is not a number")
    return int(token)


def pnm_size(data: bytes) -> tuple[int, int]:
    tokens = _pnm_tokens(data, 2)
    width = _decimal(next(tokens, b""), "PNM width")
    return width, _decimal(next(tokens, b""), "PNM height")


def pam_size(data: bytes) -> tuple[int, int]:
    fields = {}
    for line in data[3:4096].splitlines():
        words = line.split()
        if words[:1] == [b"ENDHDR"]:
            break
        if len(words) == 2 and words[0] in (b"WIDTH", b"HEIGHT"):
            fields[words[0]] = _decimal(words[1], f"PAM {words[0].decode()}")
    if len(fields) != 2:
        raise ValueError("PAM header without WIDTH and HEIGHT")
    return fields[b"WIDTH"], fields[b"HEIGHT"]


def sun_raster_size(data: bytes) -> tuple[int, int]:
    return _unpack(">II", data, 4)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO-BMFF / JP2 boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = _unpack(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = _unpack(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return  # a box cut short: what was read so far stands
        yield kind, pos + header, pos + size
        pos += size


def _box_payloads(data: bytes, path: tuple[bytes, ...], start: int = 0, end: int | None = None) -> Iterator[int]:
    """Payload offsets of the boxes at ``path`` (e.g. meta/iprp/ipco/ispe); a meta box's children start after its
    version and flags (it is a full box)."""
    end = len(data) if end is None else end
    for kind, at, stop in _boxes(data, start, end):
        if kind != path[0]:
            continue
        if len(path) == 1:
            yield at
        else:
            yield from _box_payloads(data, path[1:], at + 4 if kind == b"meta" else at, stop)


def j2k_size(data: bytes, start: int = 0) -> tuple[int, int]:
    """A JPEG 2000 codestream's SIZ: the image area is (Xsiz - XOsiz) x (Ysiz - YOsiz)."""
    if data[start : start + 4] != b"\xff\x4f\xff\x51":
        raise ValueError("JPEG 2000 codestream without SOC + SIZ")
    xsiz, ysiz, xosiz, yosiz = _unpack(">IIII", data, start + 8)
    return max(0, xsiz - xosiz), max(0, ysiz - yosiz)


def jp2_size(data: bytes) -> tuple[int, int]:
    """The larger of the JP2 header's ``ihdr`` and its codestream's SIZ (the decoder allocates from the SIZ)."""
    sizes = [_unpack(">II", data, at)[::-1] for at in _box_payloads(data, (b"jp2h", b"ihdr"))]
    sizes += [j2k_size(data, at) for at in _box_payloads(data, (b"jp2c",))]
    if not sizes:
        raise ValueError("JP2 file without ihdr or codestream")
    return max(sizes, key=lambda s: s[0] * s[1])


def hdr_size(data: bytes) -> tuple[int, int]:
    """Radiance HDR: header lines up to a blank line, then the resolution line, e.g. ``-Y 480 +X 640``."""
    end = data.find(b"\n\n", 0, 65536)
    match = _HDR_RESOLUTION.match(data, end + 2) if end >= 0 else None
    if match is None:
        raise ValueError("Radiance HDR without a resolution line")
    first, second = int(match.group(3)), int(match.group(6))
    return (second, first) if match.group(2) == b"Y" else (first, second)


def avif_size(data: bytes) -> tuple[int, int]:
    """The largest ``ispe`` (image spatial extent) property under meta/iprp/ipco: a grid's full size too."""
    sizes = [_unpack(">II", data, at + 4) for at in _box_payloads(data, (b"meta", b"iprp", b"ipco", b"ispe"))]
    if not sizes:
        raise ValueError("AVIF without an image size (ispe) property")
    return max(sizes, key=lambda s: s[0] * s[1])


def _is_avif(data: bytes) -> bool:
    """An ISO-BMFF file whose ftyp box names the avif or avis brand (major or compatible)."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[:4], "big")
    brands = data[8:12] + data[16 : min(size, 64)]
    return any(brands[i : i + 4] in (b"avif", b"avis") for i in range(0, len(brands) - 3, 4))


# Signatures as OpenCV's decoders check them (imgcodecs grfmt_*.cpp): (format, matches, size).
_FORMATS: tuple[tuple[str, Callable[[bytes], bool], Callable[[bytes], tuple[int, int]]], ...] = (
    ("JPEG", lambda d: d[:2] == b"\xff\xd8", jpeg_size),
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", png_size),
    ("BMP", lambda d: d[:2] == b"BM", bmp_size),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", webp_size),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), tiff_size),
    ("GIF", lambda d: d[:3] == b"GIF", gif_size),
    ("PNM", lambda d: d[:1] == b"P" and d[1:2] in b"123456" and d[2:3].isspace(), pnm_size),
    ("PAM", lambda d: d[:2] == b"P7" and d[2:3].isspace(), pam_size),
    ("PFM", lambda d: d[:2] in (b"PF", b"Pf") and d[2:3].isspace(), pnm_size),
    ("Sun raster", lambda d: d[:4] == b"\x59\xa6\x6a\x95", sun_raster_size),
    ("JPEG 2000", lambda d: d[:12] == _JP2_SIGNATURE, jp2_size),
    ("JPEG 2000", lambda d: d[:4] == b"\xff\x4f\xff\x51", j2k_size),
    ("Radiance HDR", lambda d: d[:6] == b"#?RGBE" or d[:10] == b"#?RADIANCE", hdr_size),
    ("AVIF", _is_avif, avif_size),
)


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header of an encoded image; ValueError when it cannot be sized."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    for name, matches, size in _FORMATS:
        if matches(data):
            try:
                width, height = size(data)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            return name, width, height
    raise ValueError(f"not a known image format (the reader decodes {KNOWN_FORMATS})")


def check_pixels(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise ValueError unless the image's header claims at most ``max_pixels`` pixels (or it cannot be sized)."""
    name, width, height = image_size(data)
    if width * height > max_pixels:
        raise ValueError(f"{width}x{height} {name} ({width * height} pixels) is over max_pixels {max_pixels}")
