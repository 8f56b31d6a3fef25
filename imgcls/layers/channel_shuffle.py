"""Channel shuffle (ShuffleNet), optionally with the concat of the two branches that precedes it in ShuffleNetV2."""

from __future__ import annotations

import torch

from imgcls.kernels.references import channel_shuffle as channel_shuffle_reference

from .fused import FusableBlock, use_fused


class ChannelShuffle(FusableBlock):
    """``forward(x)`` shuffles ``x``; ``forward(a, b)`` shuffles ``cat([a, b], 1)`` (one kernel when fused)."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if use_fused(self, xs[0]):
            from imgcls.kernels.channel_shuffle import channel_shuffle, concat_shuffle

            if len(xs) == 2 and self.groups == 2:
                return concat_shuffle(xs[0], xs[1])
            return channel_shuffle(torch.cat(xs, 1) if len(xs) > 1 else xs[0], self.groups)
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        return channel_shuffle_reference(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
