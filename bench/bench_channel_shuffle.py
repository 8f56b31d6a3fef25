"""Fused concat + channel shuffle (ShuffleNetV2 unit tail) vs eager and torch.compile'd reference.

    .venv/bin/python -m pytest bench/bench_channel_shuffle.py --benchmark-only -s   # needs a CUDA GPU

Floor: read both branches, write the output (= a plain copy of the output's bytes); the goal is within 1.15x of a
copy, i.e. fused_*_of_copy >= 0.87.
"""

from __future__ import annotations

import pytest
import torch
from conftest import DTYPES, LAYOUTS, nbytes, time_phases, to_layout  # bench/conftest.py

# ShuffleNetV2_swish at 224 px, batch 256: (branch channels, H = W) of each stage's units.
SHAPES = [(58, 28), (116, 14), (232, 7)]
BATCH = 256


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("c,hw", SHAPES)
def test_concat_shuffle(benchmark, gpu, c, hw, dtype, layout):
    from kernels import channel_shuffle as op

    a0, b0 = (to_layout(torch.randn(BATCH, c, hw, hw, device="cuda", dtype=DTYPES[dtype]), layout) for _ in "ab")

    def make_args():
        return a0.detach().clone().requires_grad_(), b0.detach().clone().requires_grad_()

    torch.testing.assert_close(op.concat_shuffle(a0, b0), op.concat_shuffle_reference(a0, b0), atol=0, rtol=0)
    grad = torch.randn(BATCH, 2 * c, hw, hw, device="cuda", dtype=DTYPES[dtype])
    fns = {
        "eager": op.concat_shuffle_reference,
        "compile": torch.compile(op.concat_shuffle_reference),
        "fused": op.concat_shuffle,
    }
    times = time_phases(gpu, fns, make_args, grad)
    floor = {"fwd": 2 * nbytes(grad), "bwd": 2 * nbytes(grad)}
    floor["both"] = floor["fwd"] + floor["bwd"]
    gpu.record(benchmark, f"concat_shuffle c={c} {hw}px {dtype} {layout}", times, floor)
    args = make_args()
    benchmark(lambda: (op.concat_shuffle(*args).backward(grad), torch.cuda.synchronize()))
