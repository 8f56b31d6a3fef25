"""Squeeze-and-excitation (SE-ResNeXt, SENet154_vd): global avg pool -> FC -> ReLU -> FC -> sigmoid -> scale.

The FCs are ``nn.Linear`` with bias, as Paddle's ``fc`` layers (stored [in, out] by Paddle; the converter
transposes). ``forward(x, residual)`` also does the block's tail, ``relu(x * s + residual)`` (in the kernel when
fused).
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.kernels.references import squeeze_excite as squeeze_excite_reference

from .fused import FusableBlock, use_fused


class SqueezeExcite(FusableBlock):
    """SE block with ``squeeze`` (C -> C/r) and ``excite`` (C/r -> C) linear layers."""

    def __init__(self, channels: int, reduced_channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Linear(channels, reduced_channels)
        self.excite = nn.Linear(reduced_channels, channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        args = (x, self.squeeze.weight, self.squeeze.bias, self.excite.weight, self.excite.bias, residual)
        if use_fused(self, x):
            from imgcls.kernels.squeeze_excite import squeeze_excite

            return squeeze_excite(*args)
        return squeeze_excite_reference(*args)
