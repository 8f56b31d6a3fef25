"""Foreign checkpoints -> our state_dict (Paddle 1.x)."""

from .paddle import (
    ConversionReport,
    convert_paddle,
    looks_like_paddle_checkpoint,
    paddle_to_state_dict,
    read_lod_tensor,
    read_paddle_checkpoint,
)

__all__ = [
    "ConversionReport",
    "convert_paddle",
    "looks_like_paddle_checkpoint",
    "paddle_to_state_dict",
    "read_lod_tensor",
    "read_paddle_checkpoint",
]
