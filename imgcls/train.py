"""Train a model: ``python -m imgcls.train --model ShuffleNetV2_swish [--data_dir D] [flags]`` (Paddle's train.py).

Data parallel: ``torchrun --nproc_per_node N -m imgcls.train ...`` (``--batch_size`` stays the global batch; see
imgcls/distributed.py); ``--amp`` and ``--channels_last`` choose the precision and layout.

Each epoch: a progress bar, one summary line, a metrics.csv row and TensorBoard scalars in
``<model_save_dir>/<model>/``, and a checkpoint ``<model_save_dir>/<model>/<epoch>/`` (model.pt + state.pt) that
``--checkpoint`` resumes exactly and ``--pretrained_model`` fine-tunes from. At the end, curves.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from imgcls import checkpoint as ckpt
from imgcls import distributed as dist
from imgcls import engine
from imgcls.cli.data import resolve_data, train_loaders
from imgcls.cli.flags import add_bool, add_model_args, add_precision_args, fail, pick_device, positive_int
from imgcls.cli.layering import build_run_config, model_cfg, resume_changes
from imgcls.config import RunConfig
from imgcls.data import DatasetSpec
from imgcls.data.loader import NoReadableImageError
from imgcls.metrics import MetricsLog, plot_metrics
from imgcls.optim import LR_STRATEGIES, LRSchedule, build_optimizer, schedule_steps_per_epoch
from imgcls.randomness import seed_everything, torch_epoch_seed


def get_args_parser() -> argparse.ArgumentParser:
    """Paddle's train.py flags (same names and value forms), plus this project's."""
    p = argparse.ArgumentParser("imgcls.train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_args(p)
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
        help="resume exactly from a checkpoint folder <dir>/<model>/<epoch>/ (flags given now win)",
    )
    p.add_argument(
        "--crop_size",
        type=positive_int,
        default=None,
        help="train crop size (default: --image_shape; both given must agree)",
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
    add_bool(p, "deterministic", True, "deterministic algorithms: repeatable runs and exact resume (slower on GPU)")
    add_bool(p, "tensorboard", True, "TensorBoard events in <model_save_dir>/<model>/tb/")
    return p


def configure(args: argparse.Namespace) -> tuple[RunConfig, DatasetSpec]:
    """The run's data and config from the flags; one-line errors for a bad model name (before any data work) or
    unusable data."""
    model_cfg(args.model)
    dataset = resolve_data(args.data_dir, args.class_dim, args.total_images)
    return build_run_config(args, train=True, num_classes=dataset.num_classes, dataset=dataset), dataset


def main(args: argparse.Namespace) -> dict:
    """Train (one process, or one of torchrun's); returns the last epoch's metrics row."""
    info = dist.init_distributed(pick_device(args.use_gpu))
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


def resume(
    config: RunConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> tuple[int, int]:
    """Load ``--checkpoint`` (any world size: weights are unwrapped, steps global); -> (first epoch, its step).
    This run's settings win over the checkpoint's; one note line lists those that differ."""
    train = config.train
    try:
        epoch, step, saved = ckpt.resume_training(
            train.checkpoint, model, optimizer, scaler, train.optimizer.momentum, train.optimizer.l2_decay
        )
    except (OSError, ValueError) as e:
        fail(f"cannot resume {config.model} from --checkpoint {train.checkpoint}: {e}")
    changed = resume_changes(saved, config)
    if changed:
        dist.print0(f"note: resuming with {', '.join(changed)} (checkpoint -> now): the new values apply")
    dist.print0(f"resumed from {train.checkpoint} (epoch {epoch - 1} done, step {step})")
    return epoch, step


def run(config: RunConfig, dataset: DatasetSpec, info: dist.DistInfo) -> dict:
    """The training loop of a config on its data; returns the last epoch's metrics row ({} if none ran)."""
    device, train = info.device, config.train
    try:
        precision = engine.make_precision(config.precision, device)
    except ValueError as e:
        fail(str(e))
    engine.setup_determinism(train.deterministic, device)
    seed_everything(train.random_seed)
    model = prepare_model(config, device)
    train_loader, val_loader = train_loaders(config, dataset, info.rank, info.world_size, device)
    # Paddle's schedule counts ceil(images / global batch) steps per epoch while an epoch runs floor(...) of them
    # (imgcls.optim): its LR boundaries fall on the same iterations here. Every rank runs the same global steps.
    schedule = LRSchedule.from_config(train.schedule, schedule_steps_per_epoch(len(dataset.train), config.batch_size))
    optimizer = build_optimizer(model, train.schedule.lr, train.optimizer.momentum, train.optimizer.l2_decay)
    scaler = engine.make_scaler(precision, device)
    num_epochs = train.schedule.num_epochs
    start_epoch, step = resume(config, model, optimizer, scaler) if train.checkpoint else (0, 0)
    if start_epoch >= num_epochs:
        dist.print0(
            f"nothing to train: {train.checkpoint} has done {start_epoch} epochs and --num_epochs is "
            f"{num_epochs}; pass a larger --num_epochs to train further"
        )
        return {}
    train_model = dist.prepare_ddp(model, info, train.sync_bn)
    run_dir = Path(train.save_dir) / config.model
    log = MetricsLog(run_dir, tensorboard=train.tensorboard, keep_before_epoch=start_epoch) if info.is_main else None
    row = {}
    for epoch in range(start_epoch, num_epochs):
        train_loader.set_epoch(epoch)
        torch.manual_seed(torch_epoch_seed(train.random_seed, epoch, info.rank))
        desc = f"epoch {epoch + 1}/{num_epochs}"
        try:
            stats = engine.train_one_epoch(
                train_model,
                train_loader,
                optimizer,
                schedule,
                epoch,
                device=device,
                start_step=step,
                loss_cfg=train.loss,
                random_seed=train.random_seed,
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
            state = ckpt.training_state(config, optimizer, epoch, step, dataset.label_names, scaler)
            print(f"saved {ckpt.save_checkpoint(run_dir / str(epoch), model, state)}", flush=True)
        dist.barrier()  # no rank starts the next epoch (or exits) before the checkpoint is on disk
    if info.is_main:
        log.close()
        if log.csv_path.exists():
            curves = plot_metrics(log.csv_path, run_dir / "curves.png", config.model)
            print(f"metrics: {log.csv_path}; curves: {curves}")
    return row


def prepare_model(config: RunConfig, device: torch.device) -> torch.nn.Module:
    """The registered model, fine-tuned from ``--pretrained_model`` unless resuming, in the run's layout and device."""
    from imgcls.models import create_model

    model = create_model(config.model, num_classes=config.num_classes, fused=config.fused)
    if config.pretrained_model and not config.train.checkpoint:
        try:
            ckpt.load_pretrained(model, config.pretrained_model, config.model, log=dist.print0)
        except ValueError as e:
            fail(str(e))
    if config.precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
