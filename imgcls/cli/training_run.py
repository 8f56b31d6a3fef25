"""One training run's epochs: the ``Trainer`` that ``imgcls.train`` drives, and where its weights start (``resume``
from ``--checkpoint``, ``prepare_model`` with ``--pretrained_model``).

What a failure leaves: a checkpoint is published before its metrics row, so no row describes an epoch whose
checkpoint could not be written; a full or read-only disk, a NaN loss, an op without a deterministic kernel and a
val set that cannot be read are one-line errors (exit status 2) that name the checkpoint to resume from; Ctrl-C
says the same and exits with status 130; SIGTERM stops at the next step boundary with a step checkpoint and exit
status 143 (``imgcls.cli.preemption``, ``imgcls.cli.mid_epoch``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NoReturn

import torch

from imgcls import checkpoint as ckpt
from imgcls import distributed as dist
from imgcls import engine
from imgcls.cli.data import train_loaders
from imgcls.cli.flags import fail, interrupted, os_error_text, warn
from imgcls.cli.layering import resume_changes
from imgcls.cli.mid_epoch import MidEpoch, TrainingParts
from imgcls.cli.preemption import StopRequest, preempted
from imgcls.config import RunConfig
from imgcls.data import DatasetSpec
from imgcls.data.loader import NoReadableImageError
from imgcls.data.read_report import printable
from imgcls.metrics import MetricsLog
from imgcls.optim import LRSchedule, build_optimizer, schedule_steps_per_epoch
from imgcls.report.curves import plot_run
from imgcls.step_checkpoints import prune_steps, resume_mismatch


def resume(
    config: RunConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    world_size: int,
) -> tuple[int, int, dict | None]:
    """Load ``--checkpoint`` (an epoch checkpoint at any world size: weights are unwrapped, steps global; a step
    checkpoint at its own world size and batch) -> (first epoch, its first global step, the step checkpoint's
    position in it or None). This run's settings win over the checkpoint's; one note line lists those that differ."""
    train = config.train
    try:
        epoch, step, saved = ckpt.resume_training(
            train.checkpoint, model, optimizer, scaler, train.optimizer.momentum, train.optimizer.l2_decay
        )
    except (OSError, ValueError) as e:
        fail(f"cannot resume {config.model} from --checkpoint {train.checkpoint}: {e}")
    mid = saved.mid_epoch
    why = resume_mismatch(mid, world_size, config.batch_size) if mid else None
    if why:
        fail(f"cannot continue epoch {epoch + 1} from the step checkpoint {train.checkpoint}: {why}")
    changed = resume_changes(saved, config)
    if changed:
        dist.print0(f"note: resuming with {', '.join(changed)} (checkpoint -> now): the new values apply")
    where = f"in epoch {epoch + 1} at batch {mid['batch']}" if mid else f"epoch {epoch - 1} done, step {step}"
    dist.print0(f"resumed from {train.checkpoint} ({where})")
    return epoch, step, mid


def prepare_model(config: RunConfig, device: torch.device) -> torch.nn.Module:
    """The registered model, fine-tuned from ``--pretrained_model`` unless resuming, in the run's layout and device."""
    from imgcls.models import create_model

    model = create_model(config.model, num_classes=config.num_classes, fused=config.fused)
    if config.pretrained_model and not config.train.checkpoint:
        try:
            ckpt.load_pretrained(model, config.pretrained_model, config.model, log=dist.print0)
        except ValueError as e:
            fail(str(e))
    if config.precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)


class Trainer:
    """What a training run holds (model, loaders, optimizer, schedule, log) and its epoch loop, whose failures
    become one-line errors that say what is kept: a checkpoint is published before its metrics row, and an
    interrupt names the checkpoint to resume from."""

    def __init__(
        self, config: RunConfig, dataset: DatasetSpec, info: dist.DistInfo, precision: engine.Precision, run_dir: Path
    ):
        device, train = info.device, config.train
        self.config, self.dataset, self.info, self.precision, self.run_dir = config, dataset, info, precision, run_dir
        self.model = prepare_model(config, device)
        self.train_loader, self.val_loader = train_loaders(config, dataset, info.rank, info.world_size, device)
        # Paddle's schedule counts ceil(images / global batch) steps per epoch while an epoch runs floor(...) of them
        # (imgcls.optim): its LR boundaries fall on the same iterations here. Every rank runs the same global steps.
        steps_per_epoch = schedule_steps_per_epoch(dataset.num_train, config.batch_size)
        self.schedule = LRSchedule.from_config(train.schedule, steps_per_epoch)
        self.optimizer = build_optimizer(
            self.model, train.schedule.lr, train.optimizer.momentum, train.optimizer.l2_decay
        )
        self.scaler = engine.make_scaler(precision, device)
        self.start_epoch, self.step, resumed = (0, 0, None)
        if train.checkpoint:
            self.start_epoch, self.step, resumed = resume(
                config, self.model, self.optimizer, self.scaler, info.world_size
            )
        parts = TrainingParts(
            config, self.model, self.optimizer, self.scaler, self.train_loader, dataset.label_names, run_dir, info
        )
        self.stop = StopRequest()
        self.mid = MidEpoch(parts, resumed, self.stop)  # holds the newest checkpoint saved (the resume hint's)
        self.mid.last_saved = Path(train.checkpoint) if train.checkpoint else None

    def run(self) -> dict:
        """Train the epochs left; the last epoch's metrics row ({} if none ran)."""
        train, num_epochs = self.config.train, self.config.train.schedule.num_epochs
        if self.start_epoch >= num_epochs:
            dist.print0(
                f"nothing to train: {train.checkpoint} has done {self.start_epoch} epochs and --num_epochs is "
                f"{num_epochs}; pass a larger --num_epochs to train further"
            )
            return {}
        train_model = dist.prepare_ddp(self.model, self.info, train.sync_bn)
        log = None
        if self.info.is_main:
            log = MetricsLog(self.run_dir, tensorboard=train.tensorboard, keep_before_epoch=self.start_epoch)
        row, epoch = {}, self.start_epoch
        try:
            with self.stop.watch():
                for epoch in range(self.start_epoch, num_epochs):
                    row, val_images = self.epoch(train_model, epoch)
                    if log is not None:
                        self.publish(epoch, row, log)
                    dist.barrier()  # no rank starts the next epoch (or exits) before the checkpoint is on disk
                    if val_images == 0:
                        self.fail_val(epoch)
                    if epoch + 1 < num_epochs and self.stop.agreed():
                        preempted(f"after epoch {epoch + 1}/{num_epochs}", self.mid.last_saved)
            if log is not None:
                log.close()
                self.plot(log.csv_path)
        except KeyboardInterrupt:
            self.interrupted(epoch)
        return row

    def epoch(self, train_model: torch.nn.Module, epoch: int) -> tuple[dict, int]:
        """Train and validate one epoch; -> (its metrics row, how many val images were read)."""
        train, device, num_epochs = self.config.train, self.info.device, self.config.train.schedule.num_epochs
        tally = self.mid.enter(epoch)
        desc = f"epoch {epoch + 1}/{num_epochs}"
        try:
            stats = engine.train_one_epoch(
                train_model,
                self.train_loader,
                self.optimizer,
                self.schedule,
                epoch,
                device=device,
                start_step=self.step,
                loss_cfg=train.loss,
                random_seed=train.random_seed,
                desc=desc,
                precision=self.precision,
                scaler=self.scaler,
                tally=tally,
                after_step=partial(self.mid.after_step, epoch, self.step),
            )
            val = engine.evaluate(self.model, self.val_loader, device, desc="  val", precision=self.precision)
        except (engine.EmptyEpochError, NoReadableImageError) as e:
            fail(f"{e} ({skipped_summary(self.train_loader.skipped)})")
        except engine.NonFiniteLossError as e:
            fail(f"{e}{self.resume_hint()}")
        except RuntimeError as e:
            op = engine.nondeterministic_op(e)
            if op is None:
                raise
            fail(
                f"{op} has no deterministic implementation on {device.type} (--deterministic is on); "
                "pass --deterministic=False to run it nondeterministically"
            )
        self.step += len(self.train_loader)
        row = engine.epoch_row(epoch, stats, val)
        dist.print0(f"{desc}: {engine.summary_text(row)}", flush=True)
        warned = dist.gather_lists(self.train_loader.warned + self.val_loader.warned)
        engine.report_skipped(dist.gather_lists(self.train_loader.skipped + self.val_loader.skipped), warned)
        return row, val.images

    def publish(self, epoch: int, row: dict, log: MetricsLog) -> None:
        """Rank 0: the epoch's checkpoint, then (once it is published) its metrics row; a full or read-only disk is
        a one-line error that says what is kept."""
        target = self.run_dir / str(epoch)
        state = ckpt.training_state(
            self.config, self.optimizer, epoch, self.step, self.dataset.label_names, self.scaler
        )
        try:
            ckpt.save_checkpoint(target, self.model, state)
        except OSError as e:
            fail(f"cannot save checkpoint {target}: {os_error_text(e)} (nothing of it was kept){self.resume_hint()}")
        self.mid.last_saved = target
        prune_steps(self.run_dir, through_epoch=epoch)
        print(f"saved {target}", flush=True)
        try:
            log.append(row)
        except OSError as e:
            fail(f"cannot write {log.csv_path}: {os_error_text(e)} (checkpoint {target} is saved)")

    def fail_val(self, epoch: int) -> NoReturn:
        """Every val image failed to load: a validation that measured nothing is an error, after the checkpoint."""
        bad = self.val_loader.skipped
        fail(
            f"epoch {epoch + 1}: none of the {self.dataset.num_val} val images could be read "
            f"({skipped_summary(bad)}); val accuracy is undefined{self.resume_hint()}"
        )

    def resume_hint(self) -> str:
        """'; resume with --checkpoint X' for the newest checkpoint this run can continue from."""
        if self.mid.last_saved is None:
            return "; no checkpoint was saved"
        return f"; resume with --checkpoint {self.mid.last_saved}"

    def interrupted(self, epoch: int) -> NoReturn:
        """Ctrl-C: one line naming the checkpoint to resume from, exit status 130."""
        interrupted(f" in epoch {epoch + 1}/{self.config.train.schedule.num_epochs}{self.resume_hint()}")

    def plot(self, csv_path: Path) -> None:
        """curves.png from metrics.csv; a failure to draw it is a warning (the run itself is saved)."""
        if not csv_path.exists():
            return
        try:
            print(plot_run(csv_path, self.run_dir / "curves.png", f"{self.config.model}: {self.run_dir}"))
        except (OSError, ValueError) as e:
            warn(f"no curves.png: {e}")


def skipped_summary(bad: list[tuple[str, str]]) -> str:
    """'N skipped; e.g. path: reason' for a loader's skipped images."""
    return f"{len(bad)} skipped" + (f"; e.g. {printable(bad[0][0])}: {printable(bad[0][1])}" if bad else "")
