"""Fused concat + channel shuffle (ShuffleNetV2 unit tail) vs eager and torch.compile'd reference.

    .venv/bin/python -m pytest bench/bench_channel_shuffle.py --benchmark-only -s   # needs a CUDA GPU

Floor: read both branches, write the output (= a plain copy of the output's bytes); the goal is within 1.15x of a
copy, i.e. fused_*_of_copy >= 0.87.
"""

from __future__ import annotations

import pytest
import torch
from _harness import DTYPES, LAYOUTS, bench_fused, check_against_reference, compile_fresh, nbytes, time_phases

# ShuffleNetV2_swish at 224 px, batch 256: (branch channels, H = W) of each stage's units.
SHAPES = [(58, 28), (116, 14), (232, 7)]
BATCH = 256


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("c,hw", SHAPES)
def test_concat_shuffle(benchmark, gpu, c, hw, dtype, layout):
    from imgcls.kernels import channel_shuffle as op
    from imgcls.kernels._tiles import to_layout

    dt = DTYPES[dtype]
    a0, b0 = (to_layout(torch.randn(BATCH, c, hw, hw, device="cuda", dtype=dt), layout) for _ in "ab")

    def make_args():
        return a0.detach().clone().requires_grad_(), b0.detach().clone().requires_grad_()

    grad = to_layout(torch.randn(BATCH, 2 * c, hw, hw, device="cuda", dtype=dt), layout)
    check_against_reference(op.concat_shuffle, op.concat_shuffle_reference, make_args, grad, 0.0)  # data movement
    fns = {
        "eager": op.concat_shuffle_reference,
        "compile": compile_fresh(op.concat_shuffle_reference),
        "fused": op.concat_shuffle,
    }
    times = time_phases(gpu, fns, make_args, grad)
    floor = {"fwd": 2 * nbytes(grad), "bwd": 2 * nbytes(grad)}
    floor["both"] = floor["fwd"] + floor["bwd"]
    gpu.record(benchmark, f"concat_shuffle c={c} {hw}px {dtype} {layout}", times, floor)
    bench_fused(benchmark, op.concat_shuffle, make_args(), grad)
