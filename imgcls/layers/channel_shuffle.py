"""Channel shuffle (ShuffleNet), optionally with the concat of the two branches that precedes it in ShuffleNetV2."""

from __future__ import annotations

import torch
from torch import nn

from .fused import use_fused


def channel_shuffle_reference(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g*c, H, W] -> view [N, g, c, H, W] -> swap g and c -> [N, c*g, H, W] (Paddle's channel_shuffle)."""
    n, ch, h, w = x.shape
    return x.view(n, groups, ch // groups, h, w).transpose(1, 2).reshape(n, ch, h, w)


class ChannelShuffle(nn.Module):
    """``forward(x)`` shuffles ``x``; ``forward(a, b)`` shuffles ``cat([a, b], 1)`` (one kernel when fused)."""

    def __init__(self, groups: int = 2, fused: bool = False) -> None:
        super().__init__()
        self.groups = groups
        self.fused = fused

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if use_fused(self, xs[0]):
            from kernels.channel_shuffle import channel_shuffle, concat_shuffle

            if len(xs) == 2 and self.groups == 2:
                return concat_shuffle(xs[0], xs[1])
            return channel_shuffle(torch.cat(xs, 1) if len(xs) > 1 else xs[0], self.groups)
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        return channel_shuffle_reference(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
