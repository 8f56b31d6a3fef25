"""Concurrency, exceptions and decoder state: shared readers, a decoder after a failed image, out of memory."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

from imgcls import randomness
from imgcls.data import transforms as T
from imgcls.data.readers.native import NativeReader

from .helpers import FULL_AUG, _reader, set_sof_field

pytestmark = pytest.mark.usefixtures("needs_native")


def test_batch_reader_shared_by_two_python_threads(files):
    """Two threads calling one reader: calls are serialized, each gets its own batch right (and none hangs)."""
    names = ["baseline_420", "progressive_444", "gray", "cmyk", "restart_420", "baseline_411"]
    paths = [files[n] for n in names]
    reader = NativeReader(True, 56, 64, T.AugConfig(**FULL_AUG), num_threads=2)
    want = {}
    for t in range(2):
        seeds = [randomness.sample_seed(t, 0, i) for i in range(len(paths))]
        want[t] = np.zeros((len(paths), 56, 56, 3), np.uint8)
        assert reader.read_batch(paths, seeds, want[t]) == [None] * len(paths)
    failures: list[str] = []

    def work(t: int) -> None:
        seeds = [randomness.sample_seed(t, 0, i) for i in range(len(paths))]
        out = np.zeros_like(want[t])
        for _ in range(40):
            out[:] = 0
            if reader.read_batch(paths, seeds, out) != [None] * len(paths) or not np.array_equal(out, want[t]):
                failures.append(f"thread {t}: wrong batch")
                return

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "read_batch hung with two callers"
    assert not failures, failures
    reader.close()


def test_decoder_usable_after_a_failed_image(variants):
    """An error after the header (center crop larger than the image) must not leave the thread's decoder stuck."""
    data = variants["baseline_420"]
    with pytest.raises(ValueError, match="larger than the resized image"):
        _reader.transform(data, 0, False, 300, 256)
    assert _reader.transform(data, 0, False, 64, 80).shape == (64, 64, 3)


# Runs in a child process: the address-space limit makes the next big buffer fail with std::bad_alloc.
_BAD_ALLOC_SCRIPT = """
import resource, sys, time
import numpy as np
from imgcls import _reader
huge, good = sys.argv[1], sys.argv[2]
spec = dict(train=False, size=1024, resize_short=1024, lower_scale=0.08, lower_ratio=0.75, upper_ratio=4 / 3,
            flip=True, rotate=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, interpolation="linear",
            apply_exif=False, num_threads=1, max_pixels=1 << 32)
reader = _reader.BatchReader(**spec)
out = np.zeros((2, 1024, 1024, 3), np.uint8)
seeds = np.zeros(2, np.uint64)
print([s for s, _ in reader.read_batch([good, good], seeds, out)])  # warm: every buffer of the good image
with open(good, "rb") as f:
    good_bytes = f.read()
_reader.transform(good_bytes, 0, False, 1024, 1024)
time.sleep(0.2)
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (48 << 20), resource.RLIM_INFINITY))
print(reader.read_batch([huge, good], seeds, out))
try:
    with open(huge, "rb") as f:
        _reader.transform(f.read(), 0, False, 1024, 1024, dct_scaling=False, max_pixels=1 << 32)
except MemoryError:
    print("MemoryError")
print(_reader.transform(good_bytes, 0, False, 1024, 1024).shape)
"""


def test_out_of_memory_is_a_per_image_error(tmp_path, variants):
    """std::bad_alloc in a worker becomes that image's error (not std::terminate); the decoder stays usable."""
    base = variants["baseline_420"]
    huge = tmp_path / "huge.jpg"  # header of 40000 x 40000: the region buffer (>= 300 MB) cannot be allocated
    huge.write_bytes(set_sof_field(base, 5, struct.pack(">HH", 40000, 40000)))
    good = tmp_path / "good.jpg"
    good.write_bytes(base)
    run = subprocess.run(
        [sys.executable, "-c", _BAD_ALLOC_SCRIPT, str(huge), str(good)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0] == "[0, 0]"
    assert lines[1] == "[(2, 'out of memory'), (0, '')]", lines[1]
    assert lines[2:] == ["MemoryError", "(1024, 1024, 3)"]


def test_region_overflow_rejected(variants):
    data = variants["baseline_420"]
    with pytest.raises(ValueError, match="outside the 251x183 image"):
        _reader.decode(data, region=(1, 0, 2**31 - 1, 1))
    with pytest.raises(ValueError, match="outside"):
        _reader.decode(data, region=(2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1))
    with pytest.raises(ValueError, match=r"0\.\.2\*\*31-1"):
        _reader.decode(data, region=(0, 0, 2**31, 1))
    assert _reader.decode(data, region=(250, 182, 1, 1)).shape == (1, 1, 3)
