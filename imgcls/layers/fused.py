"""The fused switch: ``set_fused(model, flag)`` is the one place that turns blocks' Triton kernels on or off.

Blocks with a kernel path subclass ``FusableBlock``: their constructors know nothing of fusing, ``fused`` starts
False and only the switch sets it, and only where the block's ``kernel_unsupported`` is None (so a block the kernel
cannot serve, e.g. one whose BN was made synchronized, stays on its reference path; flip the switch again after such a
change). Triton kernels run on a CUDA GPU, or on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``, slow:
tests only). Anywhere else a fused block runs its reference PyTorch path, after one warning line.
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


class FusableBlock(nn.Module):
    """A block with a Triton kernel path beside its reference path; ``fused`` is set by ``set_fused`` alone."""

    fused: bool = False

    @property
    def kernel_unsupported(self) -> str | None:
        """Why the kernel cannot serve this block as it stands, or None when it can."""
        return None


def use_fused(module: FusableBlock, x: torch.Tensor) -> bool:
    """Whether ``module`` should run its kernel on ``x`` now (its BN may have changed since the switch set it)."""
    if not module.fused or module.kernel_unsupported is not None:
        return False
    if fused_supported(x):
        return True
    warn_fallback(x)
    return False


def set_fused(model: nn.Module, flag: bool) -> nn.Module:
    """Route every ``FusableBlock`` of ``model`` through its kernel (``flag`` True) where ``kernel_unsupported`` is
    None, through its reference path otherwise; parameters and buffers are untouched. Returns ``model``."""
    for m in model.modules():
        if isinstance(m, FusableBlock):
            m.fused = bool(flag) and m.kernel_unsupported is None
    return model


def count_fused(model: nn.Module) -> int:
    """How many blocks of ``model`` the switch has routed through their kernels."""
    return sum(1 for m in model.modules() if isinstance(m, FusableBlock) and m.fused)
