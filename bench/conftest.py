"""Shared helpers of the kernel benchmarks: the GPU skip, synchronized timing, measured copy bandwidth.

Kernel cases need a CUDA GPU (the Triton interpreter's timings mean nothing); without one they skip with a reason,
so ``pytest bench/ --benchmark-only`` still passes. Each case asserts correctness first, then times eager reference,
``torch.compile`` of the reference and the fused op with ``triton.testing.do_bench`` (it synchronizes), and stores
the times, achieved GB/s over the op's bytes-moved floor and the fraction of copy bandwidth in ``extra_info``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch

NO_GPU = "no CUDA GPU in this session: kernel benchmarks need one (tests/kernels checks correctness on the CPU)"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")


@dataclass
class GpuBench:
    """Timing and reporting for one GPU; ``copy_gbps`` is a measured device-to-device copy (read + write)."""

    copy_gbps: float
    name: str

    def ms(self, fn) -> float:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100)

    def record(self, benchmark, label: str, times: dict[str, float], floor_bytes: dict[str, int]) -> None:
        """Put every time, the fused GB/s over the floor and its share of copy bandwidth into extra_info; print."""
        info = {"gpu": self.name, "torch": torch.__version__, "copy_GBps": round(self.copy_gbps, 1)}
        for key, value in times.items():
            info[f"{key}_ms"] = round(value, 4)
        for phase, nbytes in floor_bytes.items():
            gbps = nbytes / times[f"fused_{phase}"] / 1e6
            info[f"fused_{phase}_GBps"] = round(gbps, 1)
            info[f"fused_{phase}_of_copy"] = round(gbps / self.copy_gbps, 3)
            for base in ("eager", "compile"):
                info[f"{phase}_speedup_vs_{base}"] = round(times[f"{base}_{phase}"] / times[f"fused_{phase}"], 3)
        benchmark.extra_info.update(info)
        print(label, info)


@functools.cache
def _copy_gbps() -> float:
    import triton.testing

    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=100)
    return 2 * src.numel() / ms / 1e6


@pytest.fixture
def gpu() -> GpuBench:
    if not torch.cuda.is_available():
        pytest.skip(NO_GPU)
    return GpuBench(_copy_gbps(), torch.cuda.get_device_name())


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x.contiguous()


def time_phases(gpu: GpuBench, fns: dict[str, object], make_args, grad: torch.Tensor) -> dict[str, float]:
    """For each variant: forward, forward + backward ('both'), and backward = both - forward."""
    times = {}
    for variant, fn in fns.items():
        args = make_args()
        fn(*args).backward(grad)  # warm up (compile, autotune caches)
        times[f"{variant}_fwd"] = gpu.ms(lambda fn=fn, args=args: fn(*args))
        times[f"{variant}_both"] = gpu.ms(lambda fn=fn, args=args: fn(*args).backward(grad))
        times[f"{variant}_bwd"] = max(times[f"{variant}_both"] - times[f"{variant}_fwd"], 1e-6)
    return times
