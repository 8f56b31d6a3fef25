"""Helpers shared by tests/ and bench/ that need a model whose weights are away from their defaults."""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn(model: nn.Module, gen: torch.Generator | int = 0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters (a fresh BN folds to ~identity, so a
    lost or misplaced BN tensor would not change the output). ``gen`` is a generator or a seed; returns ``model``."""
    if isinstance(gen, int):
        gen = torch.Generator().manual_seed(gen)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            if m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model
