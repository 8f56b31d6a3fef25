"""Depthwise conv -> BatchNorm -> activation, with a fused Triton path (kernels/dwconv_bn_act.py).

Same parameters and buffers as ``ConvBNAct(c, c, k, groups=c)`` (``conv.weight``, ``bn.*``), so checkpoints
interchange between fused and reference modes.
"""

from __future__ import annotations

import torch

from imgcls.kernels.references import dwconv_unsupported

from .activations import activation_name
from .batch_norm import BatchNorm2d
from .conv_bn_act import ConvBNAct
from .fused import FusableBlock, use_fused


class DWConvBNAct(FusableBlock, ConvBNAct):
    """Depthwise ``kernel_size`` conv ("same" padding) + BN + activation.

    Switched to its kernel (``set_fused``) where the kernel supports the block: 3x3/5x5, stride 1/2, its activations,
    the zoo's ``BatchNorm2d`` (Paddle's moving statistics) with a float momentum; any other block keeps its reference
    path, as ``kernel_unsupported`` (None when supported) says."""

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, act: str | None = "relu") -> None:
        super().__init__(channels, channels, kernel_size, stride, groups=channels, act=act)

    @property
    def kernel_unsupported(self) -> str | None:
        """Read per call: the BN can change after construction (its momentum is public; DDP swaps in a synced BN)."""
        # The kernel is the zoo's BatchNorm2d: this process's batch statistics, Paddle's moving averages. A synchronized
        # BN needs every rank's statistics; torch's own BatchNorm2d keeps the unbiased variance.
        if type(self.bn) is not BatchNorm2d:
            name = f"{type(self.bn).__module__}.{type(self.bn).__name__}"
            return f"fused dwconv needs the zoo's BatchNorm2d (this process's batch statistics); bn is a {name}"
        k, stride = self.conv.kernel_size[0], self.conv.stride[0]
        return dwconv_unsupported(k, stride, activation_name(self.act), self.bn.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused(self, x):
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
