"""Channel shuffle (ShuffleNet), and ShuffleNetV2's unit tail concat(a, b) + 2-group shuffle as one pass.

Math: channel_shuffle(x, g) views [N, g*k, H, W] as [N, g, k, H, W], swaps the two channel axes and flattens back:
    out[:, j] = x[:, (j % g) * k + j // g]            (j = i * g + gi  <-  x channel gi * k + i)
Its inverse is channel_shuffle(., k), so the backward is the same kernel with the other group count.
concat_shuffle(a, b) = channel_shuffle(cat([a, b], 1), 2) with a, b both [N, k, H, W]:
    out[:, 2i] = a[:, i],  out[:, 2i + 1] = b[:, i]
written straight from a and b (no concatenated intermediate). Backward: da = dout[:, 0::2], db = dout[:, 1::2],
one pass writing both (the next unit's split, x[:, :k] / x[:, k:], is already a view).
Nothing is saved for backward. Every stride is a kernel argument: NCHW and channels_last run without copies; the
output takes the input's memory format.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._tiles import empty_like_layout, masked_position_tile, tile_config
from .references import channel_shuffle as reference  # noqa: F401  (the plain PyTorch references, see there)
from .references import concat_shuffle as concat_shuffle_reference  # noqa: F401

# ----------------------------------------------------------------------------------------------- Triton kernels


@triton.jit
def _shuffle_kernel(
    src_ptr, dst_ptr,
    C, P, W, NP, GROUPS, PER_GROUP,  # P = H * W, NP = N * P, C = GROUPS * PER_GROUP
    ssn, ssc, ssh, ssw, sdn, sdc, sdh, sdw,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """dst[:, j] = src[:, (j % GROUPS) * PER_GROUP + j // GROUPS] on a [BLOCK_C, BLOCK_P] tile of dst."""
    n, h, w, j, mask = masked_position_tile(P, W, C, NP, BLOCK_C, BLOCK_P)
    src_c = (j % GROUPS) * PER_GROUP + j // GROUPS
    src = src_ptr + n[None, :] * ssn + src_c[:, None].to(tl.int64) * ssc + (h * ssh + w * ssw)[None, :]
    dst = dst_ptr + n[None, :] * sdn + j[:, None].to(tl.int64) * sdc + (h * sdh + w * sdw)[None, :]
    tl.store(dst, tl.load(src, mask=mask), mask=mask)


@triton.jit
def _interleave_kernel(
    a_ptr, b_ptr, out_ptr,  # a, b: [N, K, H, W]; out: [N, 2K, H, W]
    K, P, W, NP,
    san, sac, sah, saw, sbn, sbc, sbh, sbw, son, soc, soh, sow,
    SPLIT: tl.constexpr,  # False: out[2i], out[2i+1] <- a[i], b[i] (forward); True: the reverse (backward)
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n, h, w, i, mask = masked_position_tile(P, W, K, NP, BLOCK_C, BLOCK_P)
    i64 = i[:, None].to(tl.int64)
    a = a_ptr + n[None, :] * san + i64 * sac + (h * sah + w * saw)[None, :]
    b = b_ptr + n[None, :] * sbn + i64 * sbc + (h * sbh + w * sbw)[None, :]
    even = out_ptr + n[None, :] * son + (2 * i64) * soc + (h * soh + w * sow)[None, :]
    if SPLIT:
        tl.store(a, tl.load(even, mask=mask), mask=mask)
        tl.store(b, tl.load(even + soc, mask=mask), mask=mask)
    else:
        tl.store(even, tl.load(a, mask=mask), mask=mask)
        tl.store(even + soc, tl.load(b, mask=mask), mask=mask)


# ------------------------------------------------------------------------------------------------ host launchers

# GPU config table (BLOCK_C, BLOCK_P, num_warps) per layout. UNTUNED (written without a GPU): tune with
# bench/bench_channel_shuffle.py on a lent GPU. The interpreter (CPU) pays per program, so it takes big tiles.
_GPU_CONFIGS = {"nchw": (4, 256, 4), "channels_last": (64, 16, 4)}
_INTERPRETER_CONFIG = (256, 128, 1)


def _empty_like_layout(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A new [N, channels, H, W] tensor in x's memory format."""
    n, _, h, w = x.shape
    return empty_like_layout(x, (n, channels, h, w))


def channel_shuffle_forward(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Launch the shuffle of ``x`` [N, C, H, W] (C divisible by ``groups``)."""
    n, c, h, w = x.shape
    if x.dim() != 4 or c % groups:
        raise ValueError(f"channel_shuffle wants [N, C, H, W] with C divisible by groups={groups}; got {x.shape}")
    out = _empty_like_layout(x, c)
    block_c, block_p, warps = tile_config(x, _GPU_CONFIGS, _INTERPRETER_CONFIG)
    grid = (triton.cdiv(n * h * w, block_p), triton.cdiv(c, block_c))
    _shuffle_kernel[grid](
        x, out, c, h * w, w, n * h * w, groups, c // groups, *x.stride(), *out.stride(),
        BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps,
    )  # fmt: skip
    return out


def concat_shuffle_forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Launch shuffle(cat([a, b], 1), 2) for a, b of the same shape [N, K, H, W]."""
    if a.shape != b.shape or a.dim() != 4 or a.dtype != b.dtype:
        raise ValueError(f"concat_shuffle wants two [N, K, H, W] tensors of one shape/dtype; got {a.shape}, {b.shape}")
    n, k, h, w = a.shape
    out = _empty_like_layout(a, 2 * k)
    _interleave(a, b, out, split=False)
    return out


def split_unshuffle_forward(dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of concat_shuffle (its backward): [N, 2K, H, W] -> (even channels, odd channels)."""
    n, c2, h, w = dout.shape
    a, b = _empty_like_layout(dout, c2 // 2), _empty_like_layout(dout, c2 // 2)
    _interleave(a, b, dout, split=True)
    return a, b


def _interleave(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, split: bool) -> None:
    n, k, h, w = a.shape
    block_c, block_p, warps = tile_config(out, _GPU_CONFIGS, _INTERPRETER_CONFIG)
    grid = (triton.cdiv(n * h * w, block_p), triton.cdiv(k, block_c))
    _interleave_kernel[grid](
        a, b, out, k, h * w, w, n * h * w, *a.stride(), *b.stride(), *out.stride(),
        SPLIT=split, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps,
    )  # fmt: skip


# ------------------------------------------------------------------------------------- autograd and custom ops


class ChannelShuffleFunction(torch.autograd.Function):
    """Backward of a g-group shuffle is a (C/g)-group shuffle; also the custom op's autograd formula."""

    @staticmethod
    def forward(x, groups):
        return channel_shuffle_forward(x, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, groups = inputs
        ctx.inverse_groups = x.shape[1] // groups

    @staticmethod
    def backward(ctx, dout):
        return _shuffle_op(dout, ctx.inverse_groups), None


class ConcatShuffleFunction(torch.autograd.Function):
    """concat + shuffle forward, split + unshuffle backward (each one kernel)."""

    @staticmethod
    def forward(a, b):
        return concat_shuffle_forward(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, dout):
        return _split_op(dout)


class SplitUnshuffleFunction(torch.autograd.Function):
    """The inverse op; its backward is concat_shuffle (so double backward works too)."""

    @staticmethod
    def forward(dout):
        return split_unshuffle_forward(dout)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, da, db):
        return _concat_op(da, db)


@torch.library.custom_op("imgcls_kernels::channel_shuffle", mutates_args=())
def _shuffle_op(x: torch.Tensor, groups: int) -> torch.Tensor:
    return channel_shuffle_forward(x, groups)


@_shuffle_op.register_fake
def _(x, groups):
    return _empty_like_layout(x, x.shape[1])


@torch.library.custom_op("imgcls_kernels::concat_shuffle", mutates_args=())
def _concat_op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return concat_shuffle_forward(a, b)


@_concat_op.register_fake
def _(a, b):
    return _empty_like_layout(a, 2 * a.shape[1])


@torch.library.custom_op("imgcls_kernels::split_unshuffle", mutates_args=())
def _split_op(dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return split_unshuffle_forward(dout)


@_split_op.register_fake
def _(dout):
    return _empty_like_layout(dout, dout.shape[1] // 2), _empty_like_layout(dout, dout.shape[1] // 2)


_shuffle_op.register_autograd(ChannelShuffleFunction.backward, setup_context=ChannelShuffleFunction.setup_context)
_concat_op.register_autograd(ConcatShuffleFunction.backward, setup_context=ConcatShuffleFunction.setup_context)
_split_op.register_autograd(SplitUnshuffleFunction.backward, setup_context=SplitUnshuffleFunction.setup_context)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Fused channel shuffle (same result as ``reference``)."""
    return _shuffle_op(x, groups)


def concat_shuffle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """shuffle(cat([a, b], 1), 2) in one pass; branches of different widths go through cat + shuffle."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return _shuffle_op(torch.cat([a, b], 1), 2)
    return _concat_op(a, b)
