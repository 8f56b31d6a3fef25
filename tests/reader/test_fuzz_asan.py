"""The ASan + UBSan fuzz runs of the decode entry and the tar split (csrc/fuzz/run_fuzz.sh), marked slow: CI runs
the same through .ci/fuzz_smoke.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ..conftest import REPO


@pytest.mark.slow
def test_fuzz_decode_under_asan(tmp_path):
    """csrc/fuzz/run_fuzz.sh for 20 s (and 5 s of the tar split): ASan + UBSan builds, mutated seeds."""
    missing = [tool for tool in ("cmake", "c++", "pkg-config") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to build the fuzz target")
    run = subprocess.run(
        ["bash", str(REPO / "csrc" / "fuzz" / "run_fuzz.sh"), "20", str(tmp_path / "fuzz")],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "no crash" in run.stdout or "Done" in run.stderr, run.stdout[-2000:]
