"""Fused squeeze-and-excitation (+ residual add + ReLU) against its plain PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from imgcls.kernels import squeeze_excite as op
from imgcls.kernels._tiles import to_layout
from triton import cdiv, next_power_of_2

from .conftest import DEVICE, ON_GPU, assert_close, assert_launches, launched, recorded_launches, reference_forbidden

TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 6e-2}
NAMES = ("dx", "dw1", "db1", "dw2", "db2", "dres")

# (shape, reduced channels): C and R not multiples of the blocks (R not a power of 2), H = W = 1, HW > one tile.
SHAPES = [((2, 19, 5, 7), 5), ((3, 8, 1, 1), 2), ((2, 6, 13, 13), 3)]
CASES = [
    (shape, r, residual, layout, dtype)
    for (shape, r), residual, layout, dtype in [
        (SHAPES[0], True, "nchw", torch.float32),
        (SHAPES[0], False, "channels_last", torch.float32),
        (SHAPES[1], True, "channels_last", torch.float16),
        (SHAPES[1], False, "nchw", torch.float32),
        (SHAPES[2], True, "channels_last", torch.float32),
        (SHAPES[2], False, "nchw", torch.float16),
        (SHAPES[0], True, "channels_last", torch.bfloat16),
    ]
]
if ON_GPU:
    CASES += [(s, r, res, lay, torch.bfloat16) for s, r, res, lay, _ in CASES[:6]]


def make_inputs(shape, r, dtype, layout, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape

    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=gen) * scale).to(DEVICE)

    x, res = (to_layout(rand(*shape).to(dtype), layout) for _ in range(2))
    params = [rand(r, c, scale=0.5), rand(r, scale=0.3), rand(c, r, scale=0.5), rand(c, scale=0.3)]
    return x, params, res


def run_both(shape, r, residual, layout, dtype, seed=0):
    x, params, res = make_inputs(shape, r, dtype, layout, seed)
    results = []
    for fused in (True, False):
        cast = (lambda t: t) if fused else (lambda t: t.float())
        xi, ri = (cast(t).detach().clone().requires_grad_() for t in (x, res))
        ps = [p.detach().clone().requires_grad_() for p in params]
        with recorded_launches() as log:
            out = (op.squeeze_excite if fused else op.reference)(xi, *ps, ri if residual else None)
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
            out.backward(grad.to(out.dtype))
        if fused:  # the kernels computed it, not the op's reference: one forward and one backward pass launched
            assert launched(log, "_scale_kernel") == launched(log, "_x_grad_kernel") == 1, log
        results.append([out, xi.grad, *(p.grad for p in ps), ri.grad])
    return results


@pytest.mark.parametrize("shape,r,residual,layout,dtype", CASES)
def test_matches_reference(shape, r, residual, layout, dtype):
    fused, ref = run_both(shape, r, residual, layout, dtype)
    assert fused[0].dtype == dtype
    if layout == "channels_last" and shape[2] * shape[3] > 1:
        assert fused[0].is_contiguous(memory_format=torch.channels_last)
    for name, a, b in zip(("out", *NAMES), fused, ref):
        if b is None:
            assert a is None, name
        else:
            assert_close(a, b, TOL[dtype], name)


def test_several_tiles(small_tiles):
    fused, ref = run_both((2, 37, 9, 7), 20, True, "channels_last", torch.float32)
    for name, a, b in zip(("out", *NAMES), fused, ref):
        assert_close(a, b, TOL[torch.float32], name)


def test_gradcheck():
    """fp32 accumulation inside: finite differences with eps 1e-3, checked on a random Jacobian projection."""
    x, params, res = make_inputs((2, 4, 3, 3), 3, torch.float64, "nchw")
    args = [t.double().requires_grad_() for t in (x, *params, res)]
    assert torch.autograd.gradcheck(op.squeeze_excite, args, eps=1e-3, atol=2e-3, rtol=2e-3, fast_mode=True)


def test_opcheck():
    x, params, res = make_inputs((2, 5, 3, 4), 3, torch.float32, "channels_last")
    for t in (x, *params, res):
        t.requires_grad_()
    torch.library.opcheck(op._forward_op, (x, *params, res))
    torch.library.opcheck(op._forward_op, (x, *params, None))


def test_compile_fullgraph():
    x, params, res = make_inputs((2, 6, 4, 4), 3, torch.float32, "nchw")
    grads = []
    for compiled in (True, False):
        args = [t.detach().clone().requires_grad_() for t in (x, *params, res)]
        fn = torch.compile(op.squeeze_excite, fullgraph=True, backend="aot_eager") if compiled else op.squeeze_excite
        fn(*args).square().sum().backward()
        grads.append([a.grad for a in args])
    for a, b in zip(*grads):
        assert_close(a, b, 1e-5)


def test_layer_fused_matches_reference():
    from imgcls.layers import SqueezeExcite, set_fused

    torch.manual_seed(0)
    ref = SqueezeExcite(12, 3).to(DEVICE)
    fused = set_fused(SqueezeExcite(12, 3).to(DEVICE), True)
    fused.load_state_dict(ref.state_dict())
    x, res = torch.randn(2, 12, 5, 5, device=DEVICE), torch.randn(2, 12, 5, 5, device=DEVICE)
    with reference_forbidden() as log:
        outs = fused(x), fused(x, res)
    assert launched(log, "_scale_kernel") == 2, "the SE kernels did not run"
    assert_close(outs[0], ref(x), 2e-5)
    assert_close(outs[1], ref(x, res), 2e-5)


def expected_launches(shape, r, residual, layout) -> list:
    """The GPU's launches for this case, from the config table: forward (pool, excite, scale), then backward."""
    n, c, h, w = shape
    block_c, block_p, warps = op._GPU_CONFIGS[layout]
    tile = dict(BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps)
    per_image, positions = (n, cdiv(c, block_c)), (cdiv(n * h * w, block_p), cdiv(c, block_c))
    fc = ((n,), dict(BLOCK_C=op._FC_BLOCK_C, BLOCK_R=next_power_of_2(r)))
    return [
        ("_pool_kernel", per_image, tile),
        ("_excite_kernel", *fc),
        ("_scale_kernel", positions, dict(HAS_RES=residual, **tile)),
        ("_gate_grad_kernel", per_image, dict(HAS_RES=residual, **tile)),
        ("_excite_grad_kernel", *fc),
        ("_x_grad_kernel", positions, tile),
    ]


# Each image's H * W spans several position blocks of the pool and gate-gradient loops (256 NCHW, 16
# channels_last), C several channel blocks and FC steps (64) with a ragged last one; R is no power of 2.
GPU_CONFIG_CASES = [
    ((2, 70, 17, 17), 6, True, "nchw", torch.float16),
    ((3, 70, 9, 7), 5, False, "channels_last", torch.bfloat16),
    ((2, 130, 5, 4), 9, True, "channels_last", torch.float16),
    ((2, 9, 23, 12), 3, False, "nchw", torch.bfloat16),
]


@pytest.mark.parametrize("shape,r,residual,layout,dtype", GPU_CONFIG_CASES)
def test_gpu_configs(gpu_launches, shape, r, residual, layout, dtype):
    """The tile configs and warp counts of a GPU, run by the interpreter: launches and results checked."""
    fused, ref = run_both(shape, r, residual, layout, dtype)
    assert_launches(gpu_launches, expected_launches(shape, r, residual, layout))
    for name, a, b in zip(("out", *NAMES), fused, ref):
        if b is None:
            assert a is None, name
        else:
            assert_close(a, b, TOL[dtype], name)
