"""Fused SE + residual add + ReLU (SE-ResNeXt block tail) vs eager and torch.compile'd reference.

    .venv/bin/python -m pytest bench/bench_squeeze_excite.py --benchmark-only -s   # needs a CUDA GPU

Floor: forward reads x twice (pool, then scale) and the residual, writes out; backward reads dout, out, x
(gate gradient, writes dres), then dres again, writes dx. Goal: forward within 1.2x of its floor.
"""

from __future__ import annotations

import pytest
import torch
from _harness import (
    DTYPES,
    LAYOUTS,
    TOL,
    bench_fused,
    check_against_reference,
    compile_fresh,
    nbytes,
    time_phases,
)

# SE_ResNeXt50_32x4d at 224 px, batch 256: (channels, H = W, reduced channels) per stage.
SHAPES = [(256, 56, 16), (512, 28, 32), (1024, 14, 64), (2048, 7, 128)]
BATCH = 256


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("c,hw,r", SHAPES)
def test_squeeze_excite_residual(benchmark, gpu, c, hw, r, dtype, layout):
    from imgcls.kernels import squeeze_excite as op
    from imgcls.kernels._tiles import to_layout

    dt = DTYPES[dtype]
    x0, res0 = (to_layout(torch.randn(BATCH, c, hw, hw, device="cuda", dtype=dt), layout) for _ in "xr")
    params0 = [torch.randn(r, c) * 0.05, torch.zeros(r), torch.randn(c, r) * 0.05, torch.zeros(c)]

    def make_args():
        leaves = [t.detach().clone().requires_grad_() for t in (x0, *(p.to("cuda", dt) for p in params0), res0)]
        return tuple(leaves)

    grad = torch.randn_like(x0)
    check_against_reference(op.squeeze_excite, op.reference, make_args, grad, TOL[dt])  # output, 6 gradients
    fns = {"eager": op.reference, "compile": compile_fresh(op.reference), "fused": op.squeeze_excite}
    times = time_phases(gpu, fns, make_args, grad)
    floor = {"fwd": 4 * nbytes(x0), "bwd": 6 * nbytes(x0)}
    floor["both"] = floor["fwd"] + floor["bwd"]
    gpu.record(benchmark, f"se+residual c={c} {hw}px {dtype} {layout}", times, floor)
    bench_fused(benchmark, op.squeeze_excite, make_args(), grad)
