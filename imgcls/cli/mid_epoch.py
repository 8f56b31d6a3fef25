"""The trainer's side of mid-epoch checkpoints (``imgcls.step_checkpoints``): where an epoch starts (afresh, or where
a step checkpoint stopped), and what happens after each step (a step checkpoint every ``--save_steps``; on SIGTERM
one more, then exit status 143)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from imgcls import checkpoint as ckpt
from imgcls import distributed as dist
from imgcls.cli.flags import fail, os_error_text
from imgcls.cli.preemption import StopRequest, preempted
from imgcls.config import RunConfig
from imgcls.data.loader import Loader
from imgcls.engine import EpochTally
from imgcls.randomness import restore_rng_states, rng_states, torch_epoch_seed
from imgcls.step_checkpoints import mid_epoch_state, prune_steps, step_folder


@dataclass
class TrainingParts:
    """What a checkpoint of a running epoch holds (the model unwrapped from DDP) and where it goes."""

    config: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    loader: Loader
    label_names: list[str] | None
    run_dir: Path
    info: dist.DistInfo


class MidEpoch:
    """Enters epochs (at a step checkpoint's position for the resumed one) and saves step checkpoints."""

    def __init__(self, parts: TrainingParts, resumed: dict | None, stop: StopRequest):
        self.parts, self.pending, self.stop = parts, resumed, stop
        self.save_steps = parts.config.train.save_steps
        self.last_saved: Path | None = None

    def enter(self, epoch: int) -> EpochTally | None:
        """Point the loader and the random states at the start of ``epoch``, or, for the epoch a step checkpoint
        stopped in, at its position with this rank's saved random states; -> that epoch's counters so far."""
        parts, mid = self.parts, self.pending
        self.pending = None
        if mid is None or mid["epoch"] != epoch:
            parts.loader.set_epoch(epoch)
            torch.manual_seed(torch_epoch_seed(parts.config.train.random_seed, epoch, parts.info.rank))
            return None
        own = mid["ranks"][parts.info.rank]
        parts.loader.set_epoch(epoch, mid["batch"])
        restore_rng_states(own["rng"])
        return EpochTally.from_plain(own["tally"], parts.info.device)

    def after_step(self, epoch: int, epoch_start_step: int, tally: EpochTally) -> None:
        """Every ``--save_steps`` steps (but the epoch's last: its checkpoint follows) a step checkpoint; on SIGTERM
        one too, then exit status 143."""
        stop = self.stop.agreed()
        batch = self.parts.loader.position.batch
        due = self.save_steps > 0 and tally.iterations % self.save_steps == 0 and batch < len(self.parts.loader)
        if not (due or stop):
            return
        saved = self.save(epoch, epoch_start_step, batch, tally)
        if stop:
            num_epochs = self.parts.config.train.schedule.num_epochs
            preempted(f"in epoch {epoch + 1}/{num_epochs} after step {epoch_start_step + tally.iterations}", saved)

    def save(self, epoch: int, epoch_start_step: int, batch: int, tally: EpochTally) -> Path:
        """The step checkpoint of this moment (every rank's random states and counters; rank 0 writes it)."""
        parts = self.parts
        ranks = dist.gather_lists([dict(rng=rng_states(), tally=tally.to_plain())])
        target = step_folder(parts.run_dir, epoch, epoch_start_step + tally.iterations)
        if parts.info.is_main:
            state = ckpt.training_state(
                parts.config, parts.optimizer, epoch - 1, epoch_start_step, parts.label_names, parts.scaler
            )
            world, batch_size = parts.info.world_size, parts.config.batch_size
            state["mid_epoch"] = mid_epoch_state(epoch, batch, world, batch_size, ranks)
            try:
                ckpt.save_checkpoint(target, parts.model, state)
            except OSError as e:
                kept = f"; resume with --checkpoint {self.last_saved}" if self.last_saved else ""
                fail(f"cannot save checkpoint {target}: {os_error_text(e)} (nothing of it was kept){kept}")
            prune_steps(parts.run_dir, keep=target)
        dist.barrier()  # no rank stops (or moves on) before the checkpoint is on disk
        self.last_saved = target
        return target
