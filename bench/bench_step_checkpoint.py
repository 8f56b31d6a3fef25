"""What a mid-epoch step checkpoint costs: seconds per save (``MidEpoch.save``, what ``--save_steps`` and SIGTERM
run: every random state, ``model.pt`` and ``state.pt`` with the momentum buffers, fsynced, published by rename,
the previous step checkpoint pruned) against one training step of the same model, on one core.

The saved checkpoint is loaded back and compared with the model and optimizer first. Saves and steps alternate,
best of ``--rounds`` each.

    # the table in bench/results/step_checkpoint_cpu.md
    .venv/bin/python -m bench.bench_step_checkpoint --model ShuffleNetV2_swish ResNet50_vd
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_checkpoint import machine_lines
from imgcls import checkpoint as ckpt
from imgcls.cli.layering import build_run_config
from imgcls.cli.mid_epoch import MidEpoch, TrainingParts
from imgcls.cli.preemption import StopRequest
from imgcls.distributed import DistInfo
from imgcls.engine import EpochTally, train_step
from imgcls.models import create_model
from imgcls.optim import build_optimizer
from imgcls.step_checkpoints import step_checkpoints
from imgcls.train import get_args_parser


def saver(model_name: str, run_dir: Path, batch: int) -> tuple[MidEpoch, torch.optim.Optimizer]:
    """A ``MidEpoch`` over a freshly built model and its Momentum optimizer (momentum buffers filled by one step)."""
    args = get_args_parser().parse_args([f"--model={model_name}", f"--batch_size={batch}"])
    config = build_run_config(args, train=True, num_classes=1000)
    model = create_model(model_name)
    optimizer = build_optimizer(model, 0.1, 0.9, 1e-4)
    parts = TrainingParts(config, model, optimizer, None, None, None, run_dir, DistInfo())
    return MidEpoch(parts, None, StopRequest()), optimizer


class Constant:
    """An LR source of one value (``lr_at``)."""

    def lr_at(self, step: int) -> float:
        return 0.01


def measure(model_name: str, rounds: int, batch: int, side: int) -> dict:
    """Best seconds of a save and of a training step; the files' sizes."""
    saves, steps = [], []
    with tempfile.TemporaryDirectory() as root:
        mid, optimizer = saver(model_name, Path(root), batch)
        model = mid.parts.model.train()
        images = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
        labels = torch.arange(batch) % 1000
        tally = EpochTally.fresh(torch.device("cpu"))
        for step in range(rounds):
            start = time.perf_counter()
            train_step(model, images, labels, optimizer, Constant(), step)
            steps.append(time.perf_counter() - start)
            tally.iterations, tally.seen = step + 1, (step + 1) * batch
            start = time.perf_counter()
            path = mid.save(0, 0, step + 1, tally)
            saves.append(time.perf_counter() - start)
        (only,) = step_checkpoints(Path(root))  # the earlier ones pruned
        weights, state = ckpt.load_training_state(path)
        assert only.path == path and state["mid_epoch"]["batch"] == rounds
        assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
        buffers = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
        assert all(torch.equal(a, optimizer.state[p]["momentum_buffer"]) for a, p in zip(buffers, model.parameters()))
        sizes = {name: (path / name).stat().st_size for name in (ckpt.WEIGHTS_FILE, ckpt.STATE_FILE)}
    return dict(save=min(saves), step=min(steps), **sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["ShuffleNetV2_swish", "ResNet50_vd"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="images of the training step timed beside the save")
    parser.add_argument("--side", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_lines())
    print(f"best of {args.rounds}, one thread\n")
    print(
        f"| model | model.pt MB | state.pt MB | seconds per save | one step (batch {args.batch}, {args.side} px) s "
        "| save / step |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.model:
        r = measure(name, args.rounds, args.batch, args.side)
        print(
            f"| {name} | {r['model.pt'] / 1e6:.1f} | {r['state.pt'] / 1e6:.1f} | {r['save']:.3f} | {r['step']:.3f} "
            f"| {r['save'] / r['step']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
