"""Depthwise conv (KxK, K in {3, 5}, stride 1 or 2, "same" padding) + BatchNorm + activation, fused.

Math, per channel c (M = N * OH * OW positions, PAD = (K - 1) // 2):
    y[n, c, o]  = sum_{kh, kw} w[c, kh, kw] * x[n, c, o * S + (kh, kw) - PAD]          (zero outside the image)
    train:  mean = sum(y) / M,  var = sum((y - mean)^2) / M                            (biased, as BN normalizes)
            running_mean <- (1 - m) running_mean + m mean;  running_var <- (1 - m) running_var + m var * M / (M - 1)
    eval:   mean = running_mean, var = running_var
    yhat = (y - mean) * rstd, rstd = 1 / sqrt(var + eps);  z = gamma * yhat + beta;  out = act(z)
Backward (dz = dout * act'(z)):
    dbeta = sum(dz), dgamma = sum(dz * yhat)
    train:  dy = gamma * rstd * (dz - (dbeta + yhat * dgamma) / M)        eval:  dy = gamma * rstd * dz
    dw[c, kh, kw] = sum_{n, o} dy[n, c, o] * x[n, c, o * S + (kh, kw) - PAD];  dx = transposed depthwise conv of dy.

Saved for backward: x, w, gamma, beta and the fp32 per-channel mean and rstd; y is recomputed from x (a depthwise
conv is a few FLOPs per byte, cheaper than writing y and reading it back).

Kernels (2-D tiles of BLOCK_C channels x BLOCK_P flattened (n, oh, ow) positions; every stride is an argument,
so NCHW and channels_last run without copies):
    forward train: _fwd_stats (conv -> per-tile mean and M2) -> _bn_finalize (Chan's merge, running stats,
                   scale/shift) -> _fwd_apply (conv again, scale/shift, act)
    forward eval:  _fwd_apply with FOLD=True (BN folded into scale/shift from the running stats): one kernel
    backward:      _bwd_stats (per-tile sums of dz, dz*yhat) -> _sum_rows -> _bwd_dy (writes dy, per-tile dw)
                   -> _sum_rows -> _bwd_dx
Every reduction is two-stage (per-tile partials, then an in-order sum per channel): deterministic, no atomics.
Loads are upcast to fp32 (fp16/bf16 inputs, fp32 accumulation); outputs are stored in the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from ._tiles import position_tile

ACTIVATIONS = ("identity", "relu", "relu6", "swish", "hardswish")
_ACT_FNS = {"identity": lambda t: t, "relu": F.relu, "relu6": F.relu6, "swish": F.silu, "hardswish": F.hardswish}


def reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    stride: int = 1,
    act: str = "relu",
) -> torch.Tensor:
    """Plain PyTorch: depthwise conv2d -> batch_norm (updates the running stats in training) -> activation."""
    k = weight.shape[-1]
    y = F.conv2d(x, weight, None, stride, (k - 1) // 2, groups=x.shape[1])
    y = F.batch_norm(y, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    return _ACT_FNS[act](y)


# ----------------------------------------------------------------------------------------------- Triton kernels


@triton.jit
def _act_fwd(z, ACT: tl.constexpr):
    """act(z) for ACT = index in ACTIVATIONS."""
    if ACT == 1:
        out = tl.maximum(z, 0.0)
    elif ACT == 2:
        out = tl.minimum(tl.maximum(z, 0.0), 6.0)
    elif ACT == 3:
        out = z * tl.sigmoid(z)
    elif ACT == 4:
        out = z * tl.minimum(tl.maximum(z + 3.0, 0.0), 6.0) / 6.0
    else:
        out = z
    return out


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    """act'(z), with PyTorch's choices at the kinks (relu: z > 0; relu6: 0 < z < 6; hardswish: -3 <= z <= 3)."""
    if ACT == 1:
        d = tl.where(z > 0.0, 1.0, 0.0)
    elif ACT == 2:
        d = tl.where((z > 0.0) & (z < 6.0), 1.0, 0.0)
    elif ACT == 3:
        s = tl.sigmoid(z)
        d = s * (1.0 + z * (1.0 - s))
    elif ACT == 4:
        d = tl.where(z < -3.0, 0.0, tl.where(z <= 3.0, z / 3.0 + 0.5, 1.0))
    else:
        d = tl.full(z.shape, 1.0, tl.float32)
    return d


@triton.jit
def _dwconv_tile(
    x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask,
    H, W, sxn, sxc, sxh, sxw, swc, swh, sww,
    K: tl.constexpr, STRIDE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """y = depthwise conv of x on a [BLOCK_C, BLOCK_P] output tile, fp32 (0 where masked)."""
    PAD: tl.constexpr = (K - 1) // 2
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    x_base = x_ptr + n[None, :] * sxn + c[:, None].to(tl.int64) * sxc
    for kh in tl.static_range(K):
        ih = oh * STRIDE + (kh - PAD)
        h_ok = p_mask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(K):
            iw = ow * STRIDE + (kw - PAD)
            ok = h_ok & (iw >= 0) & (iw < W)
            xv = tl.load(x_base + (ih * sxh + iw * sxw)[None, :], mask=c_mask[:, None] & ok[None, :], other=0.0)
            wv = tl.load(w_ptr + c * swc + kh * swh + kw * sww, mask=c_mask, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[:, None]
    return acc


@triton.jit
def _fwd_stats_kernel(
    x_ptr, w_ptr,
    part_mean_ptr, part_m2_ptr,  # [R, C] fp32: per-tile mean and sum of squared deviations of y
    C, H, W, OW, P, NP,  # P = OH * OW positions per image, NP = N * P; R = cdiv(NP, BLOCK_P) tiles
    sxn, sxc, sxh, sxw, swc, swh, sww,
    K: tl.constexpr, STRIDE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    row, n, oh, ow, c, c_mask, p_mask = position_tile(P, OW, C, NP, BLOCK_C, BLOCK_P)
    y = _dwconv_tile(
        x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, swc, swh, sww, K, STRIDE, BLOCK_C, BLOCK_P
    )
    count = tl.minimum(NP - row * BLOCK_P, BLOCK_P).to(tl.float32)
    mean = tl.sum(y, 1) / count
    dev = tl.where(p_mask[None, :], y - mean[:, None], 0.0)
    tl.store(part_mean_ptr + row * C + c, mean, mask=c_mask)
    tl.store(part_m2_ptr + row * C + c, tl.sum(dev * dev, 1), mask=c_mask)


@triton.jit
def _bn_finalize_kernel(
    part_mean_ptr, part_m2_ptr,  # [R, C] from _fwd_stats
    gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr,  # BN parameters and running stats [C] (read only)
    mean_ptr, rstd_ptr, new_rmean_ptr, new_rvar_ptr,  # [C] fp32 outputs: batch mean, rstd, updated running stats
    scale_ptr, shift_ptr,  # [C] fp32 outputs: gamma * rstd, beta - mean * gamma * rstd
    C, NP, R, eps, momentum,
    HAS_RUNNING: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Merge the per-tile (count, mean, M2) in row order (Chan et al.), so the result is deterministic."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    total = NP.to(tl.float32)
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        count = tl.minimum(NP - r * BLOCK_P, BLOCK_P).to(tl.float32)
        m = (r[:, None] < R) & c_mask[None, :]
        pm = tl.load(part_mean_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0)
        acc += tl.sum(pm * count[:, None], 0)
    mean = acc / total
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        count = tl.minimum(NP - r * BLOCK_P, BLOCK_P).to(tl.float32)
        m = (r[:, None] < R) & c_mask[None, :]
        pm = tl.load(part_mean_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0)
        pm2 = tl.load(part_m2_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0)
        dev = pm - mean[None, :]
        m2 += tl.sum(tl.where(m, pm2 + count[:, None] * dev * dev, 0.0), 0)
    var = m2 / total
    rstd = 1.0 / tl.sqrt(var + eps)
    scale = tl.load(gamma_ptr + c, mask=c_mask, other=0.0).to(tl.float32) * rstd
    shift = tl.load(beta_ptr + c, mask=c_mask, other=0.0).to(tl.float32) - mean * scale
    tl.store(mean_ptr + c, mean, mask=c_mask)
    tl.store(rstd_ptr + c, rstd, mask=c_mask)
    tl.store(scale_ptr + c, scale, mask=c_mask)
    tl.store(shift_ptr + c, shift, mask=c_mask)
    if HAS_RUNNING:
        rm = tl.load(rmean_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        rv = tl.load(rvar_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        tl.store(new_rmean_ptr + c, (1.0 - momentum) * rm + momentum * mean, mask=c_mask)
        tl.store(new_rvar_ptr + c, (1.0 - momentum) * rv + momentum * var * total / (total - 1.0), mask=c_mask)


@triton.jit
def _fwd_apply_kernel(
    x_ptr, w_ptr, out_ptr,
    a_ptr, b_ptr, rmean_ptr, rvar_ptr,  # FOLD: gamma, beta, running mean, running var; else scale, shift (fp32)
    C, H, W, OW, P, NP, eps,
    sxn, sxc, sxh, sxw, swc, swh, sww, son, soc, soh, sow,
    K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, FOLD: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    row, n, oh, ow, c, c_mask, p_mask = position_tile(P, OW, C, NP, BLOCK_C, BLOCK_P)
    y = _dwconv_tile(
        x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, swc, swh, sww, K, STRIDE, BLOCK_C, BLOCK_P
    )
    a = tl.load(a_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    if FOLD:  # eval: BN folded into one per-channel scale and shift
        rv = tl.load(rvar_ptr + c, mask=c_mask, other=1.0).to(tl.float32)
        rm = tl.load(rmean_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        scale = a / tl.sqrt(rv + eps)
        shift = b - rm * scale
    else:
        scale = a
        shift = b
    out = _act_fwd(y * scale[:, None] + shift[:, None], ACT)
    o_ptr = out_ptr + n[None, :] * son + c[:, None].to(tl.int64) * soc + (oh * soh + ow * sow)[None, :]
    tl.store(o_ptr, out.to(out_ptr.dtype.element_ty), mask=c_mask[:, None] & p_mask[None, :])


@triton.jit
def _dz_tile(
    x_ptr, w_ptr, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, n, c, oh, ow, c_mask, p_mask,
    H, W, sxn, sxc, sxh, sxw, swc, swh, sww, sgn, sgc, sgh, sgw,
    K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Recompute y on the tile; return yhat, dz = dout * act'(z) (0 where masked), gamma * rstd."""
    y = _dwconv_tile(
        x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, swc, swh, sww, K, STRIDE, BLOCK_C, BLOCK_P
    )
    gamma = tl.load(gamma_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + c, mask=c_mask, other=0.0)
    rstd = tl.load(rstd_ptr + c, mask=c_mask, other=0.0)
    yhat = (y - mean[:, None]) * rstd[:, None]
    g_ptr = dout_ptr + n[None, :] * sgn + c[:, None].to(tl.int64) * sgc + (oh * sgh + ow * sgw)[None, :]
    dout = tl.load(g_ptr, mask=c_mask[:, None] & p_mask[None, :], other=0.0).to(tl.float32)
    dz = dout * _act_grad(yhat * gamma[:, None] + beta[:, None], ACT)
    return yhat, dz, gamma * rstd


@triton.jit
def _bwd_stats_kernel(
    x_ptr, w_ptr, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr,
    part_ptr,  # [R, 2C] fp32: per-tile sum(dz) in [:, :C], sum(dz * yhat) in [:, C:]
    C, H, W, OW, P, NP,
    sxn, sxc, sxh, sxw, swc, swh, sww, sgn, sgc, sgh, sgw,
    K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    row, n, oh, ow, c, c_mask, p_mask = position_tile(P, OW, C, NP, BLOCK_C, BLOCK_P)
    yhat, dz, _ = _dz_tile(
        x_ptr, w_ptr, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, n, c, oh, ow, c_mask, p_mask,
        H, W, sxn, sxc, sxh, sxw, swc, swh, sww, sgn, sgc, sgh, sgw, K, STRIDE, ACT, BLOCK_C, BLOCK_P,
    )  # fmt: skip
    tl.store(part_ptr + row * 2 * C + c, tl.sum(dz, 1), mask=c_mask)
    tl.store(part_ptr + row * 2 * C + C + c, tl.sum(dz * yhat, 1), mask=c_mask)


@triton.jit
def _sum_rows_kernel(src_ptr, dst_ptr, R, L, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    """dst[l] = sum_r src[r, l] (contiguous [R, L] fp32), rows added in a fixed order."""
    cols = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    acc = tl.zeros([BLOCK_L], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        m = (r[:, None] < R) & (cols[None, :] < L)
        acc += tl.sum(tl.load(src_ptr + r[:, None].to(tl.int64) * L + cols[None, :], mask=m, other=0.0), 0)
    tl.store(dst_ptr + cols, acc, mask=cols < L)


@triton.jit
def _bwd_dy_kernel(
    x_ptr, w_ptr, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr,
    sums_ptr,  # [2C] fp32: dbeta, dgamma (only read in training mode)
    dy_ptr,  # [N, C, OH, OW] in x's dtype, strides sdn.. (same layout as dout's allocation)
    part_dw_ptr,  # [R, C, K*K] fp32 per-tile weight-gradient partials
    C, H, W, OW, P, NP, inv_m,
    sxn, sxc, sxh, sxw, swc, swh, sww, sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
    K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, TRAINING: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    row, n, oh, ow, c, c_mask, p_mask = position_tile(P, OW, C, NP, BLOCK_C, BLOCK_P)
    yhat, dz, g_rstd = _dz_tile(
        x_ptr, w_ptr, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, n, c, oh, ow, c_mask, p_mask,
        H, W, sxn, sxc, sxh, sxw, swc, swh, sww, sgn, sgc, sgh, sgw, K, STRIDE, ACT, BLOCK_C, BLOCK_P,
    )  # fmt: skip
    tile_mask = c_mask[:, None] & p_mask[None, :]
    if TRAINING:  # the batch statistics depend on y too
        dbeta = tl.load(sums_ptr + c, mask=c_mask, other=0.0)
        dgamma = tl.load(sums_ptr + C + c, mask=c_mask, other=0.0)
        dz = dz - (dbeta[:, None] + yhat * dgamma[:, None]) * inv_m
    dy = tl.where(tile_mask, dz * g_rstd[:, None], 0.0)
    d_ptr = dy_ptr + n[None, :] * sdn + c[:, None].to(tl.int64) * sdc + (oh * sdh + ow * sdw)[None, :]
    tl.store(d_ptr, dy.to(dy_ptr.dtype.element_ty), mask=tile_mask)
    # Weight gradient: correlate dy with the shifted input, one tap at a time.
    PAD: tl.constexpr = (K - 1) // 2
    x_base = x_ptr + n[None, :] * sxn + c[:, None].to(tl.int64) * sxc
    dw_base = part_dw_ptr + (row * C + c).to(tl.int64) * (K * K)
    for kh in tl.static_range(K):
        ih = oh * STRIDE + (kh - PAD)
        h_ok = p_mask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(K):
            iw = ow * STRIDE + (kw - PAD)
            ok = h_ok & (iw >= 0) & (iw < W)
            xv = tl.load(x_base + (ih * sxh + iw * sxw)[None, :], mask=c_mask[:, None] & ok[None, :], other=0.0)
            tl.store(dw_base + kh * K + kw, tl.sum(dy * xv.to(tl.float32), 1), mask=c_mask)


@triton.jit
def _bwd_dx_kernel(
    dy_ptr, w_ptr, dx_ptr,
    C, H, W, OH, OW, NP,  # tiles here run over the NP = N * H * W input positions
    sdn, sdc, sdh, sdw, swc, swh, sww, sxn, sxc, sxh, sxw,
    K: tl.constexpr, STRIDE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """dx[i] = sum_{kh, kw} w[kh, kw] * dy[o] over the outputs o with o * S + (kh, kw) - PAD = i."""
    PAD: tl.constexpr = (K - 1) // 2
    row, n, ih, iw, c, c_mask, p_mask = position_tile(H * W, W, C, NP, BLOCK_C, BLOCK_P)
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    dy_base = dy_ptr + n[None, :] * sdn + c[:, None].to(tl.int64) * sdc
    for kh in tl.static_range(K):
        th = ih + (PAD - kh)  # = oh * STRIDE when this tap reaches i
        oh = tl.where(th >= 0, th, 0) // STRIDE
        h_ok = p_mask & (th >= 0) & (th % STRIDE == 0) & (oh < OH)
        for kw in tl.static_range(K):
            tw = iw + (PAD - kw)
            ow = tl.where(tw >= 0, tw, 0) // STRIDE
            ok = h_ok & (tw >= 0) & (tw % STRIDE == 0) & (ow < OW)
            g = tl.load(dy_base + (oh * sdh + ow * sdw)[None, :], mask=c_mask[:, None] & ok[None, :], other=0.0)
            wv = tl.load(w_ptr + c * swc + kh * swh + kw * sww, mask=c_mask, other=0.0)
            acc += g.to(tl.float32) * wv.to(tl.float32)[:, None]
    x_ptrs = dx_ptr + n[None, :] * sxn + c[:, None].to(tl.int64) * sxc + (ih * sxh + iw * sxw)[None, :]
    tl.store(x_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=c_mask[:, None] & p_mask[None, :])


# ------------------------------------------------------------------------------------------------ host launchers

# GPU config table, (BLOCK_C, BLOCK_P, num_warps) per layout. UNTUNED: written without a GPU; tune on a lent GPU
# with bench/bench_dwconv_bn_act.py and record the result here. The interpreter (CPU tensors) costs per program and
# per op, not per element, so it takes the biggest tiles.
# The per-channel reductions (_bn_finalize, _sum_rows) take (BLOCK_R rows, BLOCK_C columns) per step.
_GPU_CONFIGS = {"nchw": (8, 64, 4), "channels_last": (32, 16, 4)}
_GPU_REDUCE = (32, 64)
_INTERPRETER_CONFIG = (256, 128, 1)
_INTERPRETER_REDUCE = (16, 1024)


def _config(x: torch.Tensor) -> tuple[int, int, int]:
    return _GPU_CONFIGS[_layout(x)] if x.is_cuda else _INTERPRETER_CONFIG


def _reduce_config(x: torch.Tensor) -> tuple[int, int]:
    return _GPU_REDUCE if x.is_cuda else _INTERPRETER_REDUCE


def _layout(x: torch.Tensor) -> str:
    """'channels_last' when channels are the innermost dimension (and that is not ambiguous), else 'nchw'."""
    if x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous():
        return "channels_last"
    return "nchw"


def _empty_like_layout(x: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
    """A new [N, C, H, W] tensor in x's memory format (also used by the fake implementations)."""
    fmt = torch.channels_last if _layout(x) == "channels_last" else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or x.dtype, device=x.device, memory_format=fmt)


def _out_hw(h: int, w: int, k: int, stride: int) -> tuple[int, int]:
    pad = (k - 1) // 2
    return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1


def _check(x: torch.Tensor, weight: torch.Tensor, stride: int, act: str) -> None:
    if x.dim() != 4 or weight.shape != (x.shape[1], 1, weight.shape[-1], weight.shape[-1]):
        raise ValueError(f"depthwise conv wants x [N, C, H, W] and weight [C, 1, K, K]; got {x.shape}, {weight.shape}")
    if weight.shape[-1] not in (3, 5) or stride not in (1, 2):
        raise ValueError(f"fused dwconv supports 3x3/5x5 kernels, stride 1/2; got k={weight.shape[-1]}, s={stride}")
    if act not in ACTIVATIONS:
        raise ValueError(f"fused dwconv activation must be one of {ACTIVATIONS}; got {act!r}")


def _sum_rows(part: torch.Tensor) -> torch.Tensor:
    """Deterministic column sums of a contiguous fp32 [R, L] tensor."""
    r, length = part.shape
    out = torch.empty(length, dtype=torch.float32, device=part.device)
    block_r, block_l = _reduce_config(part)
    _sum_rows_kernel[(triton.cdiv(length, block_l),)](part, out, r, length, BLOCK_R=block_r, BLOCK_L=block_l)
    return out


def dwconv_bn_act_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    stride: int,
    act: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward; returns (out, stats) with stats fp32 [4, C]: the mean and rstd the backward needs, then
    the updated running mean and var (training with running stats; the caller copies them into its buffers)."""
    _check(x, weight, stride, act)
    n, c, h, w = x.shape
    k = weight.shape[-1]
    oh, ow = _out_hw(h, w, k, stride)
    p = oh * ow
    block_c, block_p, warps = _config(x)
    num_pb = triton.cdiv(n * p, block_p)
    grid = (num_pb, triton.cdiv(c, block_c))
    out = _empty_like_layout(x, (n, c, oh, ow))
    stats = torch.empty((6, c), dtype=torch.float32, device=x.device)  # mean, rstd, new rm, new rv, scale, shift
    geo = dict(K=k, STRIDE=stride, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps)
    strides = (*x.stride(), weight.stride(0), weight.stride(2), weight.stride(3))
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("eval-mode BN needs running_mean and running_var")
        _fwd_apply_kernel[grid](
            x, weight, out, bn_weight, bn_bias, running_mean, running_var, c, h, w, ow, p, n * p, eps,
            *strides, *out.stride(), ACT=ACTIVATIONS.index(act), FOLD=True, **geo,
        )  # fmt: skip
        stats[0] = running_mean
        stats[1] = torch.rsqrt(running_var.float() + eps)
        stats[2], stats[3] = stats[0], running_var
        return out, stats[:4]
    if n * p < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    part = torch.empty((2, num_pb, c), dtype=torch.float32, device=x.device)
    _fwd_stats_kernel[grid](x, weight, part[0], part[1], c, h, w, ow, p, n * p, *strides, **geo)
    has_running = running_mean is not None and running_var is not None
    block_r, block_rc = _reduce_config(x)
    _bn_finalize_kernel[(triton.cdiv(c, block_rc),)](
        part[0], part[1], bn_weight, bn_bias,
        running_mean if has_running else stats[0], running_var if has_running else stats[1], *stats,
        c, n * p, num_pb, eps, momentum,
        HAS_RUNNING=has_running, BLOCK_P=block_p, BLOCK_R=block_r, BLOCK_C=block_rc,
    )  # fmt: skip
    _fwd_apply_kernel[grid](
        x, weight, out, stats[4], stats[5], stats[4], stats[5], c, h, w, ow, p, n * p, eps,
        *strides, *out.stride(), ACT=ACTIVATIONS.index(act), FOLD=False, **geo,
    )  # fmt: skip
    return out, stats[:4]


def dwconv_bn_act_backward(
    dout: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    training: bool,
    stride: int,
    act: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward; returns (dx, dweight, dgamma, dbeta). ``dout`` may have any strides (even 0)."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    oh, ow = dout.shape[2], dout.shape[3]
    p = oh * ow
    block_c, block_p, warps = _config(x)
    rows = triton.cdiv(n * p, block_p)
    grid = (rows, triton.cdiv(c, block_c))
    geo = dict(K=k, STRIDE=stride, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps)
    strides = (*x.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *dout.stride())
    act_id = ACTIVATIONS.index(act)
    part = torch.empty((rows, 2 * c), dtype=torch.float32, device=x.device)
    _bwd_stats_kernel[grid](
        x, weight, dout, bn_weight, bn_bias, mean, rstd, part, c, h, w, ow, p, n * p, *strides, ACT=act_id, **geo
    )
    sums = _sum_rows(part)  # [dbeta | dgamma]
    dy = _empty_like_layout(x, (n, c, oh, ow))
    part_dw = torch.empty((rows, c * k * k), dtype=torch.float32, device=x.device)
    _bwd_dy_kernel[grid](
        x, weight, dout, bn_weight, bn_bias, mean, rstd, sums, dy, part_dw, c, h, w, ow, p, n * p, 1.0 / (n * p),
        *strides, *dy.stride(), ACT=act_id, TRAINING=training, **geo,
    )  # fmt: skip
    dweight = _sum_rows(part_dw).view(c, 1, k, k).to(weight.dtype)
    dx = torch.empty_like(x, memory_format=torch.preserve_format)
    _bwd_dx_kernel[(triton.cdiv(n * h * w, block_p), triton.cdiv(c, block_c))](
        dy, weight, dx, c, h, w, oh, ow, n * h * w,
        *dy.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *dx.stride(), **geo,
    )  # fmt: skip
    return dx, dweight, sums[c:].to(bn_weight.dtype, copy=True), sums[:c].to(bn_bias.dtype, copy=True)


# ------------------------------------------------------------------------------------- autograd and custom op


class DWConvBNActFunction(torch.autograd.Function):
    """Autograd for the fused op; its ``setup_context``/``backward`` are also the custom op's autograd formula."""

    @staticmethod
    def forward(x, weight, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, stride, act):
        return dwconv_bn_act_forward(
            x, weight, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, stride, act
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bn_weight, bn_bias, _, _, training, _, _, stride, act = inputs
        _, stats = output
        ctx.save_for_backward(x, weight, bn_weight, bn_bias, stats)
        ctx.training, ctx.stride, ctx.act = training, stride, act

    @staticmethod
    def backward(ctx, dout, _dstats):
        x, weight, bn_weight, bn_bias, stats = ctx.saved_tensors
        grads = _backward_op(dout, x, weight, bn_weight, bn_bias, stats, ctx.training, ctx.stride, ctx.act)
        return (*grads, None, None, None, None, None, None, None)


# Functional (the running-stat update is returned, not done in place): PyTorch registers autograd formulas only
# for functional custom ops. The public entry copies the new running stats into the buffers.
@torch.library.custom_op("imgcls_kernels::dwconv_bn_act", mutates_args=())
def _forward_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    stride: int,
    act: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return dwconv_bn_act_forward(
        x, weight, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, stride, act
    )


@_forward_op.register_fake
def _(x, weight, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, stride, act):
    n, c, h, w = x.shape
    oh, ow = _out_hw(h, w, weight.shape[-1], stride)
    return _empty_like_layout(x, (n, c, oh, ow)), x.new_empty((4, c), dtype=torch.float32)


@torch.library.custom_op("imgcls_kernels::dwconv_bn_act_backward", mutates_args=())
def _backward_op(
    dout: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    stats: torch.Tensor,
    training: bool,
    stride: int,
    act: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return dwconv_bn_act_backward(dout, x, weight, bn_weight, bn_bias, stats[0], stats[1], training, stride, act)


@_backward_op.register_fake
def _(dout, x, weight, bn_weight, bn_bias, stats, training, stride, act):
    dx = torch.empty_like(x, memory_format=torch.preserve_format)
    return dx, torch.empty_like(weight), torch.empty_like(bn_weight), torch.empty_like(bn_bias)


_forward_op.register_autograd(DWConvBNActFunction.backward, setup_context=DWConvBNActFunction.setup_context)


def dwconv_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    stride: int = 1,
    act: str = "relu",
) -> torch.Tensor:
    """Fused depthwise conv + BN + act (same contract as ``reference``; running stats updated in training)."""
    if momentum is None:
        raise ValueError("fused dwconv_bn_act needs a float BN momentum (cumulative averaging is not supported)")
    out, stats = _forward_op(
        x, weight, bn_weight, bn_bias, running_mean, running_var, training, float(momentum), float(eps), stride, act
    )
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.copy_(stats[2])
            running_var.copy_(stats[3])
    return out
