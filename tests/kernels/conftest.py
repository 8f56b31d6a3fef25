"""Kernel tests run on CUDA when there is one, else on the CPU through Triton's interpreter.

``triton.jit`` picks the interpreter when a kernel is *defined*, so the kernel modules are imported here with
``TRITON_INTERPRET=1``; the variable is then put back, so the rest of the suite still sees a machine without GPU
or interpreter (fused blocks fall back), and re-set per test in this folder only (``imgcls.layers.fused`` reads it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# The kernel tests' guard against a silent fallback, and the launch log that proves a kernel ran.
from ..fused_guard import Launch, launched, recorded_launches, reference_forbidden  # noqa: F401

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
# The SMs of the GPU the configs are written for (H100 SXM and H200: 132); on a CUDA machine, its own count.
GPU_SMS = torch.cuda.get_device_properties(0).multi_processor_count if ON_GPU else 132

if not ON_GPU:
    _before = os.environ.get("TRITON_INTERPRET")
    os.environ.setdefault("TRITON_INTERPRET", "1")
    import imgcls.kernels.channel_shuffle  # noqa: E402,F401
    import imgcls.kernels.dwconv_bn_act  # noqa: E402,F401
    import imgcls.kernels.squeeze_excite  # noqa: E402,F401

    if _before is None:
        del os.environ["TRITON_INTERPRET"]


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if not ON_GPU:
        if os.environ.get("TRITON_INTERPRET", "1") != "1":
            pytest.skip("no CUDA GPU and TRITON_INTERPRET is set to something other than 1")
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the interpreter tiles so small tensors still span several tiles and reduction steps."""
    import imgcls.kernels._reductions as reductions
    import imgcls.kernels.channel_shuffle as cs
    import imgcls.kernels.dwconv_bn_act as dw
    import imgcls.kernels.squeeze_excite as se

    for module in (cs, dw, se):
        monkeypatch.setattr(module, "_INTERPRETER_CONFIG", (16, 32, 1))
    monkeypatch.setattr(reductions, "_INTERPRETER_REDUCE", (4, 16))
    monkeypatch.setattr(se, "_FC_BLOCK_C", 16)


@pytest.fixture
def gpu_launches() -> Iterator[list[Launch]]:
    """Inside, the ops take the tile configs, warp counts and reduction splits of a ``GPU_SMS``-SM GPU
    (``assume_gpu``; the interpreter then runs them numerically on the CPU), and every kernel launch is logged in
    the list this yields, so that a test can assert which configs, grids and splits really ran."""
    from imgcls.kernels._tiles import assume_gpu

    with recorded_launches() as log, assume_gpu(GPU_SMS):
        yield log


def assert_launches(log: list[Launch], expected: list[tuple[str, tuple[int, ...], dict]]) -> None:
    """The logged launches are exactly ``expected``, in order: (kernel, grid, {argument: value})."""
    got = [launch.picked(list(want)) for launch, (_, _, want) in zip(log, expected)]
    assert len(log) == len(expected) and got == expected, f"launches:\n{got}\nexpected:\n{expected}"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str = "") -> None:
    """Max abs error within ``tol`` times the expected tensor's scale (max |value|, at least 1)."""
    actual, expected = actual.double(), expected.double()
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * {scale:.3g}"


def pytest_configure(config: pytest.Config) -> None:
    # triton 3.6's interpreter converts 1-element arrays to ints, which numpy >= 1.25 flags on every launch.
    config.addinivalue_line("filterwarnings", "ignore:Conversion of an array with ndim:DeprecationWarning:triton.*")
