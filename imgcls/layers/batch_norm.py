"""BatchNorm with Paddle 1.x's moving statistics: the one BN the zoo builds.

In training, Paddle's ``batch_norm`` normalizes with the batch mean and the biased batch variance and moves its
moving mean / variance toward exactly those (``moving = 0.9 moving + 0.1 batch``). torch's ``BatchNorm2d`` moves
``running_var`` toward the unbiased variance instead (``* M / (M - 1)``, M = values per channel), which only eval
sees: a 3x3 map at batch 8 is M = 72, running variances 1.4 % larger. Same parameters, buffers and state_dict keys
as ``nn.BatchNorm2d``, so checkpoints load either way.
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.kernels.references import batch_norm

# Paddle 1.x batch_norm: epsilon 1e-5, moving average momentum 0.9 (= PyTorch momentum 0.1).
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training step updates ``running_var`` with the biased batch variance (Paddle's)."""

    def __init__(
        self,
        num_features: int,
        eps: float = BN_EPS,
        momentum: float | None = BN_MOMENTUM,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum = track_batch(self)
        if momentum is None:
            return super().forward(x)
        self._check_input_dim(x)
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, momentum, self.eps)


def track_batch(bn: nn.modules.batchnorm._BatchNorm) -> float | None:
    """For a BN in training that tracks running statistics: count one more batch and return its moving-average
    factor (``momentum``, or 1 / batches when it is None: a cumulative average, as torch). None otherwise: eval, or
    nothing to track, where torch's own forward applies unchanged."""
    if not (bn.training and bn.track_running_stats and bn.running_mean is not None):
        return None
    bn.num_batches_tracked.add_(1)
    return bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
