"""Mid-epoch checkpoints: ``<run>/steps/epoch<E>-step<S>/``, written every ``--save_steps`` optimizer steps inside
epoch ``E`` (``S``: the global steps done) and when a SIGTERM stops the run.

A step checkpoint is an epoch checkpoint's two files (``imgcls.checkpoint``: ``model.pt``, ``state.pt`` and
``checksums.sha256``, published by the same atomic temp-folder rename) whose ``state.pt`` also holds ``mid_epoch``:

- ``epoch``, ``batch``: the loader's ``EpochPosition`` (``imgcls.data.loader``) at the step boundary, which
  ``Loader.set_epoch(epoch, batch)`` continues with the same remaining samples and augmentation;
- ``world_size`` and ``batch_size`` (global): the batch plan the position counts in;
- ``ranks``: per rank, every random state (python, numpy, torch; ``imgcls.randomness.rng_states``) and the epoch's
  running counters so far (``imgcls.engine.EpochTally``), so the epoch's metrics row comes out as if never stopped.

Its ``epoch`` and ``step`` keys say what an epoch checkpoint's would: the last finished epoch (``E - 1``) and the
global step at the start of epoch ``E``. So ``--pretrained_model``, eval and infer read it as any checkpoint.

Only the newest step checkpoint is kept: publishing one removes the older ones, and publishing the checkpoint of
epoch ``E`` removes those of epochs up to ``E``. A kill between a publish and its pruning leaves an older one
beside the newer, which ``newest`` never picks.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from imgcls.checkpoint import STATE_FILE, WEIGHTS_FILE

STEPS_DIR = "steps"
_NAME = re.compile(r"epoch(\d+)-step(\d+)")


@dataclass(frozen=True, order=True)
class StepCheckpoint:
    """A published step checkpoint folder: in epoch ``epoch``, after ``step`` global steps."""

    epoch: int
    step: int
    path: Path

    @property
    def complete(self) -> bool:
        """Both checkpoint files are there (a published folder always has them; a damaged one may not)."""
        return (self.path / WEIGHTS_FILE).is_file() and (self.path / STATE_FILE).is_file()


def step_folder(run_dir: Path, epoch: int, step: int) -> Path:
    """Where the step checkpoint of ``epoch`` after ``step`` global steps goes."""
    return run_dir / STEPS_DIR / f"epoch{epoch}-step{step}"


def step_checkpoints(run_dir: Path) -> list[StepCheckpoint]:
    """The published step checkpoints of a run folder, oldest first (hidden temp folders are not published)."""
    folder = run_dir / STEPS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append(StepCheckpoint(int(match[1]), int(match[2]), path))
    return sorted(found)


def newest_step(run_dir: Path) -> StepCheckpoint | None:
    """The newest complete step checkpoint of a run folder."""
    complete = [c for c in step_checkpoints(run_dir) if c.complete]
    return complete[-1] if complete else None


def prune_steps(run_dir: Path, keep: Path | None = None, through_epoch: int | None = None) -> None:
    """Remove step checkpoints: every one but ``keep`` (after publishing ``keep``), or those of epochs up to
    ``through_epoch`` (after publishing that epoch's checkpoint)."""
    for found in step_checkpoints(run_dir):
        if found.path == keep or (through_epoch is not None and found.epoch > through_epoch):
            continue
        shutil.rmtree(found.path, ignore_errors=True)


def mid_epoch_state(epoch: int, batch: int, world_size: int, batch_size: int, ranks: list[dict]) -> dict:
    """The ``mid_epoch`` record of a step checkpoint's ``state.pt`` (``ranks``: each rank's ``rng`` and ``tally``)."""
    return dict(epoch=epoch, batch=batch, world_size=world_size, batch_size=batch_size, ranks=ranks)


def resume_mismatch(mid_epoch: dict, world_size: int, batch_size: int) -> str | None:
    """Why a step checkpoint cannot continue its epoch in a run of ``world_size`` processes and global
    ``batch_size`` (its position counts batches of its own plan), or None when it can."""
    if mid_epoch["world_size"] != world_size:
        return f"it was written by {mid_epoch['world_size']} processes, this run has {world_size}"
    if mid_epoch["batch_size"] != batch_size:
        return f"it was written with --batch_size {mid_epoch['batch_size']}, this run has {batch_size}"
    return None
