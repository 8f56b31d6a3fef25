"""``python -m tests.preempt_worker TRAIN_FLAGS``: ``imgcls.train`` that kills itself at a chosen moment, for the
preemption tests (run as a plain process or as a torchrun worker). The environment says when:

- ``KILL_AT_STEP=k``: send ``KILL_SIGNAL`` (default SIGKILL) to this process in its own ``k``-th training step,
  after the optimizer update (the step is done, its boundary not yet reached);
- ``KILL_IN_SAVE=tmp|state``: SIGKILL in the middle of the first step-checkpoint save of this process: ``state``
  while writing its ``state.pt`` (model.pt already in the hidden temp folder), ``tmp`` after the temp folder is
  complete, before its rename publishes it;
- ``KILL_RANK=r``: only rank ``r`` does it (default: every rank); only in torchrun's first attempt
  (``TORCHELASTIC_RESTART_COUNT`` 0 or unset).
"""

from __future__ import annotations

import os
import signal
import sys

from imgcls import checkpoint, engine
from imgcls.cli.flags import run_command
from imgcls.train import get_args_parser, main


def _armed() -> bool:
    rank_ok = os.environ.get("KILL_RANK") in (None, os.environ.get("RANK", "0"))
    return rank_ok and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"


def _kill(signum: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)


def _arm_step(kill_at: int, signum: int) -> None:
    real_step = engine.backward_and_step

    def step(loss, optimizer, scaler):
        real_step(loss, optimizer, scaler)
        step.count += 1
        if step.count == kill_at:
            _kill(signum)

    step.count = 0
    engine.backward_and_step = step


def _arm_save(where: str) -> None:
    real_write, real_publish = checkpoint.write_synced, checkpoint.publish_checkpoint

    def write_synced(path, obj):
        if where == "state" and path.name == checkpoint.STATE_FILE and "step" in path.parent.name:
            real_write(path, obj)  # the file exists whole; the manifest and the rename are still to come
            _kill()
        return real_write(path, obj)

    def publish(tmp, target):
        if where == "tmp" and target.parent.name == "steps":
            _kill()
        real_publish(tmp, target)

    checkpoint.write_synced, checkpoint.publish_checkpoint = write_synced, publish


if __name__ == "__main__":
    if _armed():
        if "KILL_AT_STEP" in os.environ:
            _arm_step(int(os.environ["KILL_AT_STEP"]), int(os.environ.get("KILL_SIGNAL", signal.SIGKILL)))
        if "KILL_IN_SAVE" in os.environ:
            _arm_save(os.environ["KILL_IN_SAVE"])
    run_command(main, get_args_parser(), " before the first epoch; nothing was saved")
