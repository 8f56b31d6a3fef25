"""The loops the CLIs share: ``train_one_epoch`` and ``evaluate``.

The LR is set before every iteration from the global step (as Paddle's schedules); mixup draws come from a seed of
(random_seed, epoch, iteration), so an epoch's arithmetic depends only on the weights, the optimizer state and the
step it starts from: what makes a resumed run equal a straight one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from imgcls.data.transforms import sample_seed
from imgcls.losses import mixup_batch, training_loss
from imgcls.metrics import ProgressBar, topk_correct
from imgcls.optim import LRSchedule, set_lr

MIXUP_SALT = 0x6D69787570  # "mixup": keeps mixup draws apart from the per-sample augmentation stream


@dataclass
class EpochStats:
    """Averages over one pass."""

    loss: float
    top1: float  # percent
    top5: float  # percent
    images: int
    seconds: float
    lr: float = math.nan  # last LR used (training only)

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class LossConfig:
    """How the training loss is formed: label smoothing epsilon (0 = off), mixup alpha (0 = off)."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0


def to_device(images, labels, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(images).to(device, non_blocking=True)
    labels = torch.as_tensor(labels).to(device, dtype=torch.long, non_blocking=True)
    return images, labels


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    epoch: int,
    *,
    device: torch.device,
    start_step: int,
    loss_cfg: LossConfig = LossConfig(),
    random_seed: int = 0,
    desc: str | None = None,
) -> EpochStats:
    """One pass over ``loader`` with momentum SGD; ``start_step`` is the global step of its first iteration."""
    model.train()
    aux_weights = tuple(getattr(model, "aux_loss_weights", ()))
    bar = ProgressBar(len(loader), desc or f"epoch {epoch}")
    total_loss, correct, seen, lr = 0.0, 0, 0, math.nan
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        images, labels = to_device(images, labels, device)
        lr = schedule.lr_at(start_step + i)
        set_lr(optimizer, lr)
        mix = None
        if loss_cfg.mixup_alpha > 0:
            mix = mixup_batch(images, labels, loss_cfg.mixup_alpha, sample_seed(random_seed ^ MIXUP_SALT, epoch, i))
            images = mix.images
        loss, logits = training_loss(
            model(images), labels, epsilon=loss_cfg.label_smoothing, mix=mix, aux_weights=aux_weights
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} iteration {i}; try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Train accuracy against the dominant label of a mixed pair (the plain label otherwise).
        target = labels if mix is None or mix.lam >= 0.5 else mix.labels_b
        n = labels.shape[0]
        total_loss += loss.item() * n
        correct += topk_correct(logits.detach(), target, (1,))[0]
        seen += n
        bar.update(i + 1, seen, loss=total_loss / seen, lr=lr)
    bar.close()
    seconds = time.perf_counter() - start
    if seen == 0:
        raise RuntimeError(f"epoch {epoch}: the train loader gave no batches (all images skipped, or too few images)")
    return EpochStats(total_loss / seen, 100.0 * correct / seen, math.nan, seen, seconds, lr)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, device: torch.device, desc: str = "eval", progress: bool = True
) -> EpochStats:
    """Top-1 / top-5 (percent) and mean cross entropy of ``model`` over ``loader``."""
    model.eval()
    bar = ProgressBar(len(loader), desc) if progress else None
    total_loss, top1, top5, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        images, labels = to_device(images, labels, device)
        logits = model(images)
        n = labels.shape[0]
        total_loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
        c1, c5 = topk_correct(logits, labels, (1, 5))
        top1, top5, seen = top1 + c1, top5 + c5, seen + n
        if bar is not None:
            bar.update(i + 1, seen, top1=100.0 * top1 / seen)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    if seen == 0:
        return EpochStats(math.nan, math.nan, math.nan, 0, seconds)
    return EpochStats(total_loss / seen, 100.0 * top1 / seen, 100.0 * top5 / seen, seen, seconds)


def setup_determinism(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels (exact resume and repeatable runs); on CUDA cuBLAS needs its workspace setting."""
    if not enabled:
        torch.backends.cudnn.benchmark = device.type == "cuda"
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    # warn_only: an op without a deterministic kernel warns instead of stopping the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
