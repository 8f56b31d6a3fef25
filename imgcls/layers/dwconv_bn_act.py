"""Depthwise conv -> BatchNorm -> activation, with a fused Triton path (kernels/dwconv_bn_act.py).

Same parameters and buffers as ``ConvBNAct(c, c, k, groups=c)`` (``conv.weight``, ``bn.*``), so checkpoints
interchange between fused and reference modes.
"""

from __future__ import annotations

import torch

from imgcls.kernels.references import dwconv_unsupported

from .activations import activation_name
from .conv_bn_act import ConvBNAct
from .fused import use_fused


class DWConvBNAct(ConvBNAct):
    """Depthwise ``kernel_size`` conv ("same" padding) + BN + activation.

    With ``fused=True`` the kernel runs where it supports the block (3x3/5x5, stride 1/2, its activations, a float
    BN momentum); any other block keeps its reference path, as ``kernel_unsupported`` (None when supported) says."""

    def __init__(
        self, channels: int, kernel_size: int = 3, stride: int = 1, act: str | None = "relu", fused: bool = False
    ) -> None:
        super().__init__(channels, channels, kernel_size, stride, groups=channels, act=act)
        self.fused = fused
        # Decided once: the geometry and the activation are fixed here (momentum is checked per call, it is public).
        self.kernel_unsupported = dwconv_unsupported(kernel_size, stride, activation_name(self.act), self.bn.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # use_fused first: a BN-folded copy (export.fold_bn, fused off) has an Identity where bn was.
        if use_fused(self, x) and self.kernel_unsupported is None and self.bn.momentum is not None:
            return self._fused_forward(x)
        return self._reference_forward(x)

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
        from imgcls.kernels.dwconv_bn_act import dwconv_bn_act

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
