"""What the CLIs do between parsing and running: resolve the data and the model cfg, layer the defaults (explicit
flag > the checkpoint's run > built-in dataset > model cfg > seed), and build the loaders."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from imgcls import distributed as dist
from imgcls.cli_args import MAX_PREFETCH_BATCHES, MIN_PREFETCH_BATCHES, fail, pick_device, warn
from imgcls.data.transforms import AugConfig

if TYPE_CHECKING:
    from imgcls.data import DatasetSpec, Loader, Sample
    from imgcls.models import ModelCfg

# A few epochs from scratch: a short warmup (lr 0.1 at step 0 diverges) then the seed's cosine.
BUILTIN_LR_STRATEGY = "cosine_decay_warmup"
BUILTIN_WARMUP_EPOCHS = 1.0


def first_set(*values: object) -> object:
    """The first value that is not None (the default-precedence rule)."""
    return next((v for v in values if v is not None), None)


def fill_preprocess(args: argparse.Namespace, cfg: ModelCfg) -> None:
    """Input size, resize-short, mean/std, interpolation: flags (already layered) > model cfg."""
    args.crop_size = first_set(getattr(args, "crop_size", None), cfg.input_size)
    args.image_shape = (3, args.crop_size, args.crop_size)
    # Keep the model's resize/crop ratio when the crop size changes (256/224 for most models).
    args.resize_short_size = first_set(
        args.resize_short_size, round(args.crop_size * cfg.resize_short / cfg.input_size)
    )
    if args.resize_short_size < args.crop_size:
        fail(f"--resize_short_size {args.resize_short_size} is smaller than the crop size {args.crop_size}")
    args.image_mean = tuple(first_set(args.image_mean, cfg.mean))
    args.image_std = tuple(first_set(args.image_std, cfg.std))
    if any(s <= 0 for s in args.image_std):
        fail(f"--image_std must be positive, got {args.image_std}")
    args.interpolation = first_set(args.interpolation, "linear")


def saved_run_args(path: str | None) -> dict:
    """The args (and class names) of the training run beside ``path`` (eval/infer defaults); {} for other files."""
    from imgcls.checkpoint import read_run_info

    if not path:
        return {}
    try:
        return read_run_info(path)
    except ValueError as e:
        warn(f"{e}; using the model's defaults")
        return {}


def take_image_shape(args: argparse.Namespace) -> bool:
    """Fold --image_shape into crop_size (they must agree when both are given); True if either was given."""
    shape_size = args.image_shape[1] if args.image_shape else None
    crop = getattr(args, "crop_size", None)
    if crop is not None and shape_size is not None and crop != shape_size:
        fail(f"--crop_size {crop} and --image_shape {','.join(map(str, args.image_shape))} disagree; give one")
    args.crop_size = first_set(crop, shape_size)
    return args.crop_size is not None


def builtin_defaults(train: bool) -> dict:
    """Defaults that follow the built-in dataset (small images, a few epochs: minutes on a 2-core CPU)."""
    from imgcls.data import builtin

    # resize_short follows the crop at the model's ratio (64 -> 73 for 224/256 models), so no default here.
    out = dict(crop_size=builtin.BUILTIN_IMAGE_SIZE)
    if train:
        out.update(
            batch_size=builtin.BUILTIN_BATCH_SIZE,
            num_epochs=builtin.BUILTIN_EPOCHS,
            lr=builtin.BUILTIN_LR,
            lr_strategy=BUILTIN_LR_STRATEGY,
            warm_up_epochs=BUILTIN_WARMUP_EPOCHS,
            lower_scale=builtin.BUILTIN_LOWER_SCALE,
        )
    return out


def resolve_data(args: argparse.Namespace) -> DatasetSpec:
    """The dataset for ``args.data_dir``; a one-line error and exit 2 when it cannot be used."""
    from imgcls.data import DataError, resolve_dataset

    try:
        return resolve_dataset(args.data_dir, args.class_dim, getattr(args, "total_images", None), log=dist.print0)
    except DataError as e:
        fail(str(e))


def model_cfg(name: str) -> ModelCfg:
    """The registered model's config; an unknown name is a one-line error listing close matches."""
    from imgcls.models import get_model_cfg

    try:
        return get_model_cfg(name)
    except KeyError as e:
        fail(e.args[0])


def apply_defaults(args: argparse.Namespace, *layers: dict) -> None:
    """Fill each flag still None from the first layer that has it (layers in precedence order)."""
    for layer in layers:
        for key, value in layer.items():
            if getattr(args, key, None) is None and value is not None:
                setattr(args, key, value)


def prepare(
    args: argparse.Namespace,
    train: bool,
    seed_defaults: dict | None = None,
    spec: DatasetSpec | None = None,
    need_data: bool = True,
    device: torch.device | None = None,
    saved: dict | None = None,
) -> tuple[DatasetSpec | None, ModelCfg, torch.device]:
    """Resolve data (unless given or not needed), model cfg, every layered default and the device (unless given)
    -> (spec, cfg, device). ``saved``: the checkpoint's run args when the caller already read them (eval/infer)."""
    cfg = model_cfg(args.model)  # a bad model name fails before any data work
    if spec is None and need_data:
        spec = resolve_data(args)
    args.model = cfg.name
    explicit_size = take_image_shape(args)
    if saved is None:
        saved = {} if train else saved_run_args(args.pretrained_model)
    keys = ("image_mean", "image_std", "interpolation") + (() if explicit_size else ("crop_size", "resize_short_size"))
    layers = [{k: saved.get(k) for k in keys}]
    if spec is not None and spec.builtin:
        layers.append(builtin_defaults(train))
    apply_defaults(args, *layers, seed_defaults or {})
    fill_preprocess(args, cfg)
    if spec is not None:
        args.class_dim = spec.num_classes
        if hasattr(args, "total_images"):
            args.total_images = len(spec.train)
    return spec, cfg, device if device is not None else pick_device(args.use_gpu)


def prefetch_batches(buf_images: int, batch_size: int) -> int:
    """--reader_buf_size (images, as the seed) -> whole batches the loader keeps ready, clamped to 2..16."""
    return min(MAX_PREFETCH_BATCHES, max(MIN_PREFETCH_BATCHES, math.ceil(buf_images / batch_size)))


def loader_for(
    args: argparse.Namespace,
    samples: Sequence[Sample],
    train: bool,
    aug: AugConfig,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> Loader:
    """A loader over ``samples``; ``rank``/``world_size`` give this process its shard (``batch_size`` per rank).
    On a CUDA ``device`` the batches arrive there, normalized on the GPU from pinned uint8 batches."""
    from imgcls.data import Loader

    workers = args.reader_thread or os.cpu_count() or 1
    return Loader(
        samples,
        train=train,
        batch_size=batch_size,
        size=args.crop_size,
        resize_short=args.resize_short_size,
        mean=args.image_mean,
        std=args.image_std,
        aug=aug,
        random_seed=getattr(args, "random_seed", 0),
        num_workers=workers,
        prefetch=prefetch_batches(args.reader_buf_size, batch_size),
        reader=args.reader,
        rank=rank,
        world_size=world_size,
        pin_memory=torch.cuda.is_available() and args.use_gpu is not False,
        device=device,
        apply_exif=args.apply_exif,
    )


def build_data(
    args: argparse.Namespace,
    spec: DatasetSpec,
    aug: AugConfig,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> tuple[Loader, Loader]:
    """(train loader, val loader) for a training run; both batch sizes are global (all ranks together).

    Train: each rank reads every world_size-th sample of the epoch's order, batch_size / world_size at a time.
    Val: each rank evaluates every world_size-th image (all of them are read once; the counts are summed).
    """
    if not spec.val:
        fail(f"{spec.root}: the val list is empty; training reports val accuracy every epoch")
    if len(spec.train) < args.batch_size:
        fail(f"--batch_size {args.batch_size} is larger than the {len(spec.train)} train images")
    try:
        per_rank = dist.per_rank_batch(args.batch_size, world_size)
    except ValueError as e:
        fail(str(e))
    train = loader_for(args, spec.train, True, aug, per_rank, rank, world_size, device)
    val_batch = -(-args.test_batch_size // world_size)
    val_aug = AugConfig(interpolation=args.interpolation)
    val = loader_for(args, spec.val[rank::world_size], False, val_aug, val_batch, device=device)
    return train, val
