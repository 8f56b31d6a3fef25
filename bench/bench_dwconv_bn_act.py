"""Fused depthwise conv + BN + act vs eager and torch.compile'd reference at real layer shapes: training mode
(forward, backward, both), and eval mode (BN folded, inference forward) at fp16.

    .venv/bin/python -m pytest bench/bench_dwconv_bn_act.py --benchmark-only -s   # needs a CUDA GPU

Floor (bytes that must move): training forward reads x twice (statistics pass, then the output pass) and writes
out; backward reads x and dout twice (gradient-statistics pass, then dx/dw) and writes dx. Eval forward reads x
once and writes out.
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


def make_case(c, hw, k, stride, act, dt, layout, training):
    """-> (make_args, fused, reference): fresh leaves (gradients only in training) and running stats per call."""
    from imgcls.kernels import dwconv_bn_act as op
    from imgcls.kernels._tiles import to_layout

    x0 = to_layout(torch.randn(BATCH, c, hw, hw, device="cuda", dtype=dt), layout)
    w0 = torch.randn(c, 1, k, k, device="cuda") * 0.3
    gamma0, beta0 = torch.rand(c, device="cuda") + 0.5, torch.randn(c, device="cuda") * 0.1
    rm0, rv0 = torch.randn(c, device="cuda") * 0.1, torch.rand(c, device="cuda") + 0.5

    def make_args():
        leaves = [t.detach().clone().requires_grad_(training) for t in (x0, w0.to(dt), gamma0, beta0)]
        return (*leaves, rm0.clone(), rv0.clone())

    def fused(x, w, g, b, rm, rv):
        return op.dwconv_bn_act(x, w, g, b, rm, rv, training=training, stride=stride, act=act)

    def reference(x, w, g, b, rm, rv):
        return op.reference(x, w, g, b, rm, rv, training, 0.1, 1e-5, stride, act)

    return make_args, fused, reference


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("model,c,hw,k,stride,act", SHAPES)
def test_dwconv_bn_act(benchmark, gpu, model, c, hw, k, stride, act, dtype, layout):
    dt = DTYPES[dtype]
    make_args, fused, reference = make_case(c, hw, k, stride, act, dt, layout, training=True)
    x0 = make_args()[0]
    out = reference(*make_args()).detach()
    grad = torch.randn_like(out)
    check_against_reference(fused, reference, make_args, grad, TOL[dt])  # output, 4 gradients, running stats
    times = time_phases(gpu, {"eager": reference, "compile": compile_fresh(reference), "fused": fused}, make_args, grad)
    floor = {"fwd": 2 * nbytes(x0) + nbytes(out), "bwd": 2 * nbytes(x0, grad) + nbytes(x0)}
    floor["both"] = floor["fwd"] + floor["bwd"]
    gpu.record(benchmark, f"dwconv {model} c={c} {hw}px s{stride} {dtype} {layout}", times, floor)
    bench_fused(benchmark, fused, make_args(), grad)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model,c,hw,k,stride,act", SHAPES)
def test_dwconv_bn_act_eval(benchmark, gpu, model, c, hw, k, stride, act, layout):
    """Inference: BN folded into the conv's per-channel scale and shift, one kernel, under no_grad."""
    dt = torch.float16
    make_args, fused, reference = make_case(c, hw, k, stride, act, dt, layout, training=False)
    with torch.no_grad():
        check_against_reference(fused, reference, make_args, None, TOL[dt])  # output; running stats untouched
        x0, out = make_args()[0], reference(*make_args())
        fns = {"eager": reference, "compile": compile_fresh(reference), "fused": fused}
        times = time_phases(gpu, fns, make_args, None)
        gpu.record(
            benchmark, f"dwconv eval {model} c={c} {hw}px s{stride} fp16 {layout}", times, {"fwd": nbytes(x0, out)}
        )
        bench_fused(benchmark, fused, make_args(), None)
