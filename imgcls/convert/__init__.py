"""Foreign checkpoints -> our state_dict (Paddle 1.x)."""

from .paddle import (
    ConversionReport,
    checkpoint_class_count,
    convert_complete,
    convert_paddle,
    convert_paddle_checkpoint,
    expected_tensors,
    looks_like_paddle_checkpoint,
    paddle_to_state_dict,
    read_paddle_checkpoint,
)
from .paddle_files import PaddleCheckpoint, load_paddle_checkpoint, read_lod_tensor

__all__ = [
    "ConversionReport",
    "PaddleCheckpoint",
    "checkpoint_class_count",
    "convert_complete",
    "convert_paddle",
    "convert_paddle_checkpoint",
    "expected_tensors",
    "load_paddle_checkpoint",
    "looks_like_paddle_checkpoint",
    "paddle_to_state_dict",
    "read_lod_tensor",
    "read_paddle_checkpoint",
]
