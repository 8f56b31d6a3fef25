"""The tiling every elementwise-over-(N, H, W) kernel here shares: program axis 0 walks blocks of the NP = N * P
flattened (n, y, x) positions (P = H * W, so a tile may span images: fewer programs for small maps), axis 1 blocks
of channels. Also the host side every launcher shares: the memory layout of a tensor, and the tile config for it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import triton
import triton.language as tl

Config = tuple[int, int, int]  # (BLOCK_C, BLOCK_P, num_warps)


def layout(x: torch.Tensor) -> str:
    """'channels_last' when channels are the innermost dimension (and that is not ambiguous), else 'nchw'."""
    if x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous():
        return "channels_last"
    return "nchw"


def to_layout(x: torch.Tensor, name: str) -> torch.Tensor:
    """The inverse of ``layout``: ``x`` in the memory format named 'nchw' or 'channels_last'."""
    return x.contiguous(memory_format=torch.channels_last) if name == "channels_last" else x.contiguous()


def empty_like_layout(x: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
    """A new [N, C, H, W] tensor in x's memory format (also used by the fake implementations)."""
    fmt = torch.channels_last if layout(x) == "channels_last" else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or x.dtype, device=x.device, memory_format=fmt)


# Set only inside ``assume_gpu``: the SM count CPU tensors then pretend to have.
_assumed_sms: int | None = None


@contextlib.contextmanager
def assume_gpu(sms: int) -> Iterator[None]:
    """Inside, CPU tensors take the GPU tile configs and launch shapes of a GPU with ``sms`` SMs. For
    bench/compile_sm90.py (a Triton driver that compiles for sm_90 and runs nothing) and for the kernel tests, whose
    interpreter then runs the GPU's configs numerically on the CPU; never for real work."""
    global _assumed_sms
    before, _assumed_sms = _assumed_sms, sms
    try:
        yield
    finally:
        _assumed_sms = before


def on_gpu(x: torch.Tensor) -> bool:
    """Whether launches for x are shaped for a GPU (x is on CUDA, or ``assume_gpu`` is active)."""
    return x.is_cuda or _assumed_sms is not None


@functools.cache
def _cuda_sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def sm_count(x: torch.Tensor) -> int:
    """The SM count of x's GPU (or the one ``assume_gpu`` names)."""
    return _cuda_sm_count(x.device) if x.is_cuda else (_assumed_sms or 1)


def tile_config(x: torch.Tensor, gpu_configs: dict[str, Config], interpreter_config: Config) -> Config:
    """The op's GPU config for x's layout, or its interpreter config for CPU tensors."""
    return gpu_configs[layout(x)] if on_gpu(x) else interpreter_config


@triton.jit
def tile_positions(tile, P, W, NP, BLOCK_P: tl.constexpr):
    """-> image index n (int64), coords y, x and the mask q < NP of the BLOCK_P positions q of tile ``tile``."""
    q = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    r = q % P
    return (q // P).to(tl.int64), r // W, r % W, q < NP


@triton.jit
def position_tile(P, W, C, NP, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """-> row (program_id 0), image index n (int64) and coords y, x [BLOCK_P]; channels c [BLOCK_C]; c < C; q < NP."""
    row = tl.program_id(0)
    n, y, x, p_mask = tile_positions(row, P, W, NP, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return row, n, y, x, c, c < C, p_mask


@triton.jit
def masked_position_tile(P, W, C, NP, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """position_tile without the row, its two masks joined into one [BLOCK_C, BLOCK_P] mask."""
    _, n, y, x, c, c_mask, p_mask = position_tile(P, W, C, NP, BLOCK_C, BLOCK_P)
    return n, y, x, c, c_mask[:, None] & p_mask[None, :]
