"""Helpers of the kernel benchmarks: synchronized timing, measured copy bandwidth, the correctness check.

Kernel cases need a CUDA GPU (the Triton interpreter's timings mean nothing); without one they skip with a reason
(the ``gpu`` fixture of bench/conftest.py), so ``pytest bench/ --benchmark-only`` still passes. Each case asserts
correctness first (the output, every gradient and any state the op updates, such as BN running stats), then times
eager reference, ``torch.compile`` of the reference (compiled afresh per case; a graph break or a fall back to eager
raises) and the fused op with ``triton.testing.do_bench`` (it synchronizes), and stores the times, achieved GB/s
over the op's bytes-moved floor and the fraction of copy bandwidth in ``extra_info``. Imported as ``_harness``
(pytest puts bench/ on sys.path; bench/tune_dwconv.py does so itself).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

NO_GPU = "no CUDA GPU on this machine: kernel benchmarks need one (tests/kernels checks correctness on the CPU)"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")
# Correctness check before timing: max error within TOL times the reference's scale (max |value|, at least 1).
TOL = {torch.float16: 3e-2, torch.bfloat16: 6e-2}


@dataclass
class GpuBench:
    """Timing and reporting for one GPU; ``copy_gbps`` is a measured device-to-device copy (read + write)."""

    copy_gbps: float
    name: str

    def ms(self, fn, grad_to_none: list[torch.Tensor] | None = None) -> float:
        """Mean ms of ``fn``; the .grad of ``grad_to_none`` is reset before each rep (no accumulation kernels)."""
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none)

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
def copy_gbps() -> float:
    """Measured device-to-device copy bandwidth (read + write) of this process's GPU, GB/s."""
    import triton.testing

    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=100)
    return 2 * src.numel() / ms / 1e6


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def compile_fresh(fn: Callable) -> Callable:
    """``torch.compile(fn)`` from a clean dynamo state, so one case's guards never count against the next one's
    recompile limit; ``fullgraph`` makes a graph break raise, and hitting the limit raises instead of silently
    running the "compile" column eagerly."""
    torch._dynamo.reset()
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(fn, fullgraph=True)


def _leaves(args: tuple) -> list[torch.Tensor]:
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    actual, expected = actual.double(), expected.double()
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * {scale:.3g}"


def check_against_reference(
    fused: Callable, reference: Callable, make_args: Callable, grad: torch.Tensor | None, tol: float
) -> None:
    """Run both on fresh copies of the same inputs: the output, with a ``grad`` every leaf's gradient, and every
    other tensor argument afterwards (state updated in place, e.g. BN running stats) must agree."""
    runs = []
    for fn in (fused, reference):
        args = make_args()
        out = fn(*args)
        if grad is not None:
            out.backward(grad)
        runs.append((out, args))
    (out_f, args_f), (out_r, args_r) = runs
    _assert_close(out_f, out_r, tol, "output")
    for i, (a, b) in enumerate(zip(args_f, args_r)):
        if not isinstance(a, torch.Tensor):
            continue
        if not a.requires_grad:
            _assert_close(a, b, tol, f"argument {i} after the call")
        elif grad is not None:
            _assert_close(a.grad, b.grad, tol, f"gradient of argument {i}")


def time_phases(
    gpu: GpuBench, fns: dict[str, Callable], make_args: Callable, grad: torch.Tensor | None
) -> dict[str, float]:
    """For each variant: forward; with a ``grad`` also forward + backward ('both') and backward = both - forward."""
    times = {}
    for variant, fn in fns.items():
        args = make_args()
        leaves = _leaves(args)
        out = fn(*args)  # warm up (compile, autotune caches)
        if grad is not None:
            out.backward(grad)
        times[f"{variant}_fwd"] = gpu.ms(lambda fn=fn, args=args: fn(*args))
        if grad is None:
            continue
        times[f"{variant}_both"] = gpu.ms(lambda fn=fn, args=args: fn(*args).backward(grad), grad_to_none=leaves)
        times[f"{variant}_bwd"] = max(times[f"{variant}_both"] - times[f"{variant}_fwd"], 1e-6)
    return times


def bench_fused(benchmark, fn: Callable, args: tuple, grad: torch.Tensor | None) -> None:
    """pytest-benchmark's own timing of the fused op (forward + backward with a ``grad``), grads reset per round."""
    leaves = _leaves(args)

    def step() -> None:
        for t in leaves:
            t.grad = None
        out = fn(*args)
        if grad is not None:
            out.backward(grad)
        torch.cuda.synchronize()

    benchmark(step)
