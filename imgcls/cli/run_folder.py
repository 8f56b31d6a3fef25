"""The run folder ``<model_save_dir>/<model>/`` of a training run: one run at a time, and nothing of an earlier
run overwritten unless asked.

- **One writer.** A run holds an exclusive ``fcntl.flock`` on ``run.lock`` (which names its pid) from start to end;
  a second run into the same folder stops at once with one line naming the holder. The kernel drops the lock when
  the process dies, however it dies, so a stale lock file never blocks anyone.
- **Writable first.** Taking the lock creates the folder and writes the lock file, and a probe folder is made and
  removed (checkpoints are written into fresh folders): a read-only or full disk fails before any training.
- **No silent overwrite.** A folder that holds a previous run (checkpoints ``<epoch>/`` and ``steps/``,
  ``metrics.csv``, ``tb/``, ``curves.png``) is used only to resume from one of its checkpoints (``--checkpoint``,
  or ``--checkpoint auto``: the newest); ``--overwrite`` removes that run first. Any other file in the folder is
  left alone.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from imgcls.checkpoint import OLD_TAG, STATE_FILE, TMP_TAG, WEIGHTS_FILE
from imgcls.cli.flags import fail, os_error_text
from imgcls.step_checkpoints import STEPS_DIR, newest_step, step_checkpoints

LOCK_FILE = "run.lock"
RUN_FILES = ("metrics.csv", "curves.png")  # with tb/ and the epoch folders: what a run writes
TB_DIR = "tb"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""

    def __init__(self, folder: Path, pid: int | None):
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{folder} is in use by another training run ({holder})")
        self.pid = pid


def _holder_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class RunLock:
    """An exclusive lock on a run folder (created if missing), held until ``release`` or the process ends.

    RunFolderBusy if another process holds it; OSError if the folder cannot be written."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderBusy(folder, _holder_pid(self.fd)) from None
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
            probe = folder / f".write-probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it); the lock file stays, harmless."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def epoch_folders(folder: Path) -> list[int]:
    """The epochs of the checkpoint folders ``<epoch>/`` in ``folder``, ascending."""
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()) if folder.is_dir() else []


def run_contents(folder: Path) -> list[str]:
    """What a previous run left in ``folder``, in words (empty when it holds none)."""
    epochs = epoch_folders(folder)
    found = []
    if epochs:
        found.append(f"checkpoint {epochs[0]}" if len(epochs) == 1 else f"checkpoints {epochs[0]}-{epochs[-1]}")
    steps = step_checkpoints(folder)
    if steps:
        found.append(f"{STEPS_DIR}/ ({len(steps)} mid-epoch checkpoint{'s' if len(steps) > 1 else ''})")
    found += [name for name in RUN_FILES if (folder / name).exists()]
    if (folder / TB_DIR).exists():
        found.append(f"{TB_DIR}/")
    return found


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``<epoch>/`` in ``folder`` holding both checkpoint files."""
    for epoch in reversed(epoch_folders(folder)):
        path = folder / str(epoch)
        if (path / WEIGHTS_FILE).is_file() and (path / STATE_FILE).is_file():
            return path
    return None


def newest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint of ``folder`` that is furthest into the run: the newest complete step checkpoint when it lies
    in an epoch after the last complete epoch checkpoint, else that epoch checkpoint."""
    epoch_path, step = last_complete_checkpoint(folder), newest_step(folder)
    if step is not None and (epoch_path is None or step.epoch > int(epoch_path.name)):
        return step.path
    return epoch_path


def clear_run(folder: Path) -> None:
    """Remove what a run writes from ``folder``: its checkpoints (and hidden leftovers of interrupted saves), metrics,
    TensorBoard events and curves. Other files stay."""
    for epoch in epoch_folders(folder):
        shutil.rmtree(folder / str(epoch))
    for leftover in (*folder.glob(f".*{TMP_TAG}*"), *folder.glob(f".*{OLD_TAG}*")):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.rmtree(folder / TB_DIR, ignore_errors=True)
    shutil.rmtree(folder / STEPS_DIR, ignore_errors=True)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)


def inside(path: str | os.PathLike, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (after resolving links)."""
    return Path(path).resolve().is_relative_to(folder.resolve())


def check_reuse(folder: Path, checkpoint: str | None, overwrite: bool) -> None:
    """A one-line error unless this run may write into ``folder`` as asked; with ``overwrite``, clear it first."""
    if overwrite and checkpoint and inside(checkpoint, folder):
        fail(f"--overwrite would delete --checkpoint {checkpoint} (it is in {folder}); give one of the two")
    found = run_contents(folder)
    if not found or (checkpoint and inside(checkpoint, folder)):
        return
    if overwrite:
        clear_run(folder)
        return
    last = newest_checkpoint(folder)
    resume = f"--checkpoint {last} to resume it, or " if last and not checkpoint else ""
    other = f" and --checkpoint {checkpoint} is not one of its checkpoints" if checkpoint else ""
    fail(
        f"{folder} already holds a run ({', '.join(found)}){other}; pass {resume}--overwrite to start afresh "
        "(removes its checkpoints, metrics.csv, tb/ and curves.png), or choose another --model_save_dir"
    )


@contextmanager
def claimed(
    folder: Path, checkpoint: str | None, overwrite: bool, pick: Callable[[Path], str | None] | None = None
) -> Iterator[str | None]:
    """The CLI's run folder for the whole run: locked, writable, free of another run (one-line errors otherwise).
    Yields the checkpoint to resume: ``checkpoint``, or what ``pick`` chooses in the locked folder."""
    try:
        lock = RunLock(folder)
    except RunFolderBusy as e:
        fail(f"{e}; wait for it to finish or choose another --model_save_dir")
    except OSError as e:
        fail(f"cannot write to the run folder {folder}: {os_error_text(e)}")
    try:
        try:
            if pick is not None:
                checkpoint = pick(folder)
            check_reuse(folder, checkpoint, overwrite)
        except OSError as e:
            fail(f"cannot clear the run folder {folder}: {os_error_text(e)}")
        yield checkpoint
    finally:
        lock.release()
