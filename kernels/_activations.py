"""The activations the fused depthwise op ends with, as Triton functions: ACT is the index of the activation's
name in ``references.DWCONV_ACTIVATIONS`` (identity, relu, relu6, swish, hardswish)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def act_fwd(z, ACT: tl.constexpr):
    """act(z) for ACT = index in ACTIVATIONS."""
    if ACT == 1:
        out = tl.maximum(z, 0.0)
    elif ACT == 2:
        out = tl.minimum(tl.maximum(z, 0.0), 6.0)
    elif ACT == 3:
        out = z * tl.sigmoid(z)
    elif ACT == 4:
        out = z * tl.minimum(tl.maximum(z + 3.0, 0.0), 6.0) / 6.0
    else:
        out = z
    return out


@triton.jit
def act_grad(z, ACT: tl.constexpr):
    """act'(z), with PyTorch's choices at the kinks (relu: z > 0; relu6: 0 < z < 6; hardswish: -3 <= z <= 3)."""
    if ACT == 1:
        d = tl.where(z > 0.0, 1.0, 0.0)
    elif ACT == 2:
        d = tl.where((z > 0.0) & (z < 6.0), 1.0, 0.0)
    elif ACT == 3:
        s = tl.sigmoid(z)
        d = s * (1.0 + z * (1.0 - s))
    elif ACT == 4:
        d = tl.where(z < -3.0, 0.0, tl.where(z <= 3.0, z / 3.0 + 0.5, 1.0))
    else:
        d = tl.full(z.shape, 1.0, tl.float32)
    return d
