"""The plain PyTorch reference of every fused op, and what the dwconv kernel supports; no Triton here.

Each kernel module re-exports its op's function as ``reference`` (the test oracle and benchmark baseline). They
live in this one Triton-free file because ``imgcls.layers`` runs them as its CPU path on every machine: importing a
kernel module needs Triton, and ``triton.jit`` fixes the interpreter-or-GPU choice when a kernel is defined, so a
kernel module is imported only where a kernel can run.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

DWCONV_ACTIVATIONS = ("identity", "relu", "relu6", "swish", "hardswish")
_ACT_FNS = {"identity": lambda t: t, "relu": F.relu, "relu6": F.relu6, "swish": F.silu, "hardswish": F.hardswish}


def dwconv_unsupported(kernel_size: int, stride: int, act: str, momentum: float | None) -> str | None:
    """Why the fused dwconv kernel cannot run this configuration, or None when it can."""
    if kernel_size not in (3, 5) or stride not in (1, 2):
        return f"fused dwconv supports 3x3/5x5 kernels, stride 1/2; got k={kernel_size}, s={stride}"
    if act not in DWCONV_ACTIVATIONS:
        return f"fused dwconv activation must be one of {DWCONV_ACTIVATIONS}; got {act!r}"
    if momentum is None:
        return "fused dwconv needs a float BN momentum (cumulative averaging is not supported)"
    return None


def dwconv_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    stride: int = 1,
    act: str = "relu",
) -> torch.Tensor:
    """Depthwise conv2d ("same" padding) -> batch_norm (updates the running stats in training) -> activation."""
    k = weight.shape[-1]
    y = F.conv2d(x, weight, None, stride, (k - 1) // 2, groups=x.shape[1])
    y = F.batch_norm(y, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    return _ACT_FNS[act](y)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g*k, H, W] -> view [N, g, k, H, W] -> swap g and k -> [N, k*g, H, W] (Paddle's channel_shuffle)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def concat_shuffle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ShuffleNetV2 unit tail: concat the two branches, then a 2-group shuffle."""
    return channel_shuffle(torch.cat([a, b], 1), 2)


def squeeze_excite(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """SE (+ optional residual add and ReLU); weights in nn.Linear layout [out, in]."""
    s = x.mean(dim=(2, 3))
    g = torch.sigmoid(F.linear(torch.relu(F.linear(s, w1, b1)), w2, b2))
    out = x * g[:, :, None, None]
    return out if residual is None else torch.relu(out + residual)
