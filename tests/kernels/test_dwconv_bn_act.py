"""Fused depthwise conv + BN + act against its plain PyTorch reference (CUDA, or the Triton interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch
from imgcls.kernels import _reductions as reductions
from imgcls.kernels import dwconv_bn_act as op
from imgcls.kernels._tiles import to_layout
from triton import cdiv

from .conftest import (
    DEVICE,
    GPU_SMS,
    ON_GPU,
    assert_close,
    assert_launches,
    launched,
    recorded_launches,
    reference_forbidden,
)

FP16 = torch.float16
# Low-precision inputs are compared with the fp32 reference on the same (rounded) values.
TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 6e-2}
# The running statistics stay fp32 whatever the input dtype, reduced in fp32 from those same values: fp32 tolerance.
FP32_KEYS = ("rm", "rv")


def tol(key: str, dtype: torch.dtype) -> float:
    return TOL[torch.float32 if key in FP32_KEYS else dtype]


# (act, kernel, stride, layout, dtype, training, shape): every activation, kernel, stride, layout, mode and dtype
# appears, with odd sizes (C, H, W not multiples of the tiles; stride 2 on odd H/W; H = W = 1).
CASES = [
    ("identity", 3, 1, "nchw", torch.float32, True, (2, 19, 9, 7)),
    ("identity", 3, 2, "channels_last", torch.float32, True, (2, 19, 9, 7)),
    ("relu", 3, 1, "channels_last", FP16, True, (2, 12, 6, 5)),
    ("relu", 5, 2, "nchw", torch.float32, False, (2, 11, 7, 9)),
    ("relu6", 5, 1, "nchw", FP16, False, (2, 10, 6, 6)),
    ("relu6", 3, 2, "channels_last", torch.float32, False, (3, 9, 5, 5)),
    ("swish", 3, 1, "nchw", torch.float32, False, (2, 13, 8, 5)),
    ("swish", 5, 2, "channels_last", FP16, True, (2, 7, 9, 9)),
    ("hardswish", 5, 1, "channels_last", torch.float32, True, (2, 6, 7, 7)),
    ("hardswish", 3, 2, "nchw", FP16, True, (2, 9, 7, 6)),
    ("relu", 3, 1, "nchw", torch.float32, True, (3, 5, 1, 1)),
    ("identity", 3, 2, "channels_last", torch.float32, False, (2, 5, 1, 1)),
]
if ON_GPU:  # the interpreter handles bf16 too, but one case is enough there (see test_bf16)
    CASES += [(a, k, s, lay, torch.bfloat16, t, shp) for a, k, s, lay, _, t, shp in CASES[:6]]


def make_inputs(shape, k, dtype, layout, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape

    def rand(*size, scale=1.0, offset=0.0):
        return (torch.randn(*size, generator=gen) * scale + offset).to(DEVICE)

    x = to_layout(rand(n, c, h, w).to(dtype), layout)
    params = [rand(c, 1, k, k, scale=0.3), rand(c, scale=0.2, offset=1.0), rand(c, scale=0.1)]
    running = [rand(c, scale=0.1), rand(c, scale=0.1, offset=1.0).abs()]
    return x, params, running


def run_both(shape, k, stride, act, dtype, layout, training, seed=0):
    """Forward + backward through the fused op and the fp32 reference on the same values; returns both results."""
    x, params, running = make_inputs(shape, k, dtype, layout, seed)
    results = []
    for fused in (True, False):
        xi = (x if fused else x.float()).detach().clone().requires_grad_()
        ps = [p.detach().clone().requires_grad_() for p in params]
        rm, rv = (r.clone() for r in running)
        fn = op.dwconv_bn_act if fused else op.reference
        kw = dict(training=training, momentum=0.1, eps=1e-5, stride=stride, act=act)
        with recorded_launches() as log:
            out = fn(xi, *ps, rm, rv, **kw)
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
            out.backward(grad.to(out.dtype))
        if fused:  # the kernels computed it, not the op's reference: one forward and one backward pass launched
            assert launched(log, "_fwd_apply_kernel") == launched(log, "_bwd_dx_kernel") == 1, log
        results.append(dict(out=out, rm=rm, rv=rv, dx=xi.grad, dw=ps[0].grad, dgamma=ps[1].grad, dbeta=ps[2].grad))
    return results


@pytest.mark.parametrize("act,k,stride,layout,dtype,training,shape", CASES)
def test_matches_reference(act, k, stride, layout, dtype, training, shape):
    fused, ref = run_both(shape, k, stride, act, dtype, layout, training)
    assert fused["out"].dtype == dtype and fused["dx"].dtype == dtype
    if layout == "channels_last" and shape[2] * shape[3] > 1:
        assert fused["out"].is_contiguous(memory_format=torch.channels_last)
        assert fused["dx"].is_contiguous(memory_format=torch.channels_last)
    for key in ref:
        assert_close(fused[key], ref[key], tol(key, dtype), key)


@pytest.mark.parametrize(
    "act,k,stride,layout,shape",
    [
        ("swish", 3, 1, "nchw", (3, 20, 7, 9)),  # 6 position tiles: 2 persistent rows of 3
        ("relu6", 5, 2, "channels_last", (3, 20, 7, 9)),
        ("hardswish", 3, 1, "channels_last", (2, 20, 9, 8)),  # 5 tiles: rows of 3 and 2, the last one partial
    ],
)
def test_several_tiles(small_tiles, act, k, stride, layout, shape):
    """Tiles of 16 channels x 32 positions and 4-row reduction steps: C, N*H*W span several of each, and each
    persistent row (2 rows under the interpreter) walks several tiles."""
    fused, ref = run_both(shape, k, stride, act, torch.float32, layout, training=True)
    for key in ref:
        assert_close(fused[key], ref[key], TOL[torch.float32], key)


def test_bf16():
    fused, ref = run_both((2, 6, 5, 5), 3, 1, "swish", torch.bfloat16, "channels_last", training=True)
    assert fused["out"].dtype == torch.bfloat16
    for key in ref:
        assert_close(fused[key], ref[key], tol(key, torch.bfloat16), key)


@pytest.mark.parametrize("layout,dtype", [("nchw", torch.float32), ("channels_last", FP16)])
def test_eval_folds_small_running_variances(layout, dtype):
    """Eval mode with a trained net's running variances (Paddle's are often 1e-4..1e-2) and eps 1e-5: eps is up
    to a tenth of the variance, so a folded scale gamma / sqrt(var + eps) that drops eps or adds it twice is off by
    percents. Forward against a float64 formula written out here; gradients against the reference."""
    shape, k, eps = (2, 16, 6, 5), 3, 1e-5
    x, params, (rm, _) = make_inputs(shape, k, dtype, layout, seed=5)
    rv = torch.logspace(-4, -2, shape[1], device=DEVICE)
    results = []
    for fn in (op.dwconv_bn_act, op.reference):
        xi = (x if fn is op.dwconv_bn_act else x.float()).detach().clone().requires_grad_()
        ps = [p.detach().clone().requires_grad_() for p in params]
        out = fn(xi, *ps, rm.clone(), rv.clone(), training=False, momentum=0.1, eps=eps, stride=1, act="identity")
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(6)).to(DEVICE, out.dtype))
        results.append([out, xi.grad, *(p.grad for p in ps)])
    w, gamma, beta = (p.double() for p in params)
    y = torch.nn.functional.conv2d(x.double(), w, None, 1, k // 2, groups=shape[1])

    def per_channel(v: torch.Tensor) -> torch.Tensor:
        return v.double()[None, :, None, None]

    expected = (y - per_channel(rm)) / torch.sqrt(per_channel(rv) + eps) * per_channel(gamma) + per_channel(beta)
    assert_close(results[0][0], expected, TOL[dtype], "out vs the float64 formula")
    for name, got, want in zip(("out", "dx", "dw", "dgamma", "dbeta"), *results):
        assert_close(got, want, TOL[dtype], name)


def test_deterministic(small_tiles):
    first, _ = run_both((2, 10, 7, 7), 3, 1, "hardswish", torch.float32, "nchw", training=True)
    second, _ = run_both((2, 10, 7, 7), 3, 1, "hardswish", torch.float32, "nchw", training=True)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_gradcheck():
    """float64 in, but the kernels accumulate in fp32: finite differences with eps 1e-3 (error ~eps^2 + 1e-7/eps).
    fast_mode checks a random projection of the Jacobian (a few evaluations instead of one per input element)."""
    x, params, _ = make_inputs((2, 3, 5, 4), 3, torch.float64, "nchw")
    args = [t.double().requires_grad_() for t in (x, *params)]

    def fn(x, w, g, b):
        return op.dwconv_bn_act(x, w, g, b, None, None, training=True, stride=2, act="swish")

    assert torch.autograd.gradcheck(fn, args, eps=1e-3, atol=2e-3, rtol=2e-3, fast_mode=True)


def test_opcheck():
    x, (w, g, b), (rm, rv) = make_inputs((2, 4, 5, 5), 3, torch.float32, "channels_last")
    for t in (x, w, g, b):
        t.requires_grad_()
    for training in (True, False):
        torch.library.opcheck(op._forward_op, (x, w, g, b, rm, rv, training, 0.1, 1e-5, 1, "relu"))
    # No running stats (BN with track_running_stats=False): every row of the returned stats is still written.
    torch.library.opcheck(op._forward_op, (x, w, g, b, None, None, True, 0.1, 1e-5, 2, "swish"))


def test_no_running_stats_rows_are_the_batch_stats():
    """Without running stats, stats rows 2 and 3 hold the batch mean and biased variance (never uninitialized)."""
    x, (w, g, b), _ = make_inputs((2, 6, 5, 5), 3, torch.float32, "nchw")
    _, stats = op._forward_op(x, w, g, b, None, None, True, 0.1, 1e-5, 1, "relu")
    y = torch.nn.functional.conv2d(x, w, None, 1, 1, groups=6)
    assert_close(stats[2], y.mean((0, 2, 3)), 1e-5, "mean")
    assert_close(stats[3], y.var((0, 2, 3), unbiased=False), 1e-5, "biased var")


def test_eval_forward_is_one_kernel_and_backward_derives_the_stats():
    """Eval returns no stats (nothing but the folded kernel runs); the gradients still match the reference."""
    x, (w, g, b), (rm, rv) = make_inputs((2, 5, 6, 6), 3, torch.float32, "nchw")
    _, stats = op._forward_op(x, w, g, b, rm, rv, False, 0.1, 1e-5, 1, "relu")
    assert stats.shape == (0, 5)
    fused, ref = run_both((2, 5, 6, 6), 3, 1, "hardswish", torch.float32, "channels_last", training=False)
    for key in ("dx", "dw", "dgamma", "dbeta"):
        assert_close(fused[key], ref[key], TOL[torch.float32], key)


def test_compile_fullgraph():
    """torch.compile takes the custom op (forward, running-stat update and backward) without a graph break."""
    fused_in, fused_out = make_inputs((2, 5, 6, 6), 3, torch.float32, "nchw"), []
    for compiled in (True, False):
        x, params, (rm, rv) = fused_in
        x = x.clone().requires_grad_()
        params = [p.clone().requires_grad_() for p in params]
        rm, rv = rm.clone(), rv.clone()

        def step(x, w, g, b, rm, rv):
            return op.dwconv_bn_act(x, w, g, b, rm, rv, training=True, act="swish").square().sum()

        fn = torch.compile(step, fullgraph=True, backend="aot_eager") if compiled else step
        fn(x, *params, rm, rv).backward()
        fused_out.append([x.grad, *(p.grad for p in params), rm, rv])
    for a, b in zip(*fused_out):
        assert_close(a, b, 1e-5)


def test_layer_fused_matches_reference():
    """DWConvBNAct: same parameters/buffers in both modes, same outputs, running stats and num_batches_tracked."""
    from imgcls.layers import DWConvBNAct, set_fused

    torch.manual_seed(0)
    ref = DWConvBNAct(8, 5, stride=2, act="relu6").to(DEVICE)
    fused = set_fused(DWConvBNAct(8, 5, stride=2, act="relu6").to(DEVICE), True)
    assert fused.kernel_unsupported is None
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 9, 9, device=DEVICE)
    for train in (True, False):
        ref.train(train), fused.train(train)
        with reference_forbidden() as log:
            out = fused(x)
        assert launched(log, "_fwd_apply_kernel") == 1, f"train={train}: the kernel did not run"
        assert_close(out, ref(x), 2e-5, f"train={train}")
    for key, value in ref.state_dict().items():
        assert_close(fused.state_dict()[key], value, 1e-6, key)


@pytest.mark.parametrize("kernel_size,act,momentum", [(7, "relu", 0.1), (3, "leaky_relu", 0.1), (3, "sigmoid", 0.1)])
def test_layer_unsupported_config_takes_the_reference_path(kernel_size, act, momentum):
    """A block the kernel cannot run (k=7, an activation it lacks) says why, and the switch leaves it on the reference
    path instead of raising; so does one whose BN momentum is set to None after the switch."""
    from imgcls.layers import DWConvBNAct, set_fused

    torch.manual_seed(0)
    ref = DWConvBNAct(4, kernel_size, act=act).to(DEVICE)
    fused = set_fused(DWConvBNAct(4, kernel_size, act=act).to(DEVICE), True)
    assert fused.kernel_unsupported is not None and not fused.fused
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 6, 6, device=DEVICE)
    assert_close(fused(x), ref(x), 1e-6)
    assert_close(fused.bn.running_var, ref.bn.running_var, 1e-6, "running var")


def test_layer_momentum_none_takes_the_reference_path():
    from imgcls.layers import DWConvBNAct, set_fused

    torch.manual_seed(0)
    ref, fused = DWConvBNAct(4, 3).to(DEVICE), set_fused(DWConvBNAct(4, 3).to(DEVICE), True)
    fused.load_state_dict(ref.state_dict())
    ref.bn.momentum = fused.bn.momentum = None  # cumulative moving average: the kernel takes a float momentum
    assert fused.fused and "momentum" in fused.kernel_unsupported  # read per call, after the switch
    x = torch.randn(2, 4, 6, 6, device=DEVICE)
    for _ in range(2):
        assert_close(fused(x), ref(x), 1e-6)
    assert_close(fused.bn.running_mean, ref.bn.running_mean, 1e-6, "running mean")


# ---------------------------------------------------------------------------- the GPU's tile configs and splits


def gpu_plan(shape, k, stride, layout) -> dict:
    """What a ``GPU_SMS``-SM GPU launches for this case, worked out here from the config tables (not by the
    launchers' own helpers): tile config, position tiles, channel blocks, persistent rows and tiles per row."""
    n, c, h, w = shape
    block_c, block_p, warps = op._GPU_CONFIGS[k][layout]
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    tiles, c_blocks = cdiv(n * oh * ow, block_p), cdiv(c, block_c)
    target = max(1, reductions._GPU_WAVES * GPU_SMS // c_blocks)
    tpr = cdiv(tiles, min(target, tiles))
    tile = dict(BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps)
    plan = dict(tile=tile, tiles=tiles, c_blocks=c_blocks, rows=cdiv(tiles, tpr), tpr=tpr)
    return plan | dict(dx_tiles=cdiv(n * h * w, block_p))


def expected_launches(shape, k, training, plan) -> list:
    """Forward then backward: every kernel, its grid and the arguments that carry the config and the split."""
    n, c, h, w = shape
    block_r, block_l = reductions._GPU_REDUCE
    tile, rows, cb = plan["tile"], plan["rows"], plan["c_blocks"]
    split = dict(TILES=plan["tiles"], TPR=plan["tpr"], **tile)
    apply = ("_fwd_apply_kernel", (plan["tiles"], cb), dict(FOLD=not training, **tile))
    forward = [apply]
    if training:
        finalize = dict(R=rows, ROW_SPAN=plan["tpr"] * tile["BLOCK_P"], BLOCK_R=block_r, BLOCK_C=block_l)
        forward = [("_fwd_stats_kernel", (rows, cb), split), ("_bn_finalize_kernel", (cdiv(c, block_l),), finalize)]
        forward.append(apply)
    sums = [("_sum_rows_kernel", (cdiv(length, block_l),), dict(R=rows, L=length, BLOCK_R=block_r, BLOCK_L=block_l))
            for length in (2 * c, c * k * k)]  # fmt: skip
    return forward + [
        ("_bwd_stats_kernel", (rows, cb), split),
        sums[0],
        ("_bwd_dy_kernel", (rows, cb), dict(TRAINING=training, **split)),
        sums[1],
        ("_bwd_dx_kernel", (plan["dx_tiles"], cb), tile),
    ]


def check_on_gpu_configs(log, act, k, stride, layout, dtype, training, shape) -> dict:
    """Run the case under ``gpu_launches``; the launches must be the GPU's, every result the reference's."""
    fused, ref = run_both(shape, k, stride, act, dtype, layout, training)
    plan = gpu_plan(shape, k, stride, layout)
    assert_launches(log, expected_launches(shape, k, training, plan))
    for key in ref:
        assert_close(fused[key], ref[key], tol(key, dtype), key)
    return plan


BF16 = torch.bfloat16
# Small shapes (the interpreter pays ~0.1 s per program and tile here): ragged channel blocks and position tiles,
# tiles that cross image boundaries, stride 2 on odd sizes, every layout, dtype, kernel size, mode.
GPU_CONFIG_CASES = [
    ("swish", 3, 1, "nchw", FP16, True, (3, 12, 7, 7)),  # 3 tiles of 64 (the last one partial), channels 8 + 4
    ("relu6", 3, 2, "channels_last", BF16, True, (2, 40, 7, 5)),  # 2 tiles of 16 (dx: 5), channels 32 + 8
    ("hardswish", 5, 1, "channels_last", FP16, False, (2, 33, 5, 4)),  # eval: 3 tiles of 16, channels 32 + 1
    ("identity", 5, 2, "nchw", BF16, True, (3, 9, 9, 9)),  # 2 tiles of 64 (dx: 4), channels 8 + 1
]


@pytest.mark.parametrize("act,k,stride,layout,dtype,training,shape", GPU_CONFIG_CASES)
def test_gpu_configs(gpu_launches, act, k, stride, layout, dtype, training, shape):
    plan = check_on_gpu_configs(gpu_launches, act, k, stride, layout, dtype, training, shape)
    assert plan["tiles"] >= 2 and plan["c_blocks"] >= 2 and plan["rows"] >= 2


# Persistent splits of a GPU_SMS-SM GPU: more rows than one step of the GPU's row reduction (BLOCK_R = 32) takes,
# then 2 position tiles per row (the last row 1). Minutes each under the interpreter: each of the ~530 (tile,
# channel block) pairs a kernel walks is a program or a loop step of its own. (rows, tiles per row) last.
GPU_SPLIT_CASES = [
    ("relu", 3, 1, "channels_last", FP16, True, (2, 20, 17, 16), (34, 1)),  # 34 tiles of 16, channels 20
    ("swish", 3, 1, "nchw", FP16, True, (3, 12, 71, 80), (134, 2)),  # 267 tiles of 64, channels 8 + 4
    ("relu6", 3, 1, "channels_last", BF16, True, (2, 40, 46, 46), (133, 2)),  # 265 tiles of 16, channels 32 + 8
    ("hardswish", 3, 1, "nchw", BF16, False, (3, 12, 71, 80), (134, 2)),  # eval: the backward walks the split
]


@pytest.mark.slow
@pytest.mark.parametrize("act,k,stride,layout,dtype,training,shape,split", GPU_SPLIT_CASES)
def test_gpu_split(gpu_launches, act, k, stride, layout, dtype, training, shape, split):
    plan = check_on_gpu_configs(gpu_launches, act, k, stride, layout, dtype, training, shape)
    assert (plan["rows"], plan["tpr"]) == split and plan["rows"] > reductions._GPU_REDUCE[0]
