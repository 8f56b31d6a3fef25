"""The tiling every elementwise-over-(N, H, W) kernel here shares: program axis 0 walks blocks of the NP = N * P
flattened (n, y, x) positions (P = H * W, so a tile may span images: fewer programs for small maps), axis 1 blocks
of channels."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def position_tile(P, W, C, NP, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """-> row (program_id 0), image index n (int64) and coords y, x [BLOCK_P]; channels c [BLOCK_C]; c < C; q < NP."""
    row = tl.program_id(0)
    q = row * BLOCK_P + tl.arange(0, BLOCK_P)
    r = q % P
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return row, (q // P).to(tl.int64), r // W, r % W, c, c < C, q < NP


@triton.jit
def masked_position_tile(P, W, C, NP, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """position_tile without the row, its two masks joined into one [BLOCK_C, BLOCK_P] mask."""
    _, n, y, x, c, c_mask, p_mask = position_tile(P, W, C, NP, BLOCK_C, BLOCK_P)
    return n, y, x, c, c_mask[:, None] & p_mask[None, :]
