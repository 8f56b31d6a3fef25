"""Training that survives preemption: SIGTERM stops at the next step boundary with a checkpoint, and
``--checkpoint auto`` resumes a restarted run from the newest checkpoint of its folder.

- **SIGTERM** (what schedulers and torchrun's agent send before killing): the handler only records it; after the
  step in progress the trainer writes a step checkpoint (``imgcls.step_checkpoints``) and exits with status 143
  (128 + SIGTERM, ``PREEMPTED_EXIT``). In a torchrun run the ranks agree on it first (a one-number all-reduce after
  each step), so all of them stop after the same step. Caught during validation, the epoch's checkpoint is written
  as usual and the run stops there. SIGINT keeps its one-line behaviour (exit status 130).
- **auto**: the newest complete checkpoint (step or epoch) of ``<model_save_dir>/<model>/``, when it was written by
  the same model and recipe (``recipe_differences``); a run of another model or recipe is a one-line error; a folder
  without checkpoints starts afresh (what an earlier attempt left there before its first checkpoint is cleared).
- **torchrun restarts**: ``shared_store_warning`` says when torchrun's environment lacks the setting that lets a
  restarted worker group connect reliably.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import NoReturn

from imgcls import distributed as dist
from imgcls.checkpoint import SavedRun, read_run_info
from imgcls.cli.flags import fail, warn
from imgcls.cli.layering import resume_changes
from imgcls.cli.run_folder import claimed, clear_run, last_complete_checkpoint, newest_checkpoint, run_contents
from imgcls.config import RunConfig
from imgcls.step_checkpoints import resume_mismatch

PREEMPTED_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended
AUTO = "auto"
SHARE_STORE_OFF = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


class StopRequest:
    """Whether SIGTERM arrived; ``watch()`` installs the handler for a block (main thread only)."""

    def __init__(self) -> None:
        self.received = False

    def _handle(self, signum: int, frame: object) -> None:
        self.received = True

    @contextmanager
    def watch(self) -> Iterator[StopRequest]:
        """Inside, SIGTERM sets ``received`` instead of ending the process; the previous handler comes back after."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def agreed(self) -> bool:
        """Whether any rank received SIGTERM (every rank gets the same answer; a CPU collective in a torchrun run)."""
        return dist.any_rank(self.received)


def shared_store_warning() -> str | None:
    """The warning for a torchrun run that may restart its workers (``--max-restarts`` > 0) while the agent shares its
    rendezvous TCP store with them: on this torch, a restarted group can then fail to connect (gloo reads the dead
    workers' addresses: "connectFullMesh failed ... Connection refused") and use up the restarts."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts <= 0 or os.environ.get(SHARE_STORE_OFF) == "1":
        return None
    return (
        f"torchrun --max-restarts={restarts}: set {SHARE_STORE_OFF}=1 in torchrun's environment, or a restarted "
        "worker group may fail to connect (see docs/distributed.md)"
    )


def warn_shared_store() -> None:
    """One warning line when ``shared_store_warning`` has one."""
    message = shared_store_warning()
    if message:
        warn(message)


def preempted(where: str, saved: Path | None) -> NoReturn:
    """SIGTERM: one line naming the checkpoint written, exit status 143."""
    kept = f"saved {saved}; " if saved is not None else ""
    dist.print0(f"stopped by SIGTERM {where}: {kept}resume with --checkpoint auto", file=sys.stderr, flush=True)
    raise SystemExit(PREEMPTED_EXIT)


def recipe_differences(saved: SavedRun | None, config: RunConfig) -> list[str]:
    """'setting saved -> now' for each setting of the model and recipe in which the run that wrote a checkpoint
    (``saved``: what its state.pt says) differs from ``config`` (empty: the same run, which ``auto`` continues)."""
    if saved is None or saved.config is None or saved.config.train is None:
        return ["the checkpoint does not record its recipe"]
    old, changes = saved.config, []
    for name, before, now in (
        ("model", old.model, config.model),
        ("class_dim", old.num_classes, config.num_classes),
        ("preprocessing", old.preprocess, config.preprocess),
        ("loss", old.train.loss, config.train.loss),
    ):
        if before != now:
            changes.append(f"{name} {before} -> {now}")
    return changes + resume_changes(saved, config)


def with_checkpoint(config: RunConfig, checkpoint: str | None) -> RunConfig:
    """``config`` resuming from ``checkpoint`` (what ``auto`` chose; None: afresh)."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, checkpoint=checkpoint))


@contextmanager
def claimed_run(config: RunConfig, run_dir: Path, info: dist.DistInfo) -> Iterator[RunConfig]:
    """Rank 0 holds the run folder for the whole run (``imgcls.cli.run_folder.claimed``); yields the run's config
    with ``--checkpoint auto`` resolved in the locked folder, the same on every rank."""
    train = config.train
    auto = train.checkpoint == AUTO
    pick = partial(pick_auto, config=config) if auto else None
    claim = claimed(run_dir, train.checkpoint, train.overwrite, pick) if info.is_main else nullcontext()
    with claim as checkpoint:
        yield with_checkpoint(config, dist.broadcast_object(checkpoint)) if auto else config


def pick_auto(folder: Path, config: RunConfig) -> str | None:
    """``--checkpoint auto`` in the locked run folder: its newest checkpoint, or None to start afresh."""
    if config.train.overwrite:
        return None
    newest = newest_checkpoint(folder)
    if newest is None:
        left = run_contents(folder)
        if left:
            print(f"--checkpoint auto: {folder} holds no checkpoint; removing {', '.join(left)} and starting afresh")
            clear_run(folder)
        return None
    try:
        saved = read_run_info(newest)
    except ValueError as e:
        fail(f"--checkpoint auto: cannot read {newest}: {e}")
    changes = recipe_differences(saved, config)
    if changes:
        fail(
            f"--checkpoint auto: {folder} holds a run of another model or recipe ({'; '.join(changes)}); pass "
            f"--checkpoint {newest} to resume it with these settings, --overwrite to start afresh, or choose another "
            "--model_save_dir"
        )
    if saved.mid_epoch is not None:
        newest = usable_for_this_plan(folder, newest, saved.mid_epoch, config.batch_size)
    print(f"--checkpoint auto: resuming from {newest}", flush=True)
    return str(newest)


def usable_for_this_plan(folder: Path, step_checkpoint: Path, mid_epoch: dict, batch_size: int) -> Path:
    """``step_checkpoint`` when it can continue its epoch with this run's process count (torchrun's, which an
    elastic restart may change) and ``batch_size``, else the folder's newest epoch checkpoint (one note line); a
    one-line error when there is none."""
    why = resume_mismatch(mid_epoch, dist.env_world()[2], batch_size)
    if why is None:
        return step_checkpoint
    fallback = last_complete_checkpoint(folder)
    if fallback is None:
        fail(f"--checkpoint auto: {step_checkpoint} cannot continue its epoch ({why}) and there is no epoch checkpoint")
    print(f"--checkpoint auto: {step_checkpoint} cannot continue its epoch ({why}); using {fallback}")
    return fallback
