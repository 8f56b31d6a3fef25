"""Foreign checkpoints -> our state_dict (Paddle 1.x)."""

from .paddle import (
    ConversionReport,
    PaddleCheckpoint,
    checkpoint_class_count,
    convert_complete,
    convert_paddle,
    convert_paddle_checkpoint,
    load_paddle_checkpoint,
    looks_like_paddle_checkpoint,
    paddle_to_state_dict,
    read_lod_tensor,
    read_paddle_checkpoint,
)

__all__ = [
    "ConversionReport",
    "PaddleCheckpoint",
    "checkpoint_class_count",
    "convert_complete",
    "convert_paddle",
    "convert_paddle_checkpoint",
    "load_paddle_checkpoint",
    "looks_like_paddle_checkpoint",
    "paddle_to_state_dict",
    "read_lod_tensor",
    "read_paddle_checkpoint",
]
