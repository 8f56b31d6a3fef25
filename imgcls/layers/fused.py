"""The fused switch: decides, per call, whether a block may run its Triton kernel.

Triton kernels run on a CUDA GPU, or on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``, slow: tests
only). Anywhere else a fused block runs its reference PyTorch path, after one warning line.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import torch
from torch import nn

_warned = False


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def fused_supported(x: torch.Tensor) -> bool:
    """True when a Triton kernel can run on ``x``'s device (CUDA, or CPU under the interpreter)."""
    if not triton_installed():
        return False
    if x.is_cuda:
        return True
    return x.device.type == "cpu" and interpreter_enabled()


def warn_fallback(x: torch.Tensor) -> None:
    """One ``imgcls: warning: ...`` line on stderr per process when a fused block has to take its reference path
    (a plain print: ``warnings.warn`` would add a second line, the caller's source)."""
    global _warned
    if _warned:
        return
    _warned = True
    if not triton_installed():
        why = "Triton is not installed (pip install triton==3.6.0)"
    else:
        why = f"tensors are on {x.device.type} and there is no CUDA GPU (set TRITON_INTERPRET=1 to test kernels on CPU)"
    print(f"imgcls: warning: fused kernels requested but {why}; running the reference PyTorch path", file=sys.stderr)


def use_fused(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` (which has a ``fused`` flag) should run its kernel on ``x`` now."""
    if not getattr(module, "fused", False):
        return False
    if fused_supported(x):
        return True
    warn_fallback(x)
    return False


def set_fused(model: nn.Module, flag: bool) -> nn.Module:
    """Flip every fused-capable block of a built model; parameters and buffers are untouched."""
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = bool(flag)
    return model
