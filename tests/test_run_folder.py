"""The run folder keeps what is in it: one run at a time (a lock), no silent overwrite of a previous run, and a full or
read-only disk as one line that leaves no partial checkpoint and no metrics row without its checkpoint.

CI runs as root, where a chmod'ed folder stays writable: the disk errors are raised by patching the checkpoint's
file writes / ``os.mkdir`` / ``os.open`` for the paths under the run folder (the errno is what a full or read-only
disk gives).
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgcls import checkpoint as ckpt
from imgcls.checkpoint import TMP_TAG

from .cli_helpers import MODEL, one_line_error, run_train, tiny_shapes, tiny_train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


def metrics_epochs(run_dir: Path) -> list[str]:
    if not (run_dir / "metrics.csv").exists():
        return []
    with open(run_dir / "metrics.csv") as f:
        return [row["epoch"] for row in csv.DictReader(f)]


# A process that holds the run folder's lock the way a training run does: flock on run.lock, its pid inside.
HOLD_LOCK = """
import fcntl, os, sys, time
folder = sys.argv[1]
os.makedirs(folder, exist_ok=True)
fd = os.open(os.path.join(folder, "run.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_into_a_busy_folder_fails_at_once_naming_the_holder(data, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / MODEL)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = one_line_error(capsys, lambda: run_train(*tiny_train(data, out, "--num_epochs=1")))
    finally:
        holder.kill()
        holder.wait()
    assert f"{out / MODEL} is in use by another training run (pid {holder.pid})" in err
    assert sorted(p.name for p in (out / MODEL).iterdir()) == ["run.lock"]  # nothing written


def test_sweep_removes_only_leftovers_of_this_or_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = 1  # init: always running
    for pid in (os.getpid(), dead.pid, live):
        (tmp_path / f".3{TMP_TAG}{pid}").mkdir()
    ckpt.sweep_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".3{TMP_TAG}{live}"]  # another live process's save in progress


def test_rerun_into_a_used_folder_refuses_until_overwrite(data, tmp_path, capsys):
    out = tmp_path / "out"
    run_dir = out / MODEL
    run_train(*tiny_train(data, out, "--num_epochs=2", "--tensorboard=True"))
    (run_dir / "notes.txt").write_text("mine")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != "run.lock"}
    metrics_before = (run_dir / "metrics.csv").read_text()
    capsys.readouterr()

    err = one_line_error(capsys, lambda: run_train(*tiny_train(data, out, "--num_epochs=1")))
    assert f"{run_dir} already holds a run (checkpoints 0-1, metrics.csv, curves.png, tb/)" in err
    assert f"--checkpoint {run_dir / '1'} to resume it" in err and "--overwrite" in err
    elsewhere = tmp_path / "elsewhere" / "0"
    shutil.copytree(run_dir / "0", elsewhere)
    err = one_line_error(
        capsys, lambda: run_train(*tiny_train(data, out, "--num_epochs=3", f"--checkpoint={elsewhere}"))
    )
    assert f"--checkpoint {elsewhere} is not one of its checkpoints" in err  # resuming it here would mix two runs
    inside = f"--checkpoint={run_dir / '1'}"
    err = one_line_error(capsys, lambda: run_train(*tiny_train(data, out, "--num_epochs=3", inside, "--overwrite")))
    assert "--overwrite would delete --checkpoint" in err
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != "run.lock"}
    assert after == before and (run_dir / "metrics.csv").read_text() == metrics_before  # nothing touched

    run_train(*tiny_train(data, out, "--num_epochs=1", "--overwrite"))
    assert sorted(p.name for p in run_dir.iterdir()) == ["0", "curves.png", "metrics.csv", "notes.txt", "run.lock"]
    assert metrics_epochs(run_dir) == ["0"]


def test_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch, capsys):
    """ENOSPC halfway through epoch 1's weights file: one line naming the folder and the cause, no partial folder,
    no metrics row for epoch 1, epoch 0's checkpoint intact and named for resuming."""
    out = tmp_path / "out"
    run_dir = out / MODEL
    real_write = ckpt._RecordingFile.write

    def disk_full_in_epoch_1(self, data: bytes) -> int:
        if f"{os.sep}.1{TMP_TAG}" in self.file.name:  # what the file object raises when the disk fills up
            self.file.write(bytes(data[: len(data) // 2]))
            self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise self.error
        return real_write(self, data)

    monkeypatch.setattr(ckpt._RecordingFile, "write", disk_full_in_epoch_1)
    err = one_line_error(capsys, lambda: run_train(*tiny_train(data, out, "--num_epochs=2")))
    monkeypatch.undo()
    assert f"cannot save checkpoint {run_dir / '1'}: No space left on device (ENOSPC)" in err
    assert f"resume with --checkpoint {run_dir / '0'}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["0", "metrics.csv", "run.lock"]  # no partial folder
    assert metrics_epochs(run_dir) == ["0"]
    weights, state = ckpt.load_training_state(run_dir / "0")
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_folder_mid_run_is_one_line_and_writes_no_metrics_row(data, tmp_path, monkeypatch, capsys, code):
    """The folder turns read-only (or loses its permissions) before epoch 0's checkpoint: one line, no metrics row."""
    out = tmp_path / "out"
    run_dir = out / MODEL
    real_mkdir = os.mkdir

    def refused(path, *args, **kwargs):
        if f"{os.sep}.0{TMP_TAG}" in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refused)
    err = one_line_error(capsys, lambda: run_train(*tiny_train(data, out, "--num_epochs=1")))
    monkeypatch.undo()
    assert f"cannot save checkpoint {run_dir / '0'}: {os.strerror(code)} ({errno.errorcode[code]})" in err
    assert "no checkpoint was saved" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_unwritable_folder_at_start_fails_before_training(data, tmp_path, monkeypatch, capsys, code):
    out = tmp_path / "out"
    real_open, real_mkdir = os.open, os.mkdir

    def guarded(real):
        def call(path, *args, **kwargs):
            if str(path).startswith(str(out)):
                raise OSError(code, os.strerror(code), str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "open", guarded(real_open))
    monkeypatch.setattr(os, "mkdir", guarded(real_mkdir))
    from imgcls import engine

    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: pytest.fail("training started"))
    err = one_line_error(capsys, lambda: run_train(*tiny_train(data, out, "--num_epochs=1")))
    assert f"cannot write to the run folder {out / MODEL}: {os.strerror(code)} ({errno.errorcode[code]})" in err
