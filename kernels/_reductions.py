"""Deterministic two-stage reductions shared by the persistent kernels: program row r walks TPR consecutive
position tiles and writes one fp32 partial row; the rows are then summed per column in a fixed order (no atomics).
Also the host side: how many rows to launch, and the column-sum launcher."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._tiles import on_gpu, sm_count

# (BLOCK_R rows, BLOCK_L columns) per step of a column reduction (_sum_rows_kernel and dwconv's _bn_finalize).
_GPU_REDUCE = (32, 64)
_INTERPRETER_REDUCE = (16, 1024)
# The persistent kernels launch about _GPU_WAVES programs per SM in all (rows x channel blocks), so the partials and
# their serial sums stay small whatever the batch (UNTUNED). The interpreter takes 2 rows: tensors of more than two
# tiles walk several tiles per row in the tests.
_GPU_WAVES = 4
_INTERPRETER_ROWS = 2


@triton.jit
def row_tiles(TILES, TPR):
    """-> row (program_id 0), its first tile and its end tile (exclusive): TPR tiles, fewer in the last row."""
    row = tl.program_id(0)
    return row, row * TPR, tl.minimum(row * TPR + TPR, TILES)


@triton.jit
def _sum_rows_kernel(src_ptr, dst_ptr, R, L, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    """dst[l] = sum_r src[r, l] (contiguous [R, L] fp32), rows added in a fixed order."""
    cols = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    acc = tl.zeros([BLOCK_R, BLOCK_L], dtype=tl.float32)  # per lane; reduced across the rows once, at the end
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        m = (r[:, None] < R) & (cols[None, :] < L)
        acc += tl.load(src_ptr + r[:, None].to(tl.int64) * L + cols[None, :], mask=m, other=0.0)
    tl.store(dst_ptr + cols, tl.sum(acc, 0), mask=cols < L)


def reduce_config(x: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_L) of a column reduction over partials on x's device."""
    return _GPU_REDUCE if on_gpu(x) else _INTERPRETER_REDUCE


def row_split(x: torch.Tensor, tiles: int, channel_blocks: int) -> tuple[int, int]:
    """-> (R partial rows, TPR position tiles per row) for the persistent kernels; R * TPR >= tiles."""
    target = max(1, _GPU_WAVES * sm_count(x) // channel_blocks) if on_gpu(x) else _INTERPRETER_ROWS
    tpr = triton.cdiv(tiles, min(target, tiles))
    return triton.cdiv(tiles, tpr), tpr


def sum_rows(part: torch.Tensor) -> torch.Tensor:
    """Deterministic column sums of a contiguous fp32 [R, L] tensor."""
    r, length = part.shape
    out = torch.empty(length, dtype=torch.float32, device=part.device)
    block_r, block_l = reduce_config(part)
    _sum_rows_kernel[(triton.cdiv(length, block_l),)](part, out, r, length, BLOCK_R=block_r, BLOCK_L=block_l)
    return out
