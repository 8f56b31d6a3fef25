"""Train a model: ``python -m imgcls.train --model ShuffleNetV2_swish [--data_dir D] [flags]`` (Paddle's train.py).

Data parallel: ``torchrun --nproc_per_node N -m imgcls.train ...`` (``--batch_size`` stays the global batch; see
imgcls/distributed.py); ``--amp`` and ``--channels_last`` choose the precision and layout.

Each epoch: a progress bar, one summary line, a metrics.csv row and TensorBoard scalars in
``<model_save_dir>/<model>/``, and a checkpoint ``<model_save_dir>/<model>/<epoch>/`` (model.pt + state.pt) that
``--checkpoint`` resumes exactly and ``--pretrained_model`` fine-tunes from. At the end, curves.png.
``--save_steps N`` adds mid-epoch checkpoints ``steps/epoch<E>-step<S>/``; ``--checkpoint auto`` resumes the run
folder's newest (restarts by torchrun or a scheduler); SIGTERM saves one and exits with status 143.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imgcls import distributed as dist
from imgcls import engine
from imgcls.cli.data import resolve_data, warn_sparse_labels
from imgcls.cli.flags import (
    ArgumentParser,
    add_bool,
    add_model_args,
    add_precision_args,
    add_shard_args,
    fail,
    input_side,
    non_negative_int,
    pick_device,
    positive_int,
    run_command,
)
from imgcls.cli.layering import build_run_config, model_cfg
from imgcls.cli.preemption import claimed_run, warn_shared_store
from imgcls.cli.training_run import Trainer
from imgcls.config import RunConfig
from imgcls.data import DatasetSpec
from imgcls.limits import MAX_INPUT_SIZE
from imgcls.optim import LR_STRATEGIES
from imgcls.randomness import seed_everything


def get_args_parser() -> argparse.ArgumentParser:
    """Paddle's train.py flags (same names and value forms), plus this project's."""
    p = ArgumentParser("imgcls.train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(p)
    add_shard_args(p)
    add_precision_args(p)
    add_bool(
        p,
        "sync_bn",
        False,
        "BN statistics over the global batch (torchrun runs: SyncBatchNorm on GPUs, gloo all-reduces on CPU)",
    )
    p.add_argument(
        "--batch_size", type=positive_int, default=None, help="images per iteration, all processes together (Paddle: 8)"
    )
    p.add_argument(
        "--test_batch_size", type=positive_int, default=None, help="val batch after each epoch (default: --batch_size)"
    )
    p.add_argument("--num_epochs", type=positive_int, default=None, help="epochs (Paddle: 120)")
    p.add_argument(
        "--lr_strategy",
        default=None,
        choices=LR_STRATEGIES,
        help="LR schedule, stepped every iteration (Paddle: piecewise_decay); linear_decay decays to 0 over the whole "
        "run, linear_decay_paddle over the first epoch, as Paddle's program did",
    )
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (Paddle: 0.1)")
    p.add_argument("--l2_decay", type=float, default=1e-4, help="L2 decay on every parameter (Paddle's L2Decay)")
    p.add_argument("--momentum_rate", type=float, default=0.9, help="SGD momentum")
    p.add_argument(
        "--step_epochs",
        type=float,
        nargs="+",
        default=[30, 60, 90],
        help="piecewise_decay boundaries, in epochs (x0.1 at each)",
    )
    p.add_argument(
        "--warm_up_epochs", type=float, default=None, help="linear warmup from 0 of the *_warmup strategies (Paddle: 5)"
    )
    p.add_argument(
        "--decay_epochs",
        type=float,
        default=2.4,
        help="exponential_decay_warmup: decay every this many epochs after warmup",
    )
    p.add_argument("--decay_rate", type=float, default=0.97, help="exponential_decay_warmup: the factor of each decay")
    p.add_argument(
        "--total_images",
        type=positive_int,
        default=None,
        help="train image count (default: from the data; a value that disagrees is an error)",
    )
    p.add_argument(
        "--model_save_dir",
        default="output/",
        help="run folder <dir>/<model>/: checkpoints <epoch>/, metrics.csv, tb/, curves.png",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="resume exactly from a checkpoint folder <dir>/<model>/<epoch>/ or .../steps/epoch<E>-step<S>/ (flags "
        "given now win); auto: the run folder's newest checkpoint if it has one, else start afresh (for restarts by "
        "torchrun or a scheduler; a run of another model or recipe there is an error)",
    )
    p.add_argument(
        "--save_steps",
        type=non_negative_int,
        default=0,
        help="also a mid-epoch checkpoint <dir>/<model>/steps/epoch<E>-step<S>/ every N optimizer steps (0: only "
        "epoch checkpoints; SIGTERM writes one at the next step either way)",
    )
    add_bool(
        p,
        "overwrite",
        False,
        "start afresh in a run folder that holds a previous run: remove its checkpoints, metrics.csv, tb/ and "
        "curves.png first (without it, such a folder is an error unless resuming one of its checkpoints)",
    )
    p.add_argument(
        "--crop_size",
        type=input_side,
        default=None,
        help=f"train crop size, at most {MAX_INPUT_SIZE} px (default: --image_shape; both given must agree)",
    )
    p.add_argument(
        "--lower_scale", type=float, default=None, help="random resized crop: min area fraction (Paddle: 0.08)"
    )
    p.add_argument("--lower_ratio", type=float, default=3.0 / 4.0, help="random resized crop: min aspect ratio")
    p.add_argument("--upper_ratio", type=float, default=4.0 / 3.0, help="random resized crop: max aspect ratio")
    p.add_argument("--rotate", type=float, default=0.0, help="random rotation, max degrees (0: off)")
    for name in ("brightness", "contrast", "saturation", "hue"):
        p.add_argument(f"--{name}", type=float, default=0.0, help=f"{name} jitter strength (0: off)")
    add_bool(p, "use_mixup", False, "mixup: lam ~ Beta(alpha, alpha) per batch")
    p.add_argument("--mixup_alpha", type=float, default=0.2, help="mixup's alpha")
    add_bool(p, "use_label_smoothing", False, "label smoothing")
    p.add_argument("--label_smoothing_epsilon", type=float, default=0.2, help="label smoothing epsilon")
    p.add_argument(
        "--random_seed",
        type=int,
        default=1000,
        help="random seed of initialization, shuffling, augmentation, mixup and dropout",
    )
    add_bool(
        p,
        "deterministic",
        True,
        "deterministic kernels, enforced (an op without one is an error): repeatable runs, exact resume",
    )
    add_bool(p, "tensorboard", True, "TensorBoard events in <model_save_dir>/<model>/tb/")
    return p


def configure(args: argparse.Namespace) -> tuple[RunConfig, DatasetSpec]:
    """The run's data and config from the flags; one-line errors for a bad model name (before any data work) or
    unusable data."""
    model_cfg(args.model)
    dataset = resolve_data(args.data_dir, args.class_dim, args.total_images, args.train_shards, args.val_shards)
    warn_sparse_labels(dataset)
    return build_run_config(args, train=True, num_classes=dataset.num_classes, dataset=dataset), dataset


def main(args: argparse.Namespace) -> dict:
    """Train (one process, or one of torchrun's); returns the last epoch's metrics row."""
    info = dist.init_distributed(pick_device(args.use_gpu))
    warn_shared_store()
    try:
        if not info.is_main:  # rank 0 resolves (maybe generates) the data first
            dist.barrier()
        config, dataset = configure(args)
        if info.is_main:
            dist.barrier()
        row = run(config, dataset, info)
        dist.barrier()  # no rank tears the process group down while another still uses it (gloo aborts then)
        return row
    finally:
        dist.cleanup()


def run(config: RunConfig, dataset: DatasetSpec, info: dist.DistInfo) -> dict:
    """The training run of a config on its data; returns the last epoch's metrics row ({} if none ran).

    Rank 0 holds the run folder (locked, checked writable and free of a previous run, ``--checkpoint auto``
    resolved there) for the whole run."""
    train = config.train
    try:
        precision = engine.make_precision(config.precision, info.device)
    except ValueError as e:
        fail(str(e))
    run_dir = Path(train.save_dir) / config.model
    with claimed_run(config, run_dir, info) as config, engine.deterministic_kernels(train.deterministic, info.device):
        seed_everything(train.random_seed)
        return Trainer(config, dataset, info, precision, run_dir).run()


if __name__ == "__main__":
    run_command(main, get_args_parser(), " before the first epoch; nothing was saved")
