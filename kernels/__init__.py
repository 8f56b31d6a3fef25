"""Fused Triton ops as plain functions (never imports imgcls): each file holds the math, a plain PyTorch
``reference()``, the ``@triton.jit`` kernels, their launchers, the autograd formula and a ``torch.library`` custom op.

Import a module only where a kernel can run (CUDA, or the CPU with ``TRITON_INTERPRET=1`` set before import).
"""
