"""Preemption-proof training: step checkpoints, exact mid-epoch resume, ``--checkpoint auto`` and SIGTERM.

The oracle is an uninterrupted run of the same command: an interrupted run resumed (as often as it was killed)
must end with the same metrics rows (time columns aside) and bit-identical weights and optimizer state on CPU.
The runs use mixup, label smoothing and a model with dropout, so every random stream a resume must continue
(loader order and augmentation, mixup draws, torch's generator) shows in the result if it is not.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from imgcls import checkpoint as ckpt
from imgcls.cli import preemption
from imgcls.cli.preemption import PREEMPTED_EXIT
from imgcls.cli.run_folder import newest_checkpoint
from imgcls.step_checkpoints import STEPS_DIR, step_checkpoints, step_folder
from tests.cli_helpers import one_line_error, parse_train, run_train, tiny_shapes, tiny_train

REPO = Path(__file__).resolve().parents[1]
MODEL = "SqueezeNet1_1"  # has dropout: torch's generator matters
EPOCHS, STEPS_PER_EPOCH, BATCH = 2, 4, 8
TIME_FIELDS = ("images_per_sec", "epoch_time_s")


def flags(data: Path, out: Path, *extra: str) -> list[str]:
    """A tiny 2-epoch run: 4 steps an epoch, mixup, label smoothing, a cosine schedule that moves every step."""
    recipe = ["--lr=0.02", "--lr_strategy=cosine_decay", f"--num_epochs={EPOCHS}"]
    recipe += ["--use_mixup=True", "--use_label_smoothing=True"]
    return tiny_train(data, out, f"--model={MODEL}", f"--batch_size={BATCH}", *recipe, *extra)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The killed workers run with OMP_NUM_THREADS=1; the runs in this process (the reference, the resumes) use one
    thread too: a float sum's rounding depends on how many threads split it, so bit-identity needs the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"), num_train=STEPS_PER_EPOCH * BATCH, num_val=8)


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory) -> Path:
    """The uninterrupted run's folder."""
    out = tmp_path_factory.mktemp("reference")
    run_train(*flags(data, out))
    return out / MODEL


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIME_FIELDS} for row in csv.DictReader(f)]


def assert_same_end(run_dir: Path, reference: Path) -> None:
    """Same metrics rows, bit-identical final weights and optimizer state."""
    assert rows(run_dir) == rows(reference)
    last = str(EPOCHS - 1)
    got, want = (ckpt.load_training_state(d / last) for d in (run_dir, reference))
    assert got[0].keys() == want[0].keys()
    for key, value in want[0].items():
        assert torch.equal(got[0][key], value), key
    got_momentum = [s["momentum_buffer"] for s in got[1]["optimizer"]["state"].values()]
    want_momentum = [s["momentum_buffer"] for s in want[1]["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(got_momentum, want_momentum, strict=True))
    assert got[1]["step"] == want[1]["step"] == EPOCHS * STEPS_PER_EPOCH


def stop_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Make the run see SIGTERM at its ``calls``-th step boundary (in this process)."""
    seen = []

    def agreed(self):
        seen.append(1)
        return len(seen) == calls

    monkeypatch.setattr(preemption.StopRequest, "agreed", agreed)


def stopped_run(monkeypatch: pytest.MonkeyPatch, calls: int, *run_flags: str) -> None:
    """A run stopped as by SIGTERM at its ``calls``-th step boundary (exit status 143)."""
    with monkeypatch.context() as patch:
        stop_after(patch, calls)
        with pytest.raises(SystemExit) as e:
            run_train(*run_flags)
    assert e.value.code == PREEMPTED_EXIT


@pytest.mark.parametrize(
    "boundary, epoch, batch",
    [(STEPS_PER_EPOCH + 1 + 2, 1, 2), (STEPS_PER_EPOCH, 0, STEPS_PER_EPOCH)],  # + 1: the check after validation
    ids=["mid-epoch", "after-the-epochs-last-step"],
)
def test_resume_from_a_step_checkpoint_ends_bit_identical(
    data, reference, tmp_path, monkeypatch, boundary, epoch, batch
):
    # Stopped at a step boundary (the last one of an epoch: nothing of it left but validation), resumed with auto.
    stopped_run(monkeypatch, boundary, *flags(data, tmp_path, "--save_steps=1"))
    run_dir = tmp_path / MODEL
    (only,) = step_checkpoints(run_dir)  # older ones pruned, epoch 1's with its epoch checkpoint
    assert (only.epoch, only.step) == (epoch, epoch * STEPS_PER_EPOCH + batch)
    state = ckpt.load_training_state(only.path)[1]
    assert state["epoch"] == epoch - 1 and state["step"] == epoch * STEPS_PER_EPOCH
    assert state["mid_epoch"]["batch"] == batch and len(state["mid_epoch"]["ranks"]) == 1
    run_train(*flags(data, tmp_path, "--save_steps=1", "--checkpoint=auto"))
    assert_same_end(run_dir, reference)
    assert step_checkpoints(run_dir) == []


def test_the_builtin_data_resumes_mid_epoch_bit_identical(data, tmp_path, monkeypatch, capsys):
    """The built-in dataset (no --data_dir: its defaults apply, here a warmup schedule and its crop scale)."""
    from imgcls.data import builtin

    monkeypatch.setattr(builtin, "builtin_dataset_dir", lambda: data)

    def builtin_flags(out: Path, *extra: str) -> list[str]:
        return [f for f in flags(data, out, *extra) if not f.startswith(("--data_dir", "--lr_strategy"))]

    run_train(*builtin_flags(tmp_path / "straight"))
    assert "using the built-in" in capsys.readouterr().out
    stopped_run(monkeypatch, 3, *builtin_flags(tmp_path / "stopped", "--save_steps=2"))
    run_train(*builtin_flags(tmp_path / "stopped", "--checkpoint=auto"))
    assert_same_end(tmp_path / "stopped" / MODEL, tmp_path / "straight" / MODEL)


def test_a_shard_fed_run_resumes_mid_epoch_bit_identical(data, tmp_path, monkeypatch):
    """The same data as tar shards (several shards, a shuffle buffer smaller than the epoch): stopped in the middle
    of epoch 2, resumed with auto, it ends as the uninterrupted shard-fed run does."""
    from imgcls.data.datasets import load_dataset
    from imgcls.data.shards.writer import write_dataset

    shards = tmp_path / "shards"
    write_dataset(load_dataset(data), shards, shard_size=10, log=lambda _: None)
    assert len(list(shards.glob("train-*.tar"))) == 4

    def shard_flags(out: Path, *extra: str) -> list[str]:
        replaced = [f"--data_dir={shards}" if f.startswith("--data_dir") else f for f in flags(data, out, *extra)]
        return [*replaced, "--shuffle_buffer=12"]

    run_train(*shard_flags(tmp_path / "straight"))
    stopped_run(monkeypatch, STEPS_PER_EPOCH + 1 + 2, *shard_flags(tmp_path / "stopped", "--save_steps=1"))
    (only,) = step_checkpoints(tmp_path / "stopped" / MODEL)
    assert (only.epoch, only.step) == (1, STEPS_PER_EPOCH + 2)
    run_train(*shard_flags(tmp_path / "stopped", "--save_steps=1", "--checkpoint=auto"))
    assert_same_end(tmp_path / "stopped" / MODEL, tmp_path / "straight" / MODEL)


def test_resume_without_the_saved_random_states_differs(data, reference, tmp_path, monkeypatch):
    """The test above can fail: dropping the per-rank random states of a step checkpoint changes the end state."""
    stopped_run(monkeypatch, 3, *flags(data, tmp_path))
    for where in ("imgcls.checkpoint", "imgcls.cli.mid_epoch"):
        monkeypatch.setattr(f"{where}.restore_rng_states", lambda states: None)
    run_train(*flags(data, tmp_path, "--checkpoint=auto"))
    with pytest.raises(AssertionError):
        assert_same_end(tmp_path / MODEL, reference)


def worker(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m tests.preempt_worker ARGS`` (imgcls.train that may kill itself, see there)."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.preempt_worker", *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_writes_a_step_checkpoint_and_exits_143(data, reference, tmp_path):
    # A real SIGTERM from outside, as a scheduler sends it, once the run has written its first step checkpoint.
    proc = worker(*flags(data, tmp_path, "--save_steps=1", "--checkpoint=auto"))
    deadline = time.monotonic() + 120
    while not step_checkpoints(tmp_path / MODEL) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, err[-2000:]
    assert time.monotonic() - sent < 30  # the step in progress and one save
    (only,) = step_checkpoints(tmp_path / MODEL)
    where = f"in epoch {only.epoch + 1}/{EPOCHS} after step {only.step}"
    assert (
        err.strip().splitlines()[-1] == f"stopped by SIGTERM {where}: saved {only.path}; resume with --checkpoint auto"
    )
    run_train(*flags(data, tmp_path, "--checkpoint=auto"))
    assert_same_end(tmp_path / MODEL, reference)


def test_kill_9_at_random_moments_then_auto_ends_bit_identical(data, reference, tmp_path):
    """SIGKILL mid-step, inside a step-checkpoint save (state.pt half-way, the temp folder whole but not renamed) and
    at random moments; each restart with --checkpoint auto continues from what survived."""
    run_flags = flags(data, tmp_path, "--save_steps=1", "--checkpoint=auto")
    kills = [{"KILL_AT_STEP": "2"}, {"KILL_IN_SAVE": "state"}, {"KILL_IN_SAVE": "tmp"}]
    for env in kills:
        proc = worker(*run_flags, env=env)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        if "KILL_IN_SAVE" in env:  # the save's hidden temp folder is left, unpublished
            assert any(p.name.startswith(".") for p in (tmp_path / MODEL / STEPS_DIR).iterdir())
    rng = random.Random(22)
    for _ in range(2):  # random moments of a whole process's life, start-up included
        proc = worker(*run_flags)
        try:
            proc.wait(timeout=rng.uniform(2.0, 8.0))
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.communicate()
    proc = worker(*run_flags)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert_same_end(tmp_path / MODEL, reference)
    assert not any(p.name.startswith(".") for p in (tmp_path / MODEL / STEPS_DIR).iterdir())


# ---- --checkpoint auto, the run folder and the flag -------------------------------------------------------------


def test_auto_starts_afresh_then_refuses_another_recipe(data, tmp_path, capsys):
    run_train(*flags(data, tmp_path, "--num_epochs=1", "--checkpoint=auto"))
    assert newest_checkpoint(tmp_path / MODEL) == tmp_path / MODEL / "0"
    error = one_line_error(capsys, lambda: run_train(*flags(data, tmp_path, "--lr=0.5", "--checkpoint=auto")))
    assert "holds a run of another model or recipe" in error and "lr 0.02 -> 0.5" in error
    assert "num_epochs 1 -> 2" in error
    # The same recipe resumes; --overwrite with auto starts afresh
    run_train(*flags(data, tmp_path, "--num_epochs=1", "--checkpoint=auto"))
    assert "nothing to train" in capsys.readouterr().out
    run_train(*flags(data, tmp_path, "--num_epochs=1", "--checkpoint=auto", "--overwrite"))
    assert "resuming" not in capsys.readouterr().out


def test_auto_clears_what_a_run_left_before_its_first_checkpoint(data, tmp_path, capsys):
    run_dir = tmp_path / MODEL
    (run_dir / "tb").mkdir(parents=True)
    run_train(*flags(data, tmp_path, "--num_epochs=1", "--checkpoint=auto"))
    assert "holds no checkpoint; removing tb/" in capsys.readouterr().out
    assert (run_dir / "0" / "model.pt").is_file()


def test_newest_checkpoint_prefers_a_later_epochs_step_checkpoint(tmp_path):
    def make(path: Path) -> Path:
        path.mkdir(parents=True)
        (path / ckpt.WEIGHTS_FILE).write_bytes(b"w")
        (path / ckpt.STATE_FILE).write_bytes(b"s")
        return path

    assert newest_checkpoint(tmp_path) is None
    make(step_folder(tmp_path, 0, 3))
    assert newest_checkpoint(tmp_path) == step_folder(tmp_path, 0, 3)
    make(tmp_path / "0")
    assert newest_checkpoint(tmp_path) == tmp_path / "0"  # epoch 0 done: its step checkpoints are older
    make(step_folder(tmp_path, 1, 6))
    make(step_folder(tmp_path, 1, 10))
    assert newest_checkpoint(tmp_path) == step_folder(tmp_path, 1, 10)
    (step_folder(tmp_path, 1, 10) / ckpt.STATE_FILE).unlink()  # incomplete: never picked
    assert newest_checkpoint(tmp_path) == step_folder(tmp_path, 1, 6)


def test_overwrite_removes_step_checkpoints_and_a_used_folder_names_them(data, tmp_path, monkeypatch, capsys):
    stopped_run(monkeypatch, 2, *flags(data, tmp_path))
    capsys.readouterr()
    error = one_line_error(capsys, lambda: run_train(*flags(data, tmp_path)))
    assert "steps/ (1 mid-epoch checkpoint)" in error and f"--checkpoint {step_folder(tmp_path / MODEL, 0, 2)}" in error
    run_train(*flags(data, tmp_path, "--num_epochs=1", "--overwrite"))
    assert step_checkpoints(tmp_path / MODEL) == []


def test_a_step_checkpoint_resumes_only_at_its_batch_plan(data, tmp_path, monkeypatch, capsys):
    stopped_run(monkeypatch, 2, *flags(data, tmp_path))
    capsys.readouterr()
    (only,) = step_checkpoints(tmp_path / MODEL)
    error = one_line_error(
        capsys, lambda: run_train(*flags(data, tmp_path, "--batch_size=16", f"--checkpoint={only.path}"))
    )
    assert "cannot continue epoch 1 from the step checkpoint" in error and "--batch_size 8, this run has 16" in error


def test_auto_falls_back_to_the_epoch_checkpoint_when_the_process_count_changed(data, tmp_path, monkeypatch, capsys):
    """An elastic restart on another number of processes cannot continue a step checkpoint's epoch: auto takes the
    newest epoch checkpoint instead (one line), or stops with one line when there is none."""
    stopped_run(monkeypatch, STEPS_PER_EPOCH + 1 + 1, *flags(data, tmp_path / "later"))  # epoch 1 saved, in epoch 2
    stopped_run(monkeypatch, 1, *flags(data, tmp_path / "first"))  # in epoch 1: no epoch checkpoint yet
    capsys.readouterr()
    for name in ("later", "first"):
        folder = tmp_path / name / MODEL
        (step,) = step_checkpoints(folder)
        mid = ckpt.load_training_state(step.path)[1]["mid_epoch"]
        assert preemption.usable_for_this_plan(folder, step.path, mid, BATCH) == step.path
        monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun says to the restarted workers
        if name == "later":
            assert preemption.usable_for_this_plan(folder, step.path, mid, BATCH) == folder / "0"
            assert "(it was written by 1 processes, this run has 2); using" in capsys.readouterr().out
        else:
            error = one_line_error(capsys, partial(preemption.usable_for_this_plan, folder, step.path, mid, BATCH))
            assert "cannot continue its epoch" in error and "there is no epoch checkpoint" in error
        monkeypatch.delenv("WORLD_SIZE")


def test_save_steps_flag():
    assert parse_train("--model=ResNet50_vd", "--save_steps=5").save_steps == 5
    assert parse_train("--model=ResNet50_vd").save_steps == 0
    with pytest.raises(SystemExit):
        parse_train("--model=ResNet50_vd", "--save_steps=-1")


# ---- torchrun elastic ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_2proc(data: Path, tmp_path_factory) -> Path:
    """The uninterrupted 2-process run's folder."""
    from tests.test_distributed import torchrun

    out = tmp_path_factory.mktemp("straight_2proc")
    torchrun(2, "-m", "imgcls.train", *flags(data, out))
    return out / MODEL


def test_torchrun_restarts_a_killed_worker_and_ends_as_an_uninterrupted_run(
    data, straight_2proc, tmp_path, monkeypatch
):
    """kill -9 of rank 1 in epoch 2 of a 2-process gloo run under --max-restarts=1: the agent restarts both workers,
    which continue from the newest step checkpoint (each rank its own random states) to the same end."""
    from tests.test_distributed import torchrun

    monkeypatch.setenv(preemption.SHARE_STORE_OFF, "1")  # without it a restarted group fails to connect at times
    monkeypatch.setenv("KILL_RANK", "1")
    monkeypatch.setenv("KILL_AT_STEP", str(STEPS_PER_EPOCH + 2))
    restarting = ("--max-restarts=1", "-m", "tests.preempt_worker")
    result = torchrun(2, *restarting, *flags(data, tmp_path, "--save_steps=1", "--checkpoint=auto"))
    assert "(exitcode: -9)" in result.stderr
    resumed = step_folder(tmp_path / MODEL, 1, STEPS_PER_EPOCH + 1)
    assert f"--checkpoint auto: resuming from {resumed}" in result.stdout
    assert_same_end(tmp_path / MODEL, straight_2proc)


def test_sigterm_to_one_torchrun_worker_stops_every_rank_at_the_same_step(data, straight_2proc, tmp_path):
    """Only rank 1 gets SIGTERM (in its 3rd step): the ranks agree, write one step checkpoint together, exit 143;
    a new torchrun run with --checkpoint auto ends as the uninterrupted one."""
    from tests.test_distributed import torchrun

    env = dict(os.environ, OMP_NUM_THREADS="1", KILL_RANK="1", KILL_AT_STEP="3", KILL_SIGNAL=str(int(signal.SIGTERM)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "tests.preempt_worker", *flags(data, tmp_path)]
    stopped = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert stopped.returncode != 0
    (only,) = step_checkpoints(tmp_path / MODEL)
    assert (only.epoch, only.step) == (0, 3)
    stderr = stopped.stderr
    assert stderr.count(f"stopped by SIGTERM in epoch 1/{EPOCHS} after step 3: saved {only.path}") == 1, stderr[-3000:]
    assert f"exitcode: {PREEMPTED_EXIT}" in stderr  # the agent names the first worker to exit
    assert len(ckpt.load_training_state(only.path)[1]["mid_epoch"]["ranks"]) == 2
    torchrun(2, "-m", "imgcls.train", *flags(data, tmp_path, "--checkpoint=auto"))
    assert_same_end(tmp_path / MODEL, straight_2proc)


def test_a_restartable_torchrun_without_the_store_setting_is_warned(monkeypatch):
    monkeypatch.delenv(preemption.SHARE_STORE_OFF, raising=False)
    monkeypatch.delenv("TORCHELASTIC_MAX_RESTARTS", raising=False)
    assert preemption.shared_store_warning() is None
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert preemption.shared_store_warning() is None
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    assert f"set {preemption.SHARE_STORE_OFF}=1" in preemption.shared_store_warning()
    monkeypatch.setenv(preemption.SHARE_STORE_OFF, "1")
    assert preemption.shared_store_warning() is None
