"""The training step and the loops the CLIs share: ``train_step``, ``train_one_epoch`` and ``evaluate``.

``imgcls.engine.train_step`` is the one training step of the library (the CLI's, the benchmarks' and the Paddle
parity tests'): the LR of the global step (as Paddle's schedules), mixup, the forward pass under a ``Precision``
(autocast dtype, channels_last input), the loss (label smoothing, auxiliary heads), backward and the optimizer step.
From the same start (weights, BN statistics, momentum buffers, step) and batches, it reproduces Paddle 1.8.5's
training program step for step (tests/test_train_parity.py):

    model = create_model(name, num_classes=K)                  # train mode; BN moves Paddle's statistics
    optimizer = build_optimizer(model, lr, momentum, l2_decay)  # Momentum + L2Decay; its momentum buffers are state
    schedule = LRSchedule.from_config(ScheduleConfig(...), schedule_steps_per_epoch(images, batch))
    for step, (images, labels) in enumerate(batches, start=first_step):
        result = train_step(model, images, labels, optimizer, schedule, step, loss_cfg=LossConfig(label_smoothing=0.1))

Both loops, in a distributed run, sum their counters over ranks before averaging, so every rank returns the global
metrics of the epoch. Mixup draws come from a seed of (random_seed, epoch, iteration) (``imgcls.randomness``), so an
epoch's arithmetic depends only on the weights, the optimizer state and the step it starts from: what makes a
resumed run equal a straight one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from imgcls.config import LossConfig, PrecisionConfig
from imgcls.data.read_report import printable, warned_summary
from imgcls.distributed import is_main, reduce_sums
from imgcls.losses import mixup_batch, training_loss
from imgcls.metrics import ProgressBar, topk_hits
from imgcls.optim import LRSource, set_lr
from imgcls.randomness import mixup_seed


class EmptyEpochError(RuntimeError):
    """A training epoch saw no image at all (every image failed to load): the CLI turns it into a one-line error."""


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


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
NO_BAD_STEP = 1 << 62


@dataclass(frozen=True)
class Precision:
    """How a step computes: autocast dtype (None = fp32) and whether inputs (hence activations) are channels_last."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def needs_scaler(self, device: torch.device) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return self.amp_dtype == torch.float16 and device.type == "cuda"


def make_precision(config: PrecisionConfig, device: torch.device) -> Precision:
    """``amp`` picks fp16 on CUDA and bf16 on CPU unless ``amp_dtype`` says; ValueError for fp16 on CPU."""
    if not config.amp:
        return Precision(None, config.channels_last)
    name = config.amp_dtype or ("fp16" if device.type == "cuda" else "bf16")
    if name == "fp16" and device.type != "cuda":
        raise ValueError("--amp_dtype fp16 needs a CUDA device; on CPU use --amp_dtype bf16")
    return Precision(AMP_DTYPES[name], config.channels_last)


def make_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA; None otherwise (fp32 and bf16 step without one)."""
    return torch.amp.GradScaler(device.type) if precision.needs_scaler(device) else None


def to_device(images, labels, device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(images).to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.as_tensor(labels).to(device, dtype=torch.long, non_blocking=True)
    return images, labels


def backward_and_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Zero the gradients, backward, step; with an fp16 ``scaler`` the loss is scaled and steps whose gradients
    overflowed are skipped (and the scale lowered)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@dataclass
class EpochTally:
    """The running counters of a training pass: (loss sum, top-1 hits) and the first non-finite iteration on the
    device, images seen, iterations run, the last LR, seconds spent. What a mid-epoch checkpoint keeps of the pass,
    so that a resumed epoch reports what the uninterrupted one would."""

    sums: torch.Tensor  # float64 [2]
    first_bad: torch.Tensor  # int64 scalar, NO_BAD_STEP while every loss is finite
    seen: int = 0
    iterations: int = 0
    lr: float = math.nan
    seconds: float = 0.0

    @classmethod
    def fresh(cls, device: torch.device) -> EpochTally:
        """The counters of a pass that has not started."""
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        return cls(sums, torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device))

    def to_plain(self) -> dict:
        """Plain values (a checkpoint loads them with ``weights_only=True``); float64 sums stay exact."""
        plain = dict(sums=self.sums.tolist(), first_bad=int(self.first_bad.item()))
        return plain | dict(seen=self.seen, iterations=self.iterations, lr=self.lr, seconds=self.seconds)

    @classmethod
    def from_plain(cls, plain: dict, device: torch.device) -> EpochTally:
        """The inverse of ``to_plain``, its tensors on ``device``."""
        sums = torch.tensor(plain["sums"], dtype=torch.float64, device=device)
        first_bad = torch.tensor(plain["first_bad"], dtype=torch.int64, device=device)
        return cls(sums, first_bad, plain["seen"], plain["iterations"], plain["lr"], plain["seconds"])


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message says at which step and what to try."""


def non_finite_loss_message(loss: float, epoch: int, iteration: int, step: int, lr: float, precision: Precision) -> str:
    """Where the loss first stopped being finite, and the likely cause: before any update the learning rate cannot
    be it (the forward itself overflows); later, a step too large for the weights, or autocast's range."""
    dtype = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(precision.amp_dtype)
    where = f"the training loss became {loss} at epoch {epoch + 1} iteration {iteration + 1} (global step {step}"
    where += f", lr {lr:.4g} there" + (f", {dtype} autocast)" if dtype else ")")
    if step == 0:
        amp_hint = "; try --amp=False" if dtype else ""
        return f"{where}, before any weight update, so not the lr: the forward pass overflows on this data{amp_hint}"
    if dtype == "fp16":
        return f"{where}: fp16 overflowed or the lr is too high; try --amp_dtype bf16 or --amp=False, then a lower --lr"
    return f"{where}: the updates diverged; try a lower --lr (or a longer warmup: --lr_strategy *_warmup)"


def finite_loss_sum(sums: torch.Tensor, first_bad: torch.Tensor, epoch: int, step_info: tuple) -> list[float]:
    """``sums`` (loss sum, ...) read back to the host; a NaN or infinite loss stops the run (NonFiniteLossError)
    at the iteration ``first_bad`` recorded, with advice. ``step_info``: (first global step, schedule, precision)."""
    values = sums.tolist()
    if not math.isfinite(values[0]):
        iteration = int(first_bad.item())
        start_step, schedule, precision = step_info
        step = start_step + iteration
        raise NonFiniteLossError(
            non_finite_loss_message(values[0], epoch, iteration, step, schedule.lr_at(step), precision)
        )
    return values


@dataclass
class StepResult:
    """What one training step leaves: its loss (detached), logits, the labels accuracy is taken against (the
    dominant label of a mixed pair), and the learning rate it used."""

    loss: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    lr: float


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: LRSource,
    step: int,
    *,
    loss_cfg: LossConfig = LossConfig(),
    precision: Precision = Precision(),
    scaler: torch.amp.GradScaler | None = None,
    mix_seed: int = 0,
) -> StepResult:
    """One step of the training recipe on a batch already on the model's device: set the LR of global ``step``,
    mix the batch (``loss_cfg.mixup_alpha`` > 0, drawn from ``mix_seed``), forward under ``precision``, the loss in
    fp32 (label smoothing, auxiliary heads), backward and the optimizer step (through ``scaler`` for fp16).

    The state a step reads and leaves: the model's weights and BN statistics (the caller sets train mode, as
    ``train_one_epoch`` does), the optimizer's momentum buffers (``optimizer.state``; ``build_optimizer`` makes
    it, zero at the start as Paddle's velocities), and the LR of ``step`` from ``schedule`` (an ``LRSchedule``, or
    any ``lr_at(step)``). The gradients stay in ``.grad`` until the next step (raw: the optimizer adds L2 decay)."""
    lr = schedule.lr_at(step)
    set_lr(optimizer, lr)
    mix = mixup_batch(images, labels, loss_cfg.mixup_alpha, mix_seed) if loss_cfg.mixup_alpha > 0 else None
    if mix is not None:
        images = mix.images
    with precision.autocast(images.device):
        output = model(images)
    # The loss (log-softmax) is taken in fp32 outside autocast.
    aux_weights = tuple(getattr(_inner(model), "aux_loss_weights", ()))
    loss, logits = training_loss(output, labels, epsilon=loss_cfg.label_smoothing, mix=mix, aux_weights=aux_weights)
    backward_and_step(loss, optimizer, scaler)
    target = labels if mix is None or mix.lam >= 0.5 else mix.labels_b
    return StepResult(loss.detach(), logits.detach(), target, lr)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    schedule: LRSource,
    epoch: int,
    *,
    device: torch.device,
    start_step: int,
    loss_cfg: LossConfig = LossConfig(),
    random_seed: int = 0,
    desc: str | None = None,
    precision: Precision = Precision(),
    scaler: torch.amp.GradScaler | None = None,
    tally: EpochTally | None = None,
    after_step: Callable[[EpochTally], None] | None = None,
) -> EpochStats:
    """One pass of ``train_step`` over ``loader``; ``start_step`` is the global step of the epoch's iteration 0.

    ``tally``: the counters of the iterations this epoch already ran (a resume from a mid-epoch checkpoint: the
    loader starts where they stopped); ``after_step`` sees the counters after each step (mid-epoch checkpoints).
    The returned loss and accuracy are over all ranks' images (the progress bar shows rank 0's own).
    """
    model.train()
    bar = ProgressBar(len(loader), desc or f"epoch {epoch}") if is_main() else None
    # (loss sum, top-1 hits) stay on the device: a step never waits for the GPU; they are read when shown. So does
    # the first iteration whose loss is not finite (NO_BAD_STEP while all are), for the message if one is not.
    tally = EpochTally.fresh(device) if tally is None else tally
    sums, first_bad, lr = tally.sums, tally.first_bad, tally.lr
    step_info = (start_step, schedule, precision)
    start = time.perf_counter() - tally.seconds
    for i, (images, labels) in enumerate(loader, start=tally.iterations):
        images, labels = to_device(images, labels, device, precision.channels_last)
        result = train_step(
            model,
            images,
            labels,
            optimizer,
            schedule,
            start_step + i,
            loss_cfg=loss_cfg,
            precision=precision,
            scaler=scaler,
            mix_seed=mixup_seed(random_seed, epoch, i),
        )
        lr, n = result.lr, labels.shape[0]
        hits = topk_hits(result.logits, result.target, (1,))[0]
        sums += torch.stack((result.loss.double() * n, hits.double()))
        first_bad = torch.where(torch.isfinite(result.loss), first_bad, first_bad.clamp(max=i))
        tally.seen += n
        if bar is not None and bar.due(i + 1):
            loss = finite_loss_sum(sums, first_bad, epoch, step_info)[0] / tally.seen
            bar.update(i + 1, tally.seen, loss=loss, lr=lr)
        if after_step is not None:
            tally.first_bad, tally.lr, tally.iterations = first_bad, lr, i + 1
            tally.seconds = time.perf_counter() - start
            after_step(tally)
    if bar is not None:
        bar.close()
    seconds, seen = time.perf_counter() - start, tally.seen
    total_loss, correct = finite_loss_sum(sums, first_bad, epoch, step_info) if seen else (0.0, 0.0)
    total_loss, correct, seen = reduce_sums([total_loss, correct, seen], device)
    seen = int(seen)
    if seen == 0:
        raise EmptyEpochError(f"epoch {epoch + 1}: every training image failed to load; nothing to train on")
    return EpochStats(total_loss / seen, 100.0 * correct / seen, math.nan, seen, seconds, lr)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    desc: str = "eval",
    progress: bool = True,
    precision: Precision = Precision(),
    sink: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> EpochStats:
    """Top-1 / top-5 (percent) and mean cross entropy of ``model`` over ``loader`` (summed over ranks, each
    evaluating its own share; pass the unwrapped model: eval needs no gradient sync).

    ``sink(logits, labels, images)``, when given, sees every batch's predictions (e.g. ``PredictionStats.update``
    of ``imgcls.report``, which builds per-class numbers from them); it is called right after the batch's forward."""
    model.eval()
    bar = ProgressBar(len(loader), desc) if progress and is_main() else None
    sums, seen = torch.zeros(3, dtype=torch.float64, device=device), 0  # loss sum, top-1, top-5 hits (on device)
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        images, labels = to_device(images, labels, device, precision.channels_last)
        with precision.autocast(device):
            logits = model(images)
        if sink is not None:
            sink(logits, labels, images)
        loss_sum = nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double()
        sums += torch.cat((loss_sum[None], topk_hits(logits, labels, (1, 5)).double()))
        seen += labels.shape[0]
        if bar is not None and bar.due(i + 1):
            bar.update(i + 1, seen, top1=100.0 * sums[1].item() / seen)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    total_loss, top1, top5, seen = reduce_sums([*sums.tolist(), seen], device)
    seen = int(seen)
    if seen == 0:
        return EpochStats(math.nan, math.nan, math.nan, 0, seconds)
    return EpochStats(total_loss / seen, 100.0 * top1 / seen, 100.0 * top5 / seen, seen, seconds)


def epoch_row(epoch: int, train: EpochStats, val: EpochStats) -> dict:
    """The metrics.csv row of one epoch (global numbers in a distributed run)."""
    return dict(
        epoch=epoch,
        train_loss=train.loss,
        train_top1=train.top1,
        val_top1=val.top1,
        val_top5=val.top5,
        lr=train.lr,
        images_per_sec=train.images_per_sec,
        epoch_time_s=train.seconds + val.seconds,
    )


def summary_text(row: dict) -> str:
    """The one-line epoch summary printed after the progress bar."""
    return (
        f"train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.2f}% | val top-1 {row['val_top1']:.2f}% "
        f"top-5 {row['val_top5']:.2f}% | lr {row['lr']:.5f} | {row['images_per_sec']:.1f} img/s | "
        f"{row['epoch_time_s']:.1f}s"
    )


def _inner(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (for its attributes)."""
    return getattr(model, "module", model)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool, device: torch.device) -> Iterator[None]:
    """Inside, deterministic kernels when ``enabled`` (exact resume and repeatable runs), else cuDNN's autotuned
    ones on CUDA; torch's previous settings come back on exit. On CUDA cuBLAS needs its workspace setting.

    Enforced: an op without a deterministic kernel raises (``nondeterministic_op`` names it) instead of running
    nondeterministically after a warning; the CLIs turn that into a one-line error that suggests
    ``--deterministic=False``."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not enabled and device.type == "cuda"
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def nondeterministic_op(error: BaseException) -> str | None:
    """The op named by PyTorch's error for an op without a deterministic kernel (under
    ``use_deterministic_algorithms(True)``), or None for any other error."""
    text = str(error)
    marker = " does not have a deterministic implementation"
    if not isinstance(error, RuntimeError) or marker not in text:
        return None
    return text.split(marker, 1)[0].strip().splitlines()[-1]


def report_skipped(skipped: list[tuple[str, str]], warned: list[tuple[str, str]] | None = None) -> None:
    """One line per unreadable image the loaders skipped this epoch (bad data never stops a run), one for the images
    decoded in spite of damage; rank 0 only."""
    if warned and is_main():
        print(warned_summary(warned))
    if skipped and is_main():
        print(f"skipped {len(skipped)} unreadable images this epoch:")
        for path, reason in skipped:
            print(f"  {printable(path)}: {printable(reason)}")
