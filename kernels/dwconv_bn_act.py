"""Depthwise conv (KxK, K in {3, 5}, stride 1 or 2, "same" padding) + BatchNorm + activation, fused.

Math, per channel c (M = N * OH * OW positions, PAD = (K - 1) // 2):
    y[n, c, o]  = sum_{kh, kw} w[c, kh, kw] * x[n, c, o * S + (kh, kw) - PAD]          (zero outside the image)
    train:  mean = sum(y) / M,  var = sum((y - mean)^2) / M                            (biased, as BN normalizes)
            running_mean <- (1 - m) running_mean + m mean;  running_var <- (1 - m) running_var + m var
            (the biased var, as Paddle 1.x's moving average; torch's BatchNorm would take var * M / (M - 1))
    eval:   mean = running_mean, var = running_var
    yhat = (y - mean) * rstd, rstd = 1 / sqrt(var + eps);  z = gamma * yhat + beta;  out = act(z)
Backward (dz = dout * act'(z)):
    dbeta = sum(dz), dgamma = sum(dz * yhat)
    train:  dy = gamma * rstd * (dz - (dbeta + yhat * dgamma) / M)        eval:  dy = gamma * rstd * dz
    dw[c, kh, kw] = sum_{n, o} dy[n, c, o] * x[n, c, o * S + (kh, kw) - PAD];  dx = transposed depthwise conv of dy.

Saved for backward: x, w, gamma, beta and the fp32 per-channel mean and rstd (eval: the running stats, from which
the backward derives them); y is recomputed from x (a depthwise conv is a few FLOPs per byte, cheaper than writing y
and reading it back).

Kernels (2-D tiles of BLOCK_C channels x BLOCK_P flattened (n, oh, ow) positions; every stride is an argument,
so NCHW and channels_last run without copies). The kernels that write reduction partials are persistent: program
row r walks the TPR consecutive position tiles [r * TPR, (r + 1) * TPR) and writes one partial row, so there are
R = cdiv(tiles, TPR) rows, about a fixed program count (a few waves of the GPU) whatever the batch:
    forward train: _fwd_stats (conv -> per-row mean and M2) -> _bn_finalize (Chan's merge, running stats,
                   scale/shift) -> _fwd_apply (conv again, scale/shift, act)
    forward eval:  _fwd_apply with FOLD=True (BN folded into scale/shift from the running stats): one kernel, and
                   nothing else (the backward, when there is one, derives mean and rstd from the running stats)
    backward:      _bwd_stats (per-row sums of dz, dz*yhat) -> _sum_rows -> _bwd_dy (writes dy, per-row dw)
                   -> _sum_rows -> _bwd_dx
Every reduction is two-stage (per-row partials, in tile order, then an in-order sum per channel, _reductions.py):
deterministic, no atomics. Inside a row, each (channel, position) lane of the tile keeps its own running sums
(Welford's mean and M2 for the statistics; for dw, one lane tile per tap), reduced across the tile once, at the
row's end: no cross-thread reduction per tile. The backward's dy pass loads each tap tile of x once, for both the
recomputed y and dw.
Loads are upcast to fp32 (fp16/bf16 inputs, fp32 accumulation); outputs are stored in the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._activations import act_fwd, act_grad
from ._reductions import reduce_config, row_split, row_tiles, sum_rows
from ._tiles import Config, empty_like_layout, position_tile, tile_config, tile_positions
from .references import DWCONV_ACTIVATIONS as ACTIVATIONS
from .references import dwconv_bn_act as reference  # noqa: F401  (the op's plain PyTorch reference, see there)
from .references import dwconv_unsupported

# ----------------------------------------------------------------------------------------------- Triton kernels


@triton.jit
def _x_tap(
    x_base, oh, ow, c_mask, p_mask, H, W, sxh, sxw,
    kh: tl.constexpr, kw: tl.constexpr, K: tl.constexpr, STRIDE: tl.constexpr,
):  # fmt: skip
    """x under tap (kh, kw) of the outputs (oh, ow), fp32 [BLOCK_C, BLOCK_P] (0 outside the image or the masks)."""
    PAD: tl.constexpr = (K - 1) // 2
    ih = oh * STRIDE + (kh - PAD)
    iw = ow * STRIDE + (kw - PAD)
    ok = p_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    xv = tl.load(x_base + (ih * sxh + iw * sxw)[None, :], mask=c_mask[:, None] & ok[None, :], other=0.0)
    return xv.to(tl.float32)


@triton.jit
def _x_taps(
    x_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, K: tl.constexpr, STRIDE: tl.constexpr,
):  # fmt: skip
    """The K * K tap tiles of x under the outputs (oh, ow), a tuple in (kh, kw) order, fp32 [BLOCK_C, BLOCK_P]."""
    x_base = x_ptr + n[None, :] * sxn + c[:, None].to(tl.int64) * sxc
    taps = ()
    for kh in tl.static_range(K):
        for kw in tl.static_range(K):
            taps = taps + (_x_tap(x_base, oh, ow, c_mask, p_mask, H, W, sxh, sxw, kh, kw, K, STRIDE),)
    return taps


@triton.jit
def _conv_taps(taps, w_ptr, c, c_mask, swc, swh, sww, K: tl.constexpr):
    """y = sum over taps of w[c, kh, kw] * tap, fp32 (0 where the taps are masked)."""
    acc = tl.zeros(taps[0].shape, dtype=tl.float32)
    for kh in tl.static_range(K):
        for kw in tl.static_range(K):
            wv = tl.load(w_ptr + c * swc + kh * swh + kw * sww, mask=c_mask, other=0.0)
            acc += taps[kh * K + kw] * wv.to(tl.float32)[:, None]
    return acc


@triton.jit
def _dwconv_tile(
    x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask,
    H, W, sxn, sxc, sxh, sxw, swc, swh, sww,
    K: tl.constexpr, STRIDE: tl.constexpr,
):  # fmt: skip
    """y = depthwise conv of x on a [BLOCK_C, BLOCK_P] output tile, fp32 (0 where masked)."""
    taps = _x_taps(x_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, K, STRIDE)
    return _conv_taps(taps, w_ptr, c, c_mask, swc, swh, sww, K)


@triton.jit
def _channels(C, BLOCK_C: tl.constexpr):
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return c, c < C


@triton.jit
def _fwd_stats_kernel(
    x_ptr, w_ptr,
    part_mean_ptr, part_m2_ptr,  # [R, C] fp32: per-row mean and sum of squared deviations of y
    C, H, W, OW, P, NP, TILES, TPR,  # P = OH * OW positions per image, NP = N * P; TPR tiles per row
    sxn, sxc, sxh, sxw, swc, swh, sww,
    K: tl.constexpr, STRIDE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Per (channel, position) lane, Welford's running (mean, M2) over the row's tiles; at the end the lanes are
    merged (Chan et al.) into the row's triple: no cross-thread reduction inside the loop."""
    row, t0, t1 = row_tiles(TILES, TPR)
    c, c_mask = _channels(C, BLOCK_C)
    count = tl.zeros([BLOCK_P], dtype=tl.float32)  # per position lane: every channel has the same count
    lane_mean = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    lane_m2 = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    for tile in range(t0, t1):
        n, oh, ow, p_mask = tile_positions(tile, P, OW, NP, BLOCK_P)
        y = _dwconv_tile(x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, swc, swh, sww, K, STRIDE)
        valid = p_mask.to(tl.float32)
        count += valid
        delta = y - lane_mean
        lane_mean += delta * (valid / tl.maximum(count, 1.0))[None, :]
        lane_m2 += delta * (y - lane_mean) * valid[None, :]
    total = tl.sum(count, 0)
    mean = tl.sum(lane_mean * count[None, :], 1) / tl.maximum(total, 1.0)
    dev = lane_mean - mean[:, None]
    m2 = tl.sum(lane_m2 + dev * dev * count[None, :], 1)
    tl.store(part_mean_ptr + row * C + c, mean, mask=c_mask)
    tl.store(part_m2_ptr + row * C + c, m2, mask=c_mask)


@triton.jit
def _bn_finalize_kernel(
    part_mean_ptr, part_m2_ptr,  # [R, C] from _fwd_stats
    gamma_ptr, beta_ptr, rmean_ptr, rvar_ptr,  # BN parameters and running stats [C] (read only)
    mean_ptr, rstd_ptr, new_rmean_ptr, new_rvar_ptr,  # [C] fp32 outputs: batch mean, rstd, updated running stats
    # (without running stats, rmean/rvar are unused and the last two get the batch mean and (biased) variance)
    scale_ptr, shift_ptr,  # [C] fp32 outputs: gamma * rstd, beta - mean * gamma * rstd
    C, NP, R, ROW_SPAN, eps, momentum,  # ROW_SPAN = positions per row (TPR * BLOCK_P), fewer in the last row
    HAS_RUNNING: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Merge the per-row (count, mean, M2) in row order (Chan et al.), so the result is deterministic."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    total = NP.to(tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)  # per lane; reduced across the rows at the end
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        count = tl.minimum(NP - r * ROW_SPAN, ROW_SPAN).to(tl.float32)
        m = (r[:, None] < R) & c_mask[None, :]
        acc += tl.load(part_mean_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0) * count[:, None]
    mean = tl.sum(acc, 0) / total
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        count = tl.minimum(NP - r * ROW_SPAN, ROW_SPAN).to(tl.float32)
        m = (r[:, None] < R) & c_mask[None, :]
        pm = tl.load(part_mean_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0)
        pm2 = tl.load(part_m2_ptr + r[:, None] * C + c[None, :], mask=m, other=0.0)
        dev = pm - mean[None, :]
        acc += tl.where(m, pm2 + count[:, None] * dev * dev, 0.0)
    var = tl.sum(acc, 0) / total
    rstd = 1.0 / tl.sqrt(var + eps)
    scale = tl.load(gamma_ptr + c, mask=c_mask, other=0.0).to(tl.float32) * rstd
    shift = tl.load(beta_ptr + c, mask=c_mask, other=0.0).to(tl.float32) - mean * scale
    tl.store(mean_ptr + c, mean, mask=c_mask)
    tl.store(rstd_ptr + c, rstd, mask=c_mask)
    tl.store(scale_ptr + c, scale, mask=c_mask)
    tl.store(shift_ptr + c, shift, mask=c_mask)
    new_rm = mean
    new_rv = var
    if HAS_RUNNING:
        rm = tl.load(rmean_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        rv = tl.load(rvar_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        new_rm = (1.0 - momentum) * rm + momentum * new_rm
        new_rv = (1.0 - momentum) * rv + momentum * new_rv
    tl.store(new_rmean_ptr + c, new_rm, mask=c_mask)
    tl.store(new_rvar_ptr + c, new_rv, mask=c_mask)


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
    y = _dwconv_tile(x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, swc, swh, sww, K, STRIDE)
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
    out = act_fwd(y * scale[:, None] + shift[:, None], ACT)
    o_ptr = out_ptr + n[None, :] * son + c[:, None].to(tl.int64) * soc + (oh * soh + ow * sow)[None, :]
    tl.store(o_ptr, out.to(out_ptr.dtype.element_ty), mask=c_mask[:, None] & p_mask[None, :])


@triton.jit
def _dz_tile(
    y, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, n, c, oh, ow, c_mask, p_mask,
    sgn, sgc, sgh, sgw, ACT: tl.constexpr,
):  # fmt: skip
    """From the recomputed y of a tile: yhat, dz = dout * act'(z) (0 where masked), gamma * rstd."""
    gamma = tl.load(gamma_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + c, mask=c_mask, other=0.0)
    rstd = tl.load(rstd_ptr + c, mask=c_mask, other=0.0)
    yhat = (y - mean[:, None]) * rstd[:, None]
    g_ptr = dout_ptr + n[None, :] * sgn + c[:, None].to(tl.int64) * sgc + (oh * sgh + ow * sgw)[None, :]
    dout = tl.load(g_ptr, mask=c_mask[:, None] & p_mask[None, :], other=0.0).to(tl.float32)
    dz = dout * act_grad(yhat * gamma[:, None] + beta[:, None], ACT)
    return yhat, dz, gamma * rstd


@triton.jit
def _bwd_stats_kernel(
    x_ptr, w_ptr, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr,
    part_ptr,  # [R, 2C] fp32: per-row sum(dz) in [:, :C], sum(dz * yhat) in [:, C:]
    C, H, W, OW, P, NP, TILES, TPR,
    sxn, sxc, sxh, sxw, swc, swh, sww, sgn, sgc, sgh, sgw,
    K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Per-row sums of dz and dz * yhat, kept per lane in the loop and reduced once at the end."""
    row, t0, t1 = row_tiles(TILES, TPR)
    c, c_mask = _channels(C, BLOCK_C)
    dbeta_lanes = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    dgamma_lanes = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    for tile in range(t0, t1):
        n, oh, ow, p_mask = tile_positions(tile, P, OW, NP, BLOCK_P)
        y = _dwconv_tile(x_ptr, w_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, swc, swh, sww, K, STRIDE)
        yhat, dz, _ = _dz_tile(
            y, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, n, c, oh, ow, c_mask, p_mask,
            sgn, sgc, sgh, sgw, ACT,
        )  # fmt: skip
        dbeta_lanes += dz
        dgamma_lanes += dz * yhat
    dbeta = tl.sum(dbeta_lanes, 1)
    dgamma = tl.sum(dgamma_lanes, 1)
    tl.store(part_ptr + row * 2 * C + c, dbeta, mask=c_mask)
    tl.store(part_ptr + row * 2 * C + C + c, dgamma, mask=c_mask)


@triton.jit
def _bwd_dy_kernel(
    x_ptr, w_ptr, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr,
    sums_ptr,  # [2C] fp32: dbeta, dgamma (only read in training mode)
    dy_ptr,  # [N, C, OH, OW] in x's dtype, strides sdn.. (same layout as dout's allocation)
    part_dw_ptr,  # [R, C, K*K] fp32 per-row weight-gradient partials
    C, H, W, OW, P, NP, TILES, TPR, inv_m,
    sxn, sxc, sxh, sxw, swc, swh, sww, sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
    K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, TRAINING: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """dy (stored), and the row's dw partials: per tap, dy * x summed per lane in the loop, reduced at the end.
    Each tap tile of x is loaded once per tile, for both the recomputed y and dw."""
    row, t0, t1 = row_tiles(TILES, TPR)
    c, c_mask = _channels(C, BLOCK_C)
    dw_lanes = (tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32),) * (K * K)
    for tile in range(t0, t1):
        n, oh, ow, p_mask = tile_positions(tile, P, OW, NP, BLOCK_P)
        taps = _x_taps(x_ptr, n, c, oh, ow, c_mask, p_mask, H, W, sxn, sxc, sxh, sxw, K, STRIDE)
        y = _conv_taps(taps, w_ptr, c, c_mask, swc, swh, sww, K)
        yhat, dz, g_rstd = _dz_tile(
            y, dout_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, n, c, oh, ow, c_mask, p_mask,
            sgn, sgc, sgh, sgw, ACT,
        )  # fmt: skip
        tile_mask = c_mask[:, None] & p_mask[None, :]
        if TRAINING:  # the batch statistics depend on y too
            dbeta = tl.load(sums_ptr + c, mask=c_mask, other=0.0)
            dgamma = tl.load(sums_ptr + C + c, mask=c_mask, other=0.0)
            dz = dz - (dbeta[:, None] + yhat * dgamma[:, None]) * inv_m
        dy = tl.where(tile_mask, dz * g_rstd[:, None], 0.0)
        d_ptr = dy_ptr + n[None, :] * sdn + c[:, None].to(tl.int64) * sdc + (oh * sdh + ow * sdw)[None, :]
        tl.store(d_ptr, dy.to(dy_ptr.dtype.element_ty), mask=tile_mask)
        summed = ()
        for t in tl.static_range(K * K):
            summed = summed + (dw_lanes[t] + dy * taps[t],)
        dw_lanes = summed
    dw_row = part_dw_ptr + (row * C + c).to(tl.int64) * (K * K)
    for t in tl.static_range(K * K):
        tl.store(dw_row + t, tl.sum(dw_lanes[t], 1), mask=c_mask)


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

# GPU config table, (BLOCK_C, BLOCK_P, num_warps) per kernel size and layout. UNTUNED for speed (written without a
# GPU; tune on a lent GPU with bench/bench_dwconv_bn_act.py); checked for registers and spills on sm_90 by
# bench/compile_sm90.py (bench/results/kernels_sm90_static.md): 5x5 keeps 25 tap tiles and 25 dw partials live in
# the backward, so it takes twice the warps for the same tile (half the values per thread). The interpreter (CPU
# tensors) costs per program and per op, not per element, so it takes the biggest tiles.
_GPU_CONFIGS = {
    3: {"nchw": (8, 64, 4), "channels_last": (32, 16, 4)},
    5: {"nchw": (8, 64, 8), "channels_last": (32, 16, 8)},
}
_INTERPRETER_CONFIG = (256, 128, 1)


def set_gpu_config(kernel_size: int, layout: str, config: Config) -> Config:
    """Replace the GPU tile config (BLOCK_C, BLOCK_P, num_warps) of one kernel size and layout ('nchw' or
    'channels_last'); -> the one it replaced. For sweeps (bench/tune_dwconv.py)."""
    previous = _GPU_CONFIGS[kernel_size][layout]
    _GPU_CONFIGS[kernel_size][layout] = config
    return previous


def _out_hw(h: int, w: int, k: int, stride: int) -> tuple[int, int]:
    pad = (k - 1) // 2
    return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1


def _check(x: torch.Tensor, weight: torch.Tensor, stride: int, act: str, momentum: float | None) -> None:
    if x.dim() != 4 or weight.shape != (x.shape[1], 1, weight.shape[-1], weight.shape[-1]):
        raise ValueError(f"depthwise conv wants x [N, C, H, W] and weight [C, 1, K, K]; got {x.shape}, {weight.shape}")
    reason = dwconv_unsupported(weight.shape[-1], stride, act, momentum)
    if reason is not None:
        raise ValueError(reason)


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
    """Launch the forward; returns (out, stats). Training: stats fp32 [4, C], the batch mean and rstd the backward
    needs, then the updated running mean and var (the caller copies them into its buffers; without running stats,
    the batch mean and variance). Eval: stats is empty [0, C], as the forward is the one folded kernel."""
    _check(x, weight, stride, act, momentum)
    n, c, h, w = x.shape
    k = weight.shape[-1]
    oh, ow = _out_hw(h, w, k, stride)
    p = oh * ow
    block_c, block_p, warps = tile_config(x, _GPU_CONFIGS[k], _INTERPRETER_CONFIG)
    tiles, c_blocks = triton.cdiv(n * p, block_p), triton.cdiv(c, block_c)
    grid = (tiles, c_blocks)
    out = empty_like_layout(x, (n, c, oh, ow))
    geo = dict(K=k, STRIDE=stride, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps)
    strides = (*x.stride(), weight.stride(0), weight.stride(2), weight.stride(3))
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("eval-mode BN needs running_mean and running_var")
        _fwd_apply_kernel[grid](
            x, weight, out, bn_weight, bn_bias, running_mean, running_var, c, h, w, ow, p, n * p, eps,
            *strides, *out.stride(), ACT=ACTIVATIONS.index(act), FOLD=True, **geo,
        )  # fmt: skip
        return out, x.new_empty((0, c), dtype=torch.float32)
    if n * p < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    stats = torch.empty((6, c), dtype=torch.float32, device=x.device)  # mean, rstd, new rm, new rv, scale, shift
    rows, tpr = row_split(x, tiles, c_blocks)
    part = torch.empty((2, rows, c), dtype=torch.float32, device=x.device)
    _fwd_stats_kernel[(rows, c_blocks)](x, weight, part[0], part[1], c, h, w, ow, p, n * p, tiles, tpr, *strides, **geo)
    has_running = running_mean is not None and running_var is not None
    block_r, block_rc = reduce_config(x)
    _bn_finalize_kernel[(triton.cdiv(c, block_rc),)](
        part[0], part[1], bn_weight, bn_bias,
        running_mean if has_running else stats[0], running_var if has_running else stats[1], *stats,
        c, n * p, rows, tpr * block_p, eps, momentum,
        HAS_RUNNING=has_running, BLOCK_R=block_r, BLOCK_C=block_rc,
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
    block_c, block_p, warps = tile_config(x, _GPU_CONFIGS[k], _INTERPRETER_CONFIG)
    tiles, c_blocks = triton.cdiv(n * p, block_p), triton.cdiv(c, block_c)
    rows, tpr = row_split(x, tiles, c_blocks)
    grid = (rows, c_blocks)  # persistent: each row walks tpr tiles
    geo = dict(K=k, STRIDE=stride, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=warps)
    strides = (*x.stride(), weight.stride(0), weight.stride(2), weight.stride(3), *dout.stride())
    act_id = ACTIVATIONS.index(act)
    part = torch.empty((rows, 2 * c), dtype=torch.float32, device=x.device)
    _bwd_stats_kernel[grid](
        x, weight, dout, bn_weight, bn_bias, mean, rstd, part, c, h, w, ow, p, n * p, tiles, tpr,
        *strides, ACT=act_id, **geo,
    )  # fmt: skip
    sums = sum_rows(part)  # [dbeta | dgamma]
    dy = empty_like_layout(x, (n, c, oh, ow))
    part_dw = torch.empty((rows, c * k * k), dtype=torch.float32, device=x.device)
    _bwd_dy_kernel[grid](
        x, weight, dout, bn_weight, bn_bias, mean, rstd, sums, dy, part_dw, c, h, w, ow, p, n * p, tiles, tpr,
        1.0 / (n * p), *strides, *dy.stride(), ACT=act_id, TRAINING=training, **geo,
    )  # fmt: skip
    dweight = sum_rows(part_dw).view(c, 1, k, k).to(weight.dtype)
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
        x, weight, bn_weight, bn_bias, running_mean, running_var, training, _, eps, stride, act = inputs
        _, stats = output
        # Eval has no stats (its forward is one kernel); the backward derives mean and rstd from the running stats.
        ctx.save_for_backward(x, weight, bn_weight, bn_bias, *((stats,) if training else (running_mean, running_var)))
        ctx.training, ctx.eps, ctx.stride, ctx.act = training, eps, stride, act

    @staticmethod
    def backward(ctx, dout, _dstats):
        x, weight, bn_weight, bn_bias, *saved = ctx.saved_tensors
        if ctx.training:
            (stats,) = saved
        else:
            stats = torch.stack([saved[0].float(), torch.rsqrt(saved[1].float() + ctx.eps)])
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
    return empty_like_layout(x, (n, c, oh, ow)), x.new_empty((4 if training else 0, c), dtype=torch.float32)


@torch.library.custom_op("imgcls_kernels::dwconv_bn_act_backward", mutates_args=())
def _backward_op(
    dout: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    stats: torch.Tensor,  # fp32 [>= 2, C]: the mean and rstd the forward normalized with
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
    _check(x, weight, stride, act, momentum)
    out, stats = _forward_op(
        x, weight, bn_weight, bn_bias, running_mean, running_var, training, float(momentum), float(eps), stride, act
    )
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.copy_(stats[2])
            running_var.copy_(stats[3])
    return out
