"""Fused depthwise conv + BN + act vs eager and torch.compile'd reference, training mode, at real layer shapes.

    .venv/bin/python -m pytest bench/bench_dwconv_bn_act.py --benchmark-only -s   # needs a CUDA GPU

Floor (bytes that must move): forward reads x twice (statistics pass, then the output pass) and writes out;
backward reads x and dout twice (gradient-statistics pass, then dx/dw) and writes dx.
"""

from __future__ import annotations

import pytest
import torch
from conftest import DTYPES, LAYOUTS, nbytes, time_phases, to_layout  # bench/conftest.py

# (model, channels, input H = W, kernel, stride, act) at 224 px, batch 256.
SHAPES = [
    ("ShuffleNetV2_swish", 58, 28, 3, 1, "identity"),
    ("ShuffleNetV2_swish", 116, 14, 3, 1, "identity"),
    ("ShuffleNetV2_swish", 232, 7, 3, 1, "identity"),
    ("ShuffleNetV2_swish", 58, 56, 3, 2, "identity"),
    ("ShuffleNetV2_swish", 232, 14, 3, 2, "identity"),
    ("MobileNetV2", 32, 112, 3, 1, "relu6"),
    ("MobileNetV2", 144, 56, 3, 1, "relu6"),
    ("MobileNetV2", 192, 28, 3, 1, "relu6"),
    ("MobileNetV2", 576, 14, 3, 1, "relu6"),
    ("MobileNetV2", 960, 7, 3, 1, "relu6"),
    ("MobileNetV2", 96, 112, 3, 2, "relu6"),
    ("MobileNetV2", 576, 14, 3, 2, "relu6"),
]
BATCH = 256


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("model,c,hw,k,stride,act", SHAPES)
def test_dwconv_bn_act(benchmark, gpu, model, c, hw, k, stride, act, dtype, layout):
    from kernels import dwconv_bn_act as op

    dt = DTYPES[dtype]
    x0 = to_layout(torch.randn(BATCH, c, hw, hw, device="cuda", dtype=dt), layout)
    w0 = torch.randn(c, 1, k, k, device="cuda") * 0.3
    gamma0, beta0 = torch.rand(c, device="cuda") + 0.5, torch.randn(c, device="cuda") * 0.1

    def make_args():
        leaves = [t.detach().clone().requires_grad_() for t in (x0, w0.to(dt), gamma0, beta0)]
        return (*leaves, torch.zeros(c, device="cuda"), torch.ones(c, device="cuda"))

    def fused(x, w, g, b, rm, rv):
        return op.dwconv_bn_act(x, w, g, b, rm, rv, training=True, stride=stride, act=act)

    def reference(x, w, g, b, rm, rv):
        return op.reference(x, w, g, b, rm, rv, True, 0.1, 1e-5, stride, act)

    out_f, out_r = fused(*make_args()), reference(*make_args())
    torch.testing.assert_close(out_f, out_r, atol=3e-2, rtol=3e-2)
    grad = torch.randn_like(out_r)
    fns = {"eager": reference, "compile": torch.compile(reference), "fused": fused}
    times = time_phases(gpu, fns, make_args, grad)
    floor = {"fwd": 2 * nbytes(x0) + nbytes(out_r), "bwd": 2 * nbytes(x0, grad) + nbytes(x0)}
    floor["both"] = floor["fwd"] + floor["bwd"]
    gpu.record(benchmark, f"dwconv {model} c={c} {hw}px s{stride} {dtype} {layout}", times, floor)
    args = make_args()
    benchmark(lambda: (fused(*args).backward(grad), torch.cuda.synchronize()))
