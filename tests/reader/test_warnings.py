"""JPEGs libjpeg decodes with a warning (junk between segments, a marker or zeros inside the scan) are decoded,
as OpenCV and Pillow decode them, and counted: ``read_batch(..., warned=list)`` gets (path, warning) per image,
``Loader.warned`` per epoch, and the epoch report prints one summary line. Cut files stay errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from imgcls import engine
from imgcls.data import transforms as T
from imgcls.data.datasets import Sample
from imgcls.data.image_header import jpeg_header_warning, jpeg_markers
from imgcls.data.loader import Loader
from imgcls.data.readers import make_reader
from imgcls.data.readers.native import MAX_DIFF_FULL_SCALE

from ..conftest import require_native
from .helpers import pil_decode, spec

SCAN_DAMAGE = ("marker_in_scan", "zeros_in_scan")


def scan_start(data: bytes) -> int:
    """Offset of the first scan's entropy-coded data."""
    sos = data.find(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def damaged(base: bytes) -> dict[str, bytes]:
    """Files libjpeg decodes with a warning: junk before DQT (extraneous bytes), an RST marker in the middle of a
    scan without restarts and a run of zeros there (both: premature end of data segment)."""
    dqt, scan = base.find(b"\xff\xdb"), scan_start(base)
    return {
        "header_junk": base[:dqt] + b"\x00\x13\x37" + base[dqt:],
        "marker_in_scan": base[: scan + 3000] + b"\xff\xd3" + base[scan + 3000 :],
        "zeros_in_scan": base[: scan + 1000] + bytes(600) + base[scan + 1600 :],
    }


@pytest.fixture()
def damaged_files(tmp_path, variants) -> dict[str, str]:
    paths = {"clean": tmp_path / "clean.jpg"}
    paths["clean"].write_bytes(variants["baseline_420"])
    for name, data in damaged(variants["baseline_420"]).items():
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(data)
    paths["cut"] = tmp_path / "cut.jpg"
    paths["cut"].write_bytes(variants["baseline_420"][:-300])
    return {name: str(path) for name, path in paths.items()}


@pytest.mark.parametrize("normalized", [False, True], ids=["uint8", "normalized"])
def test_native_reader_decodes_and_counts_libjpeg_warnings(damaged_files, normalized):
    require_native()
    from imgcls.data.readers.native import NativeReader

    names = list(damaged_files)
    paths = [damaged_files[n] for n in names]
    # Val at the short side (183): every row is decoded (a crop that stops above the damage would not see it), at 1/1.
    reader = NativeReader(False, 183, 183, T.AugConfig(), num_threads=2)
    warned: list[tuple[str, str]] = []
    if normalized:
        out = np.zeros((len(paths), 3, 183, 183), np.float32)
        scale, shift = np.ones(3, np.float32), np.zeros(3, np.float32)
        errors = reader.read_batch_normalized(paths, [0] * len(paths), out, scale, shift, warned=warned)
        pixels = out.transpose(0, 2, 3, 1)
    else:
        pixels = np.zeros((len(paths), 183, 183, 3), np.uint8)
        errors = reader.read_batch(paths, [0] * len(paths), pixels, warned=warned)
    reader.close()
    assert [e is None for e in errors] == [n != "cut" for n in names], errors
    assert "truncated" in errors[names.index("cut")]
    assert sorted(p for p, _ in warned) == sorted(damaged_files[n] for n in ("header_junk", *SCAN_DAMAGE))
    messages = dict(warned)
    assert messages[damaged_files["header_junk"]] == "Corrupt JPEG data: 3 extraneous bytes before marker 0xdb"
    for name in SCAN_DAMAGE:
        assert messages[damaged_files[name]].startswith("Corrupt JPEG data: premature end of data segment")
    # The pixels are what libjpeg gives elsewhere: the OpenCV reference on the same damaged bytes.
    reference = make_reader("opencv", spec(183, 183), train=False)
    ref = np.zeros((len(paths), 183, 183, 3), np.uint8)
    reference.read_batch(paths, [0] * len(paths), ref)
    for i, name in enumerate(names[:-1]):
        assert np.abs(pixels[i].astype(np.float64) - ref[i]).max() <= MAX_DIFF_FULL_SCALE, name


def test_damaged_scans_decode_as_pillow_decodes(variants):
    """The full decode of a damaged scan: bit-exact with Pillow's libjpeg (the rest of the segment comes out gray)."""
    require_native()
    from imgcls import _reader

    for name, data in damaged(variants["baseline_420"]).items():
        assert np.array_equal(_reader.decode(data), pil_decode(data)), name


def test_python_header_walk_says_what_libjpeg_says(variants, tmp_path):
    """jpeg_header_warning (the OpenCV reader's count) == libjpeg's own warning, for junk before every marker of the
    header, with stuffed FF 00 pairs and fill bytes among it."""
    require_native()
    from imgcls.data.readers.native import NativeReader

    base = variants["progressive_444"]
    rng = np.random.default_rng(12)
    cuts = [at - 2 for _, at, _ in jpeg_markers(base)]  # the FF of every header marker, SOS included
    files = {}
    for cut in cuts:
        junk = b"".join(rng.choice([b"\x00", b"\x13", b"\xff\x00"], int(rng.integers(1, 5))))
        junk += b"\xff\xff" * int(rng.integers(0, 2))  # fill bytes before the marker (an FF before 13 would be one)
        files[tmp_path / f"{cut}.jpg"] = base[:cut] + b"\x01" + junk + base[cut:]
    for path, data in files.items():
        path.write_bytes(data)
    reader = NativeReader(False, 64, 72, T.AugConfig())
    warned: list[tuple[str, str]] = []
    paths = [str(path) for path in files]
    errors = reader.read_batch(paths, [0] * len(paths), np.zeros((len(paths), 64, 64, 3), np.uint8), warned=warned)
    reader.close()
    assert len(cuts) >= 6 and errors == [None] * len(paths)
    assert dict(warned) == {str(path): jpeg_header_warning(data) for path, data in files.items()}


def test_opencv_reader_decodes_damage_and_counts_what_the_header_shows(damaged_files):
    """OpenCV decodes all three (printing libjpeg's warnings itself); the header junk is the one it can count."""
    names = list(damaged_files)
    reader = make_reader("opencv", spec(48, 56), train=True, num_threads=2)
    warned: list[tuple[str, str]] = []
    errors = reader.read_batch(
        [damaged_files[n] for n in names], [1] * len(names), np.zeros((len(names), 48, 48, 3), np.uint8), warned=warned
    )
    assert [e is None for e in errors] == [n != "cut" for n in names], errors
    assert warned == [(damaged_files["header_junk"], "Corrupt JPEG data: 3 extraneous bytes before marker 0xdb")]


@pytest.mark.parametrize("kind", ["opencv", "native"])
def test_loader_counts_warned_images_per_epoch_and_the_report_prints_one_line(damaged_files, kind, capsys):
    if kind == "native":
        require_native()
    names = ["clean", "header_junk", "marker_in_scan", "cut"]
    samples = [Sample(damaged_files[n], i) for i, n in enumerate(names)]
    args = dict(batch_size=2, preprocess=spec(32, 40, mean=(0.5,) * 3, std=(0.25,) * 3))
    loader = Loader(samples, train=False, **args, random_seed=0, num_workers=1, prefetch=1, reader=kind)
    for epoch in range(2):
        loader.set_epoch(epoch)
        assert sum(len(labels) for _, labels in loader) == 3
        warned_names = sorted(names[[s.path for s in samples].index(p)] for p, _ in loader.warned)
        assert warned_names == (["header_junk", "marker_in_scan"] if kind == "native" else ["header_junk"])
        assert [p for p, _ in loader.skipped] == [damaged_files["cut"]]
    loader.close()
    engine.report_skipped(loader.skipped, loader.warned)
    lines = capsys.readouterr().out.splitlines()
    summary = [line for line in lines if "libjpeg warnings" in line]
    assert len(summary) == 1 and f"decoded {len(loader.warned)} images with libjpeg warnings" in summary[0]
    assert "header_junk.jpg" in summary[0] or "marker_in_scan.jpg" in summary[0]
