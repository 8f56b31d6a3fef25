"""Fused channel shuffle and concat + shuffle against the plain PyTorch reference: pure data movement, so exact."""

from __future__ import annotations

import pytest
import torch
from imgcls.kernels import channel_shuffle as op
from imgcls.kernels._tiles import to_layout
from triton import cdiv

from .conftest import DEVICE, assert_launches, launched, recorded_launches, reference_forbidden

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["nchw", "channels_last"]


def rand(shape, dtype, layout, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)
    return to_layout(x, layout).requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("groups,shape", [(2, (2, 10, 5, 3)), (3, (1, 9, 1, 1)), (4, (3, 12, 3, 7))])
def test_channel_shuffle(groups, shape, layout, dtype):
    x = rand(shape, dtype, layout)
    xr = x.detach().clone().requires_grad_()
    with recorded_launches() as log:
        out = op.channel_shuffle(x, groups)
    ref = op.reference(xr, groups)
    assert torch.equal(out, ref) and launched(log, "_shuffle_kernel") == 1, log
    if layout == "channels_last" and shape[2] * shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(ref)
    out.backward(grad), ref.backward(grad)
    assert torch.equal(x.grad, xr.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (3, 5, 1, 1)])
def test_concat_shuffle(shape, layout, dtype):
    a, b = rand(shape, dtype, layout, 0), rand(shape, dtype, layout, 1)
    ar, br = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    with recorded_launches() as log:
        out = op.concat_shuffle(a, b)
    ref = op.concat_shuffle_reference(ar, br)
    assert torch.equal(out, ref) and launched(log, "_interleave_kernel") == 1, log
    grad = torch.randn_like(ref)
    out.backward(grad), ref.backward(grad)
    assert torch.equal(a.grad, ar.grad) and torch.equal(b.grad, br.grad)


def test_concat_shuffle_of_split_views(small_tiles):
    """The ShuffleNetV2 stride-1 unit shuffles a channel-slice view (x.chunk) with a fresh tensor; several tiles."""
    x = rand((2, 40, 6, 5), torch.float32, "nchw")
    kept, other = x.chunk(2, dim=1)
    assert torch.equal(op.concat_shuffle(kept, other * 2), op.concat_shuffle_reference(kept, other * 2))


def test_unequal_branches_fall_back_to_cat():
    a, b = rand((2, 4, 3, 3), torch.float32, "nchw"), rand((2, 6, 3, 3), torch.float32, "nchw")
    assert torch.equal(op.concat_shuffle(a, b), op.concat_shuffle_reference(a, b))


def test_gradcheck():
    x = rand((2, 6, 3, 2), torch.float64, "channels_last")
    a, b = rand((1, 3, 2, 2), torch.float64, "nchw", 1), rand((1, 3, 2, 2), torch.float64, "nchw", 2)
    assert torch.autograd.gradcheck(lambda t: op.channel_shuffle(t, 3), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op.concat_shuffle, (a, b), fast_mode=True)


def test_opcheck():
    x = rand((2, 6, 3, 2), torch.float32, "channels_last")
    a, b = rand((2, 3, 2, 2), torch.float32, "nchw", 1), rand((2, 3, 2, 2), torch.float32, "nchw", 2)
    torch.library.opcheck(op._shuffle_op, (x, 3))
    torch.library.opcheck(op._concat_op, (a, b))
    torch.library.opcheck(op._split_op, (x,))


def test_compile_fullgraph():
    a, b = rand((2, 4, 3, 3), torch.float32, "nchw", 1), rand((2, 4, 3, 3), torch.float32, "nchw", 2)

    def step(a, b):
        return op.channel_shuffle(op.concat_shuffle(a, b), 4).mul(torch.arange(8.0, device=a.device)[:, None, None])

    out = torch.compile(step, fullgraph=True, backend="aot_eager")(a, b)
    out.sum().backward()
    grads = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    ref = step(a, b)
    ref.sum().backward()
    assert torch.equal(out, ref) and torch.equal(grads[0], a.grad) and torch.equal(grads[1], b.grad)


def test_layer_fused_matches_reference():
    from imgcls.layers import ChannelShuffle, set_fused

    a, b = rand((2, 6, 4, 4), torch.float32, "nchw", 1), rand((2, 6, 4, 4), torch.float32, "nchw", 2)
    for groups in (2, 3):
        shuffle = set_fused(ChannelShuffle(groups), True)
        with reference_forbidden() as log:
            fused = shuffle(a, b), shuffle(a)
        assert launched(log, "_shuffle_kernel", "_interleave_kernel") == 2, "the shuffle kernels did not run"
        assert torch.equal(fused[0], ChannelShuffle(groups)(a, b))
        assert torch.equal(fused[1], ChannelShuffle(groups)(a))


def gpu_launch(kernel: str, shape, channels: int, layout: str, **args) -> tuple:
    """One launch of the GPU's config for ``layout`` over [N, channels, H, W] tiles of ``shape``'s positions."""
    n, _, h, w = shape
    block_c, block_p, warps = op._GPU_CONFIGS[layout]
    grid = (cdiv(n * h * w, block_p), cdiv(channels, block_c))
    return kernel, grid, dict(BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps, **args)


# Position tiles that cross image boundaries with a ragged last one; ragged channel blocks (4 NCHW, 64 NHWC).
@pytest.mark.parametrize(
    "shape,layout,dtype",
    [((3, 66, 9, 11), "nchw", torch.float16), ((2, 69, 5, 7), "channels_last", torch.bfloat16)],
)
def test_gpu_configs(gpu_launches, shape, layout, dtype):
    """concat + shuffle and a 3-group shuffle, forward and backward, with the GPU's tile configs and warp counts
    (the interpreter runs them): the launches are the GPU's and the results exact."""
    a, b, x = rand(shape, dtype, layout, 0), rand(shape, dtype, layout, 1), rand(shape, dtype, layout, 2)
    ar, br, xr = (t.detach().clone().requires_grad_() for t in (a, b, x))
    k = shape[1]
    out, ref = op.concat_shuffle(a, b), op.concat_shuffle_reference(ar, br)
    grad = to_layout(torch.randn(ref.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE, dtype), layout)
    out.backward(grad), ref.backward(grad)
    shuffled, shuffled_ref = op.channel_shuffle(x, 3), op.reference(xr, 3)
    shuffled.backward(grad[:, :k]), shuffled_ref.backward(grad[:, :k])
    assert torch.equal(out, ref) and torch.equal(a.grad, ar.grad) and torch.equal(b.grad, br.grad)
    assert torch.equal(shuffled, shuffled_ref) and torch.equal(x.grad, xr.grad)
    assert_launches(
        gpu_launches,
        [
            gpu_launch("_interleave_kernel", shape, k, layout, SPLIT=False),
            gpu_launch("_interleave_kernel", shape, k, layout, SPLIT=True),
            gpu_launch("_shuffle_kernel", shape, k, layout, GROUPS=3),
            gpu_launch("_shuffle_kernel", shape, k, layout, GROUPS=k // 3),
        ],
    )
