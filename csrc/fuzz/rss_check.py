"""RSS over many native decodes (good and bad files): it must stay flat. Default 100k decodes.

    .venv/bin/python -m csrc.fuzz.rss_check [COUNT]    # from the repo root

Prints RSS every 10% and exits 1 if it grew by more than 8 MiB after the first 10%.
tests/reader/test_batch_reader.py::test_rss_flat_over_many_decodes runs the same loop at a small count.
"""

from __future__ import annotations

import sys

from imgcls import _reader
from tests import jpeg_corpus


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def main(count: int) -> int:
    variants = jpeg_corpus.jpeg_variants(jpeg_corpus.synthetic_photo(120, 160, seed=4))
    inputs = list(variants.values()) + [variants["baseline_420"][:2000], b"\xff\xd8\xff\xe0garbage"]
    baseline, errors = 0, 0
    for i in range(count):
        try:
            if i % 3 == 2:
                _reader.decode(inputs[i % len(inputs)])
            else:
                _reader.transform(inputs[i % len(inputs)], i, i % 3 == 0, 64, 72)
        except ValueError:
            errors += 1
        if (i + 1) % max(1, count // 10) == 0:
            rss = rss_kib()
            baseline = baseline or rss
            print(f"{i + 1:>8} decodes  RSS {rss / 1024:.1f} MiB  (+{(rss - baseline) / 1024:.1f})  errors {errors}")
    growth = rss_kib() - baseline
    print(f"RSS growth after warm-up: {growth / 1024:.2f} MiB")
    return 1 if growth > 8 * 1024 else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
