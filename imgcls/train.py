"""Train a model: ``python -m imgcls.train --model ShuffleNetV2_swish [--data_dir D] [flags]`` (the seed's train.py).

Data parallel: ``torchrun --nproc_per_node N -m imgcls.train ...`` (``--batch_size`` stays the global batch; see
imgcls/distributed.py); ``--amp`` and ``--channels_last`` choose the precision and layout.

Each epoch: a progress bar, one summary line, a metrics.csv row and TensorBoard scalars in
``<model_save_dir>/<model>/``, and a checkpoint ``<model_save_dir>/<model>/<epoch>/`` (model.pt + state.pt) that
``--checkpoint`` resumes exactly and ``--pretrained_model`` fine-tunes from. At the end, curves.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from imgcls import checkpoint as ckpt
from imgcls import cli_setup as cli
from imgcls import distributed as dist
from imgcls import engine
from imgcls.cli_args import add_bool, add_model_args, add_precision_args, fail, pick_device, positive_int
from imgcls.data.loader import NoReadableImageError
from imgcls.data.transforms import AugConfig, sample_seed
from imgcls.engine import train_one_epoch
from imgcls.metrics import MetricsLog, plot_metrics
from imgcls.optim import LR_STRATEGIES, LRSchedule, build_optimizer

if TYPE_CHECKING:
    from torch.amp import GradScaler

    from imgcls.data import DatasetSpec
    from imgcls.models import ModelCfg

# Seed defaults for flags whose default may come from the built-in dataset instead (see cli_setup.prepare).
SEED_DEFAULTS = dict(
    batch_size=8, num_epochs=120, lr=0.1, lr_strategy="piecewise_decay", lower_scale=0.08, warm_up_epochs=5.0
)
# Flags that map one to one onto AugConfig fields.
AUG_FLAGS = "lower_scale lower_ratio upper_ratio rotate brightness contrast saturation hue interpolation".split()
SEED_MASK = (1 << 63) - 1
TORCH_SALT = 0x746F726368  # "torch": the per-epoch torch seed stream (dropout, etc.)


def get_args_parser() -> argparse.ArgumentParser:
    """The seed's train.py flags (same names and value forms), plus this project's."""
    p = argparse.ArgumentParser("imgcls.train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(p)
    add_precision_args(p)
    add_bool(p, "sync_bn", False, "synchronize BN statistics across processes (torchrun runs)")
    p.add_argument("--batch_size", type=positive_int, default=None, help="images per iteration, all devices (8)")
    p.add_argument("--test_batch_size", type=positive_int, default=None, help="eval batch (default: batch_size)")
    p.add_argument("--num_epochs", type=positive_int, default=None, help="epochs (seed: 120)")
    p.add_argument("--lr_strategy", default=None, choices=LR_STRATEGIES, help="LR schedule (piecewise_decay)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (0.1)")
    p.add_argument("--l2_decay", type=float, default=1e-4, help="L2 weight decay on all parameters")
    p.add_argument("--momentum_rate", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--step_epochs", type=float, nargs="+", default=[30, 60, 90], help="piecewise_decay boundaries")
    p.add_argument("--warm_up_epochs", type=float, default=None, help="warmup epochs of the *_warmup strategies (5)")
    p.add_argument("--decay_epochs", type=float, default=2.4, help="exponential_decay_warmup decay period")
    p.add_argument("--decay_rate", type=float, default=0.97, help="exponential_decay_warmup decay factor")
    p.add_argument("--total_images", type=positive_int, default=None, help="train images (checked against data)")
    p.add_argument("--model_save_dir", default="output/", help="checkpoints go to <dir>/<model>/<epoch>/")
    p.add_argument("--checkpoint", default=None, help="resume from a checkpoint dir (output/<model>/<epoch>/)")
    p.add_argument("--crop_size", type=positive_int, default=None, help="train crop size (default: image_shape)")
    p.add_argument("--lower_scale", type=float, default=None, help="random crop min area fraction (0.08)")
    p.add_argument("--lower_ratio", type=float, default=3.0 / 4.0, help="random crop min aspect ratio")
    p.add_argument("--upper_ratio", type=float, default=4.0 / 3.0, help="random crop max aspect ratio")
    p.add_argument("--rotate", type=float, default=0.0, help="random rotation, max degrees (0 = off)")
    for name in ("brightness", "contrast", "saturation", "hue"):
        p.add_argument(f"--{name}", type=float, default=0.0, help=f"{name} jitter strength (0 = off)")
    add_bool(p, "use_mixup", False, "mixup training")
    p.add_argument("--mixup_alpha", type=float, default=0.2, help="mixup Beta(alpha, alpha)")
    add_bool(p, "use_label_smoothing", False, "label smoothing")
    p.add_argument("--label_smoothing_epsilon", type=float, default=0.2, help="label smoothing epsilon")
    p.add_argument("--random_seed", type=int, default=1000, help="seed of shuffling, crops, mixup, init")
    add_bool(p, "deterministic", True, "deterministic algorithms (exact resume; slower on GPU)")
    add_bool(p, "tensorboard", True, "write TensorBoard events to <model_save_dir>/<model>/tb/")
    return p


def resume(
    args: argparse.Namespace, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: GradScaler | None
) -> tuple[int, int]:
    """Load ``--checkpoint`` (any world size: weights are unwrapped, steps global); -> (first epoch, its step).
    The flags given now win over the checkpoint's; one note line lists those that differ."""
    try:
        epoch, step, changed = ckpt.resume_training(args.checkpoint, model, optimizer, scaler, vars(args))
    except (OSError, ValueError) as e:
        fail(f"cannot resume {args.model} from --checkpoint {args.checkpoint}: {e}")
    if changed:
        dist.print0(f"note: resuming with {', '.join(changed)} (checkpoint -> now): the new values apply")
    dist.print0(f"resumed from {args.checkpoint} (epoch {epoch - 1} done, step {step})")
    return epoch, step


def main(args: argparse.Namespace) -> dict:
    """Train (one process, or one of torchrun's); returns the last epoch's metrics row."""
    info = dist.init_distributed(pick_device(args.use_gpu))
    try:
        if not info.is_main:  # rank 0 resolves (maybe generates) the data first
            dist.barrier()
        spec, cfg, _ = cli.prepare(args, train=True, seed_defaults=SEED_DEFAULTS, device=info.device)
        if info.is_main:
            dist.barrier()
        row = run(args, spec, cfg, info)
        dist.barrier()  # no rank tears the process group down while another still uses it (gloo aborts then)
        return row
    finally:
        dist.cleanup()


def run(args: argparse.Namespace, spec: DatasetSpec, cfg: ModelCfg, info: dist.DistInfo) -> dict:
    """The training loop on prepared args and data; returns the last epoch's metrics row ({} if none ran)."""
    device = info.device
    args.test_batch_size = cli.first_set(args.test_batch_size, args.batch_size)
    if not 0 < args.lower_scale <= 1 or not 0 < args.lower_ratio <= args.upper_ratio:
        fail("need 0 < lower_scale <= 1 and 0 < lower_ratio <= upper_ratio")
    try:
        precision = engine.make_precision(args.amp, args.amp_dtype, args.channels_last, device)
    except ValueError as e:
        fail(str(e))
    engine.setup_determinism(args.deterministic, device)
    engine.seed_everything(args.random_seed)
    model = prepare_model(args, cfg, spec.num_classes, device)
    aug = AugConfig(flip=True, **{name: getattr(args, name) for name in AUG_FLAGS})
    train_loader, val_loader = cli.build_data(args, spec, aug, info.rank, info.world_size, device)
    # Steps per epoch are global: every rank runs the same count, each on its share of the global batch.
    shape = (args.lr_strategy, args.lr, len(train_loader), args.num_epochs, tuple(args.step_epochs))
    schedule = LRSchedule(*shape, args.warm_up_epochs, args.decay_epochs, args.decay_rate)
    optimizer = build_optimizer(model, args.lr, args.momentum_rate, args.l2_decay)
    scaler = engine.make_scaler(precision, device)
    start_epoch, step = resume(args, model, optimizer, scaler) if args.checkpoint else (0, 0)
    if start_epoch >= args.num_epochs:
        dist.print0(
            f"nothing to train: {args.checkpoint} has done {start_epoch} epochs and --num_epochs is "
            f"{args.num_epochs}; pass a larger --num_epochs to train further"
        )
        return {}
    train_model = dist.prepare_ddp(model, info, args.sync_bn)
    run_dir = Path(args.model_save_dir) / cfg.name
    log = MetricsLog(run_dir, tensorboard=args.tensorboard, keep_before_epoch=start_epoch) if info.is_main else None
    loss_cfg = engine.LossConfig(
        args.label_smoothing_epsilon if args.use_label_smoothing else 0.0, args.mixup_alpha if args.use_mixup else 0.0
    )
    row = {}
    for epoch in range(start_epoch, args.num_epochs):
        train_loader.set_epoch(epoch)
        # Dropout and friends: a stream per (epoch, rank), so ranks draw independent masks.
        torch.manual_seed(sample_seed(args.random_seed ^ TORCH_SALT, epoch, info.rank) & SEED_MASK)
        desc = f"epoch {epoch + 1}/{args.num_epochs}"
        try:
            stats = train_one_epoch(
                train_model,
                train_loader,
                optimizer,
                schedule,
                epoch,
                device=device,
                start_step=step,
                loss_cfg=loss_cfg,
                random_seed=args.random_seed,
                desc=desc,
                precision=precision,
                scaler=scaler,
            )
        except (engine.EmptyEpochError, NoReadableImageError) as e:
            bad = train_loader.skipped
            example = f"; e.g. {bad[0][0]}: {bad[0][1]}" if bad else ""
            fail(f"{e} ({len(bad)} skipped{example})")
        step += len(train_loader)
        val = engine.evaluate(model, val_loader, device, desc="  val", precision=precision)
        row = engine.epoch_row(epoch, stats, val)
        dist.print0(f"{desc}: {engine.summary_text(row)}", flush=True)
        warned = dist.gather_lists(train_loader.warned + val_loader.warned)
        engine.report_skipped(dist.gather_lists(train_loader.skipped + val_loader.skipped), warned)
        if info.is_main:
            log.append(row)
            state = ckpt.training_state(vars(args), optimizer, epoch, step, spec.label_names, scaler)
            print(f"saved {ckpt.save_checkpoint(run_dir / str(epoch), model, state)}", flush=True)
        dist.barrier()  # no rank starts the next epoch (or exits) before the checkpoint is on disk
    if info.is_main:
        log.close()
        if log.csv_path.exists():
            print(f"metrics: {log.csv_path}; curves: {plot_metrics(log.csv_path, run_dir / 'curves.png', cfg.name)}")
    return row


def prepare_model(args: argparse.Namespace, cfg: ModelCfg, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The registered model, fine-tuned from ``--pretrained_model`` unless resuming, in the run's layout and device."""
    from imgcls.models import create_model

    model = create_model(cfg.name, num_classes=num_classes, fused=args.fused)
    if args.pretrained_model and not args.checkpoint:
        try:
            ckpt.load_pretrained(model, args.pretrained_model, cfg.name, log=dist.print0)
        except ValueError as e:
            fail(str(e))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
