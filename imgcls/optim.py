"""Paddle's learning-rate strategies and its optimizer: momentum SGD with L2 decay, LR set per iteration.

Paddle evaluates the schedule at a global step counter that starts at 0 and grows by one per mini-batch, so the LR
changes every iteration (``cosine_decay`` changes only at epoch boundaries because it floors step / steps_per_epoch).
With ``s`` = step, ``E`` = the schedule's steps per epoch, ``lr0`` = --lr:

- piecewise_decay:          lr0 * 0.1 ** (number of step_epochs boundaries b with s >= b * E)
- cosine_decay:             lr0 * (cos(floor(s / E) * pi / num_epochs) + 1) / 2
- cosine_decay_warmup:      warmup lr0 * s / (W E) for the first W = warm_up_epochs (Paddle: 5), then
                            lr0 * (cos((s - W E) * pi / (num_epochs * E)) + 1) / 2   (Paddle's formula, as is)
- exponential_decay_warmup: warmup as above, then lr0 * decay_rate ** floor((s - W E) / (d E))
                            (Paddle: decay_rate 0.97 every d = 2.4 epochs after W = 5 warmup epochs)
- linear_decay:             lr0 * (1 - s / (num_epochs * E)), clamped at 0: decays over the whole run, which
                            Paddle meant.
- linear_decay_paddle:      lr0 * (1 - s / E), clamped at 0: what Paddle ran. Its optimizer handed
                            ``polynomial_decay`` one epoch's steps as the decay length, so its LR reached 0 after
                            the first epoch and training stood still from then on. Kept to reproduce Paddle exactly.

``E`` is Paddle's: ``ceil(train images / global batch)`` (``schedule_steps_per_epoch``), while an epoch runs
``floor(train images / global batch)`` steps, the last partial batch being dropped (Paddle's reader drops it too).
So the global step after e epochs is ``e * floor(...)`` and every boundary falls on the same iteration as in
Paddle's run, a little after the epoch boundary when the batch does not divide the images.

Paddle's ``L2Decay`` regularizer adds ``l2 * w`` to every parameter's gradient (BN scales and biases included) and
its Momentum does ``v = mu v + g; w -= lr v``: exactly ``torch.optim.SGD(momentum=mu, weight_decay=l2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from imgcls.config import ScheduleConfig

LR_STRATEGIES = (
    "piecewise_decay",
    "cosine_decay",
    "cosine_decay_warmup",
    "exponential_decay_warmup",
    "linear_decay",
    "linear_decay_paddle",
)
PADDLE_WARMUP_EPOCHS = 5.0  # Paddle hard-codes 5 warmup epochs in cosine_decay_with_warmup


def schedule_steps_per_epoch(train_images: int, global_batch: int) -> int:
    """The schedule's steps per epoch, as Paddle's optimizer counts them: ``ceil(train_images / global_batch)``."""
    return math.ceil(train_images / global_batch)


class LRSource(Protocol):
    """What a training step takes its learning rate from: ``LRSchedule``, or e.g. a recorded table of another run's
    per-step LRs (the Paddle parity tests replay Paddle's)."""

    def lr_at(self, step: int) -> float:
        """The learning rate of global step ``step`` (0-based, counted over the whole run)."""
        ...


@dataclass(frozen=True)
class LRSchedule:
    """A pure function of the global step: ``lr_at(step)``. Holds no state, so resuming needs only the step."""

    strategy: str
    base_lr: float
    steps_per_epoch: int
    num_epochs: int
    step_epochs: tuple[float, ...] = (30, 60, 90)
    warm_up_epochs: float = PADDLE_WARMUP_EPOCHS
    decay_epochs: float = 2.4
    decay_rate: float = 0.97

    def __post_init__(self) -> None:
        if self.strategy not in LR_STRATEGIES:
            raise ValueError(f"unknown lr_strategy {self.strategy!r}; choose from {', '.join(LR_STRATEGIES)}")
        if self.steps_per_epoch < 1 or self.num_epochs < 1:
            raise ValueError("steps_per_epoch and num_epochs must be >= 1")

    @classmethod
    def from_config(cls, config: ScheduleConfig, steps_per_epoch: int) -> LRSchedule:
        """The schedule a run config names, for ``steps_per_epoch`` global steps per epoch."""
        return cls(
            config.strategy,
            config.lr,
            steps_per_epoch,
            config.num_epochs,
            tuple(config.step_epochs),
            config.warm_up_epochs,
            config.decay_epochs,
            config.decay_rate,
        )

    def lr_at(self, step: int) -> float:
        """The learning rate of iteration ``step`` (0-based, counted over the whole run)."""
        return _STRATEGY_FUNCTIONS[self.strategy](self, step)

    def _piecewise_decay(self, step: int) -> float:
        passed = sum(1 for e in self.step_epochs if step >= e * self.steps_per_epoch)
        return self.base_lr * 0.1**passed

    def _cosine_decay(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        return self.base_lr * (math.cos(epoch * math.pi / self.num_epochs) + 1) / 2

    def _warmup(self, step: int, warm_epochs: float) -> float | None:
        """The warmup LR while step < warm_epochs * E, else None. For whole warm_epochs this is Paddle's test
        floor(step / E) < warm_epochs; unlike it, it stays right for fractional ones."""
        if step < warm_epochs * self.steps_per_epoch:
            return self.base_lr * step / (self.steps_per_epoch * warm_epochs)
        return None

    def _cosine_decay_warmup(self, step: int) -> float:
        warm = self._warmup(step, self.warm_up_epochs)
        if warm is not None:
            return warm
        total = self.num_epochs * self.steps_per_epoch
        return self.base_lr * (math.cos((step - self.warm_up_epochs * self.steps_per_epoch) * math.pi / total) + 1) / 2

    def _exponential_decay_warmup(self, step: int) -> float:
        warm = self._warmup(step, self.warm_up_epochs)
        if warm is not None:
            return warm
        after = step - self.warm_up_epochs * self.steps_per_epoch
        return self.base_lr * self.decay_rate ** math.floor(after / (self.decay_epochs * self.steps_per_epoch))

    def _linear_decay(self, step: int) -> float:
        total = self.num_epochs * self.steps_per_epoch
        return self.base_lr * max(0.0, 1.0 - step / total)

    def _linear_decay_paddle(self, step: int) -> float:
        return self.base_lr * max(0.0, 1.0 - step / self.steps_per_epoch)


# The strategy name -> its formula (an explicit table, not a lookup of method names by string).
_STRATEGY_FUNCTIONS = {
    "piecewise_decay": LRSchedule._piecewise_decay,
    "cosine_decay": LRSchedule._cosine_decay,
    "cosine_decay_warmup": LRSchedule._cosine_decay_warmup,
    "exponential_decay_warmup": LRSchedule._exponential_decay_warmup,
    "linear_decay": LRSchedule._linear_decay,
    "linear_decay_paddle": LRSchedule._linear_decay_paddle,
}
assert tuple(_STRATEGY_FUNCTIONS) == LR_STRATEGIES


def build_optimizer(model: nn.Module, lr: float, momentum: float, l2_decay: float) -> torch.optim.SGD:
    """Momentum SGD with L2 decay on every parameter, as Paddle's Momentum + L2Decay regularizer."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=l2_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the LR of every param group (called before each iteration)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
