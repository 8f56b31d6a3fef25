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
    y = batch_norm(y, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    return _ACT_FNS[act](y)


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """``F.batch_norm`` with Paddle 1.x's moving averages: training moves ``running_var`` toward the BIASED batch
    variance (the one it normalizes with; torch takes the unbiased one), ``running_mean`` toward the batch mean:
    ``running <- (1 - momentum) running + momentum batch``. Eval, or no running stats: ``F.batch_norm`` as is."""
    if not training or running_mean is None or running_var is None:
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    # Momentum 1 leaves the batch mean and unbiased variance in fresh buffers: torch's native (cuDNN) kernel still
    # does the work, and the moving averages are formed here from the biased variance.
    batch_mean, batch_var = running_mean.new_zeros((2, *running_mean.shape), dtype=running_var.dtype)
    out = F.batch_norm(x, batch_mean, batch_var, weight, bias, True, 1.0, eps)
    count = x.numel() // x.shape[1]
    # (out of place: the backward reads the statistics buffers it was given)
    update_moving_stats(running_mean, running_var, batch_mean, batch_var * ((count - 1) / count), momentum)
    return out


@torch.no_grad()
def update_moving_stats(
    running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, momentum: float
) -> None:
    """``running <- (1 - momentum) running + momentum batch`` for the mean and the (biased) variance, in place."""
    running_mean.lerp_(mean.to(running_mean.dtype), momentum)
    running_var.lerp_(var.to(running_var.dtype), momentum)


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
