"""Conv -> BatchNorm -> activation, the unit most zoo models are made of."""

from __future__ import annotations

import torch
from torch import nn

from .activations import make_activation
from .batch_norm import BatchNorm2d


class ConvBNAct(nn.Module):
    """``conv`` (no bias), ``bn``, ``act``. Padding defaults to ``(kernel - 1) // 2`` ("same" for odd kernels)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        act: str | None = "relu",
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False
        )
        self.bn = BatchNorm2d(out_channels)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
