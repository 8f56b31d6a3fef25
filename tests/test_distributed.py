"""Data-parallel training on CPU (gloo): 2 processes under torchrun against 1 process with the same global batch.

Why these comparisons are exact (or how close they must be):
- DDP averages the ranks' gradients; with the global batch split in equal halves that is the gradient of the mean
  loss over the whole batch, as one process computes it. BatchNorm is the catch: by default each rank normalizes
  with its own half-batch statistics, so a plain DDP run is *not* the 1-process run. With ``--sync_bn`` (on CPU:
  ``CpuSyncBatchNorm``, differentiable all-reduces) the statistics cover the global batch and the math is the same.
- In float64 the only differences left are summation orders (~1e-16), so per-step losses and the final weights
  must agree to 1e-9 (``test_two_processes_match_one_process_float64``; the worker is this file run by torchrun).
- Through the CLI (float32) the same math differs by rounding, which training then amplifies: two 1-process runs
  that differ only in OMP_NUM_THREADS already differ by ~3e-4 relative in the epoch's mean train loss at
  lr 0.05 on this tiny ShuffleNet. So the CLI comparison uses a small lr (0.002) and a 2e-3 relative tolerance:
  a wrong batch split, unsynchronized BN or un-averaged gradients move the loss by far more (no sync BN: ~1e-2).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgcls import distributed as dist
from imgcls import train as train_cli

REPO = Path(__file__).resolve().parents[1]
MODEL = "ShuffleNetV2_x0_25"
STEPS = 3
GLOBAL_BATCH = 16
TIME_FIELDS = ("images_per_sec", "epoch_time_s")


def torchrun(nproc: int, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc ARGS`` on this machine (gloo, one thread per process)."""
    # --standalone: the rendezvous binds a free port itself (a port picked here could be taken before torchrun binds it)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"torchrun failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """64 train / 24 val images of the built-in shapes set."""
    from imgcls.data.builtin import generate

    root = tmp_path_factory.mktemp("shapes")
    generate(root, 64, 24)
    return root


# ---- the float64 worker: this file, run by torchrun (or called in-process for the 1-process reference) ----------


def run_steps(data_dir: str, out_file: str) -> None:
    """STEPS of momentum SGD in float64 on the loader's shard of each global batch, with synchronized BN.

    Writes (rank 0) the global mean loss of each step and the final weights.
    """
    from imgcls.data import Loader, PreprocessSpec, resolve_dataset
    from imgcls.data.transforms import AugConfig
    from imgcls.losses import training_loss
    from imgcls.models import create_model

    info = dist.init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=10).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    ddp = dist.prepare_ddp(model, info, sync_bn=True)
    spec = resolve_dataset(data_dir, None, None)
    loader = Loader(
        spec.train,
        train=True,
        batch_size=dist.per_rank_batch(GLOBAL_BATCH, info.world_size),
        preprocess=PreprocessSpec(32, 37, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), AugConfig(flip=True, lower_scale=0.5)),
        random_seed=7,
        num_workers=0,
        prefetch=1,
        reader="opencv",
        rank=info.rank,
        world_size=info.world_size,
    )
    losses = []
    for _, (images, labels) in zip(range(STEPS), loader):
        loss, _ = training_loss(ddp(images.double()), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(dist.reduce_sums([loss.item()], info.device)[0] / info.world_size)
    if info.is_main:
        torch.save({"losses": losses, "weights": model.state_dict()}, out_file)
    dist.barrier()
    del ddp
    dist.cleanup()


def test_two_processes_match_one_process_float64(shapes, tmp_path):
    two, one = tmp_path / "two.pt", tmp_path / "one.pt"
    # As a module, not a script path: a script's folder (tests/, with its own kernels/ package) would shadow the
    # repository's kernels/ on sys.path.
    torchrun(2, "-m", "tests.test_distributed", "--worker", str(shapes), str(two))
    run_steps(str(shapes), str(one))
    a, b = torch.load(two), torch.load(one)
    assert len(a["losses"]) == STEPS
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-9)
    for key, value in b["weights"].items():
        torch.testing.assert_close(a["weights"][key], value, rtol=1e-9, atol=1e-10, msg=key)


# ---- the CLI under torchrun -------------------------------------------------------------------------------------


def cli_flags(shapes: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"--model={MODEL}",
        f"--data_dir={shapes}",
        "--reader=opencv",
        "--reader_thread=1",
        "--image_shape=3,32,32",
        f"--batch_size={GLOBAL_BATCH}",
        # A tiny LR: at 32 px ShuffleNet's BN over 1x1 maps makes the path of float32 steps chaotic (a 1e-7 change of
        # the initial weights moves the 4th step's loss by ~2%), so only with small steps do the 1- and 2-process
        # runs differ by rounding alone; the float64 test above checks the steps themselves at a real LR.
        "--lr=1e-5",
        "--lr_strategy=cosine_decay",
        "--tensorboard=False",
        f"--model_save_dir={out}",
        *extra,
    ]


def metrics_rows(out: Path) -> list[dict]:
    with open(out / MODEL / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_torchrun_cli_matches_one_process_and_resumes_at_another_world_size(shapes, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    no_gpu = () if torch.cuda.is_available() else ("--use_gpu=True",)  # a warning that every rank would give
    result = torchrun(2, "-m", "imgcls.train", *cli_flags(shapes, two, "--num_epochs=1", "--sync_bn", *no_gpu))
    assert result.stdout.count("epoch 1/1: train loss") == 1  # only rank 0 prints
    if no_gpu:
        assert result.stderr.count("warning: --use_gpu=True but no CUDA") == 1
    train_cli.main(train_cli.get_args_parser().parse_args(cli_flags(shapes, one, "--num_epochs=1", "--sync_bn")))
    (row2,), (row1,) = metrics_rows(two), metrics_rows(one)
    assert float(row2["train_loss"]) == pytest.approx(float(row1["train_loss"]), rel=2e-5)  # metrics.csv keeps 6 digits
    assert [p.name for p in (two / MODEL).iterdir() if p.is_dir()] == ["0"]  # one checkpoint, no rank copies
    state = torch.load(two / MODEL / "0" / "state.pt", weights_only=True)
    assert state["step"] == 64 // GLOBAL_BATCH  # global steps, not per-rank ones
    assert not any(k.startswith("module.") for k in torch.load(two / MODEL / "0" / "model.pt"))

    # Resume the 2-process checkpoint in 1 process: epoch 1 runs from global step 4 and is logged after epoch 0.
    resume = cli_flags(shapes, two, "--num_epochs=2", f"--checkpoint={two / MODEL / '0'}")
    train_cli.main(train_cli.get_args_parser().parse_args(resume))
    rows = metrics_rows(two)
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0] == row2
    assert torch.load(two / MODEL / "1" / "state.pt", weights_only=True)["step"] == 2 * 64 // GLOBAL_BATCH


# ---- synchronized BN with Paddle's moving statistics ---------------------------------------------------------------

SYNC_BN_BATCH = (8, 3, 5, 4)  # the global batch; each of 2 ranks takes half
SYNC_BN_STEPS = 2


def sync_bn_batch() -> torch.Tensor:
    return torch.randn(SYNC_BN_BATCH, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 1.5 + 0.2


class TorchSyncContract:
    """torch's synchronized BN step (``nn.SyncBatchNorm``'s function, CUDA-only) on CPU over gloo, forward only, to
    its contract: normalize with the global batch statistics; move the running statistics toward the global mean and
    the UNBIASED variance over the global count (``batch_norm_gather_stats_with_counts``)."""

    @staticmethod
    def apply(x, weight, bias, running_mean, running_var, eps, momentum, group, world):
        c = x.shape[1]
        sums = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), x.new_tensor([x.numel() / c])])
        torch.distributed.all_reduce(sums, group=group)
        count = sums[-1]
        mean = sums[:c] / count
        var = sums[c : 2 * c] / count - mean * mean
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var * count / (count - 1))
        shape = (1, c, 1, 1)
        return (x - mean.view(shape)) * torch.rsqrt(var + eps).view(shape) * weight.view(shape) + bias.view(shape)


def run_sync_bn_steps(out_file: str) -> None:
    """SYNC_BN_STEPS of both synchronized BNs on this rank's half of the global batch (torch's CUDA step replaced by
    ``TorchSyncContract``); rank 0 writes its outputs and the running statistics."""
    info = dist.init_distributed(torch.device("cpu"))
    dist.torch_sync_batch_norm = TorchSyncContract  # this worker process only
    half = sync_bn_batch().chunk(info.world_size)[info.rank]
    results = {}
    for cls in (dist.CudaSyncBatchNorm, dist.CpuSyncBatchNorm):
        bn = cls(SYNC_BN_BATCH[1]).double().train()
        outs = [bn(half * (step + 1)).detach() for step in range(SYNC_BN_STEPS)]
        results[cls.__name__] = {"outs": outs, **{k: v.clone() for k, v in bn.state_dict().items()}}
    if info.is_main:
        torch.save(results, out_file)
    dist.barrier()
    dist.cleanup()


def test_sync_bns_move_paddles_statistics_of_the_global_batch(tmp_path):
    """Both synchronized BNs, 2 ranks x half a batch = the zoo's BatchNorm2d on the whole batch in one process: the
    same outputs, and running statistics moved toward the global batch's mean and BIASED variance."""
    from imgcls.layers import BatchNorm2d

    out = tmp_path / "sync_bn.pt"
    torchrun(2, "-m", "tests.test_distributed", "--sync-bn-worker", str(out))
    results = torch.load(out)
    whole = BatchNorm2d(SYNC_BN_BATCH[1]).double().train()
    outs = [whole(sync_bn_batch() * (step + 1)).detach() for step in range(SYNC_BN_STEPS)]
    for name, got in results.items():
        for a, b in zip(got["outs"], outs):
            torch.testing.assert_close(a, b[: SYNC_BN_BATCH[0] // 2], rtol=1e-10, atol=1e-12, msg=name)
        for key, value in whole.state_dict().items():
            torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-12, msg=f"{name} {key}")


def test_cuda_sync_bn_alone_is_the_zoo_bn():
    """Without a process group (one process, eval) CudaSyncBatchNorm is the zoo's BatchNorm2d; the conversion keeps
    the parameter and buffer objects and the state_dict keys."""
    from imgcls.layers import BatchNorm2d
    from imgcls.models import create_model

    model = create_model(MODEL, num_classes=10).double()
    before = {k: v for k, v in [*model.named_parameters(), *model.named_buffers()]}
    reference = create_model(MODEL, num_classes=10).double()
    reference.load_state_dict(model.state_dict())
    dist.convert_cuda_sync_bn(model)
    assert not any(type(m) is BatchNorm2d for m in model.modules())
    after = dict([*model.named_parameters(), *model.named_buffers()])
    assert list(after) == list(before) and all(after[k] is before[k] for k in before)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for train in (True, False):
        model.train(train), reference.train(train)
        torch.testing.assert_close(model(x), reference(x), rtol=1e-12, atol=1e-12)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-12, atol=1e-12, msg=key)


def test_global_batch_must_divide_by_world_size():
    assert dist.per_rank_batch(16, 2) == 8
    with pytest.raises(ValueError, match="global batch"):
        dist.per_rank_batch(15, 2)


def test_same_seed_same_metrics(shapes, tmp_path):
    """--random_seed fixes every source of randomness: two CPU runs log identical metrics (time columns aside)."""
    runs = []
    for name in ("a", "b"):
        flags = cli_flags(shapes, tmp_path / name, "--num_epochs=1", "--lr=0.05", "--use_mixup", "--rotate=10")
        train_cli.main(train_cli.get_args_parser().parse_args(flags))
        runs.append([{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in metrics_rows(tmp_path / name)])
    assert runs[0] == runs[1]
    a = torch.load(tmp_path / "a" / MODEL / "0" / "model.pt")
    b = torch.load(tmp_path / "b" / MODEL / "0" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    run_steps(sys.argv[2], sys.argv[3])
    print(json.dumps({"rank": int(os.environ.get("RANK", 0)), "done": True}))
if __name__ == "__main__" and sys.argv[1:2] == ["--sync-bn-worker"]:
    run_sync_bn_steps(sys.argv[2])


# ---- host-side flags agreed on the CPU ------------------------------------------------------------------------------


def vote_as_under_nccl(rank: int, store_file: str, out_file: str) -> None:
    """One of 2 gloo ranks that reports its backend as NCCL, so ``any_rank`` takes its side group; rank 1 alone raises
    the flag, then neither does."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    torch.distributed.get_backend = lambda group=None: "nccl"  # this spawned process only
    answers = [dist.any_rank(rank == 1), dist.any_rank(False)]
    if rank == 0:
        torch.save({"answers": answers, "side_group": dist._flag_group is not None}, out_file)
    dist.cleanup()


def test_any_rank_agrees_over_a_cpu_group_beside_nccl(tmp_path):
    out = tmp_path / "votes.pt"
    torch.multiprocessing.spawn(vote_as_under_nccl, args=(str(tmp_path / "store"), str(out)), nprocs=2)
    assert torch.load(out) == {"answers": [True, False], "side_group": True}
    assert dist._flag_group is None and dist.any_rank(True) and not dist.any_rank(False)  # a single process


class Exited(Exception):
    """os._exit, recorded instead of ending the test process."""


@pytest.mark.parametrize(
    "outcome, code",
    [(None, 0), (SystemExit(143), 143), (SystemExit(2), 2), (SystemExit("bad"), 1)],
    ids=["finished", "preempted", "usage-error", "message"],
)
def test_a_torchrun_worker_exits_without_the_interpreters_shutdown(monkeypatch, capsys, outcome, code):
    """In a torchrun worker (WORLD_SIZE > 1) every CLI ends through os._exit with its status: the interpreter's
    shutdown could abort the process while gloo's threads free the last collective's tensors. Alone, nothing
    changes: SystemExit goes up as before and a finished run returns."""
    import argparse

    from imgcls.cli.flags import run_command

    calls: list[int] = []

    def fake_exit(status: int) -> None:
        calls.append(status)
        raise Exited

    def main(args: argparse.Namespace) -> None:
        print("done")
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exited):
        run_command(main, argparse.ArgumentParser(), "", argv=[])
    assert calls == [code] and "done" in capsys.readouterr().out
    monkeypatch.delenv("WORLD_SIZE")
    if outcome is None:
        run_command(main, argparse.ArgumentParser(), "", argv=[])
    else:
        with pytest.raises(SystemExit):
            run_command(main, argparse.ArgumentParser(), "", argv=[])
    assert calls == [code]
