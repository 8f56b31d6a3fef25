"""Depthwise conv -> BatchNorm -> activation, with a fused Triton path (kernels/dwconv_bn_act.py).

Same parameters and buffers as ``ConvBNAct(c, c, k, groups=c)`` (``conv.weight``, ``bn.*``), so checkpoints
interchange between fused and reference modes.
"""

from __future__ import annotations

import torch

from .activations import activation_name
from .conv_bn_act import ConvBNAct
from .fused import use_fused


class DWConvBNAct(ConvBNAct):
    """Depthwise ``kernel_size`` conv (stride 1 or 2, "same" padding) + BN + activation."""

    def __init__(
        self, channels: int, kernel_size: int = 3, stride: int = 1, act: str | None = "relu", fused: bool = False
    ) -> None:
        super().__init__(channels, channels, kernel_size, stride, groups=channels, act=act)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused(self, x):
            return self._fused_forward(x)
        return super().forward(x)

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        from kernels.dwconv_bn_act import dwconv_bn_act

        bn = self.bn
        training = bn.training or bn.running_mean is None
        if training and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        return dwconv_bn_act(
            x,
            self.conv.weight,
            bn.weight,
            bn.bias,
            bn.running_mean,
            bn.running_var,
            training=training,
            momentum=bn.momentum,
            eps=bn.eps,
            stride=self.conv.stride[0],
            act=activation_name(self.act),
        )
