"""Fixtures of the benchmarks; the helpers they use live in bench/_harness.py."""

from __future__ import annotations

import pytest
import torch
from _harness import NO_GPU, GpuBench, copy_gbps


@pytest.fixture
def gpu() -> GpuBench:
    """Timing and reporting on this process's CUDA GPU; skips the case (with the reason) without one."""
    if not torch.cuda.is_available():
        pytest.skip(NO_GPU)
    return GpuBench(copy_gbps(), torch.cuda.get_device_name())
