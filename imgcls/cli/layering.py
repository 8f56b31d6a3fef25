"""Flags -> one ``RunConfig``, each setting from the first source that has it, in the order ``imgcls.config``
documents: the flag > (eval/infer) the checkpoint's preprocessing > the built-in dataset's defaults > the model's
config > Paddle's defaults. The parsed flags are read, never written."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable

from imgcls.checkpoint import SavedRun
from imgcls.cli.flags import fail
from imgcls.config import (
    LossConfig,
    OptimizerConfig,
    PrecisionConfig,
    ReadConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)
from imgcls.data import DatasetSpec, PreprocessSpec, builtin
from imgcls.data.shards.order import DEFAULT_SHUFFLE_BUFFER
from imgcls.data.transforms import AugConfig
from imgcls.models import ModelCfg, get_model_cfg

# Paddle's defaults of the training flags whose default may come from the built-in dataset instead.
PADDLE_TRAIN_DEFAULTS = dict(
    batch_size=8, num_epochs=120, lr=0.1, lr_strategy="piecewise_decay", lower_scale=0.08, warm_up_epochs=5.0
)
PADDLE_INTERPOLATION = "linear"
# A few epochs from scratch on the built-in data: a short warmup (lr 0.2 at step 0 diverges), then cosine.
BUILTIN_TRAIN_DEFAULTS = dict(
    batch_size=builtin.BUILTIN_BATCH_SIZE,
    num_epochs=builtin.BUILTIN_EPOCHS,
    lr=builtin.BUILTIN_LR,
    lr_strategy="cosine_decay_warmup",
    warm_up_epochs=1.0,
    lower_scale=builtin.BUILTIN_LOWER_SCALE,
)
# Flags that map one to one onto AugConfig fields.
AUG_FLAGS = "lower_ratio upper_ratio rotate brightness contrast saturation hue".split()
# The values each numeric training flag may take (besides being finite): (in words, test).
AT_LEAST_0 = (">= 0", lambda v: v >= 0)
VALUE_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("> 0", lambda v: v > 0),
    "l2_decay": AT_LEAST_0,
    "momentum_rate": ("in [0, 1)", lambda v: 0 <= v < 1),
    "label_smoothing_epsilon": ("in [0, 1)", lambda v: 0 <= v < 1),
    "mixup_alpha": ("> 0", lambda v: v > 0),
    "warm_up_epochs": AT_LEAST_0,
    "step_epochs": ("> 0", lambda v: v > 0),
    "decay_epochs": ("> 0", lambda v: v > 0),
    "decay_rate": ("in (0, 1]", lambda v: 0 < v <= 1),
    "rotate": AT_LEAST_0,
    "brightness": AT_LEAST_0,
    "contrast": AT_LEAST_0,
    "saturation": AT_LEAST_0,
    "hue": ("in [0, 0.5] (a fraction of a full turn)", lambda v: 0 <= v <= 0.5),
}


def first_set(*values: object) -> object:
    """The first value that is not None (the precedence rule)."""
    return next((v for v in values if v is not None), None)


def model_cfg(name: str) -> ModelCfg:
    """The registered model's config; an unknown name is a one-line error listing close matches."""
    try:
        return get_model_cfg(name)
    except KeyError as e:
        fail(e.args[0])


def explicit_size(args: argparse.Namespace) -> int | None:
    """The input size the flags give (``--crop_size`` / ``--image_shape``, which must agree), or None."""
    shape_size = args.image_shape[1] if args.image_shape else None
    crop = getattr(args, "crop_size", None)
    if crop is not None and shape_size is not None and crop != shape_size:
        fail(f"--crop_size {crop} and --image_shape {','.join(map(str, args.image_shape))} disagree; give one")
    return first_set(crop, shape_size)


def check_values(values: dict[str, float | Iterable[float]]) -> None:
    """A one-line error for the first flag value outside its ``VALUE_RANGES`` range, or not finite."""
    for flag, value in values.items():
        allowed, test = VALUE_RANGES[flag]
        for v in value if isinstance(value, Iterable) else [value]:
            if not (math.isfinite(v) and test(v)):
                fail(f"--{flag} must be a finite number {allowed}, got {v}")


def check_input_size(name: str, size: int, train: bool) -> None:
    """A one-line error when the model cannot take ``size`` px inputs (found on the meta device, before any data)."""
    from imgcls.models.input_size import input_size_problem

    problem = input_size_problem(name, size, train)
    if problem:
        fail(f"{problem} (the input size: --image_shape / --crop_size)")


def build_preprocess(
    args: argparse.Namespace, cfg: ModelCfg, saved: PreprocessSpec | None, builtin_data: bool, train: bool
) -> PreprocessSpec:
    """Input size, resize-short, interpolation, mean/std and (train) augmentation, layered."""
    size = explicit_size(args)
    saved_size = saved if size is None else None  # an explicit size also drops the saved resize-short
    size = first_set(
        size,
        saved_size and saved_size.input_size,
        builtin.BUILTIN_IMAGE_SIZE if builtin_data else None,
        cfg.input_size,
    )
    # Keep the model's resize/crop ratio when the crop size changes (256/224 for most models).
    resize_short = first_set(
        args.resize_short_size, saved_size and saved_size.resize_short, round(size * cfg.resize_short / cfg.input_size)
    )
    if resize_short < size:
        fail(f"--resize_short_size {resize_short} is smaller than the crop size {size}")
    interpolation = first_set(args.interpolation, saved and saved.interpolation, PADDLE_INTERPOLATION)
    if train:
        lower_scale = first_set(args.lower_scale, BUILTIN_TRAIN_DEFAULTS["lower_scale"] if builtin_data else None, 0.08)
        aug_values = {name: getattr(args, name) for name in AUG_FLAGS}
        aug = AugConfig(flip=True, lower_scale=lower_scale, interpolation=interpolation, **aug_values)
        if not 0 < aug.lower_scale <= 1 or not 0 < aug.lower_ratio <= aug.upper_ratio:
            fail("need 0 < lower_scale <= 1 and 0 < lower_ratio <= upper_ratio")
    else:  # eval keeps the augmentation the model was trained with on record (exports carry it on)
        aug = AugConfig(**{**(vars(saved.aug) if saved else {}), "interpolation": interpolation})
    mean = tuple(first_set(args.image_mean, saved and saved.mean, cfg.mean))
    std = tuple(first_set(args.image_std, saved and saved.std, cfg.std))
    if not all(math.isfinite(m) for m in mean):
        fail(f"--image_mean must be finite, got {mean}")
    if not all(math.isfinite(s) and s > 0 for s in std):
        fail(f"--image_std must be finite and positive, got {std}")
    return PreprocessSpec(size, resize_short, mean, std, aug)


def build_train_config(args: argparse.Namespace, builtin_data: bool) -> tuple[int, TrainConfig]:
    """(global batch size, TrainConfig) from the training flags."""
    layers = [BUILTIN_TRAIN_DEFAULTS] if builtin_data else []
    layers.append(PADDLE_TRAIN_DEFAULTS)

    def pick(flag: str) -> object:
        return first_set(getattr(args, flag), *(layer.get(flag) for layer in layers))

    batch_size = pick("batch_size")
    checked = ["l2_decay", "momentum_rate", "step_epochs", "decay_epochs", "decay_rate", *AUG_FLAGS[2:]]
    checked += ["label_smoothing_epsilon"] if args.use_label_smoothing else []
    checked += ["mixup_alpha"] if args.use_mixup else []
    check_values({"lr": pick("lr"), "warm_up_epochs": pick("warm_up_epochs"), **{f: getattr(args, f) for f in checked}})
    schedule = ScheduleConfig(
        pick("lr_strategy"),
        pick("lr"),
        pick("num_epochs"),
        tuple(args.step_epochs),
        pick("warm_up_epochs"),
        args.decay_epochs,
        args.decay_rate,
    )
    loss = LossConfig(
        args.label_smoothing_epsilon if args.use_label_smoothing else 0.0, args.mixup_alpha if args.use_mixup else 0.0
    )
    train = TrainConfig(
        schedule,
        OptimizerConfig(args.momentum_rate, args.l2_decay),
        loss,
        eval_batch_size=first_set(args.test_batch_size, batch_size),
        random_seed=args.random_seed,
        deterministic=args.deterministic,
        sync_bn=args.sync_bn,
        save_dir=args.model_save_dir,
        checkpoint=args.checkpoint,
        save_steps=args.save_steps,
        overwrite=args.overwrite,
        tensorboard=args.tensorboard,
    )
    return batch_size, train


def read_config(args: argparse.Namespace) -> ReadConfig:
    """The reader flags every CLI shares (threads default to the CPU count)."""
    threads = args.reader_thread or os.cpu_count() or 1
    shuffle_buffer = vars(args).get("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER)  # a training flag only
    return ReadConfig(
        args.reader,
        threads,
        args.reader_buf_size,
        args.apply_exif,
        args.max_image_pixels,
        args.dct_scaling,
        shuffle_buffer,
    )


def build_run_config(
    args: argparse.Namespace,
    *,
    train: bool,
    num_classes: int,
    dataset: DatasetSpec | None = None,
    saved: SavedRun | None = None,
) -> RunConfig:
    """The run's config from the parsed flags of ``imgcls.train`` (``train=True``), ``eval`` or ``infer``.

    ``dataset``: the resolved data (its built-in defaults apply when it is the built-in set); ``saved``: what the
    checkpoint of ``--pretrained_model`` says of its run (eval / infer reuse its preprocessing)."""
    cfg = model_cfg(args.model)
    builtin_data = dataset is not None and dataset.builtin
    preprocess = build_preprocess(args, cfg, saved.preprocess if saved else None, builtin_data, train)
    check_input_size(cfg.name, preprocess.input_size, train)
    batch_size, train_config = build_train_config(args, builtin_data) if train else (args.batch_size, None)
    read = read_config(args)
    precision = PrecisionConfig(
        getattr(args, "amp", False), getattr(args, "amp_dtype", None), getattr(args, "channels_last", False)
    )
    return RunConfig(
        model=cfg.name,
        num_classes=num_classes,
        preprocess=preprocess,
        batch_size=batch_size,
        data_dir=str(dataset.root) if dataset is not None else None,
        pretrained_model=args.pretrained_model,
        fused=args.fused,
        read=read,
        precision=precision,
        train=train_config,
    )


# Settings whose change on resume is reported, by flag (the user's word for them), with where each lives.
RESUME_SETTINGS = {
    "batch_size": lambda c: c.batch_size,
    "lr": lambda c: c.train.schedule.lr,
    "lr_strategy": lambda c: c.train.schedule.strategy,
    "num_epochs": lambda c: c.train.schedule.num_epochs,
    "step_epochs": lambda c: list(c.train.schedule.step_epochs),
    "warm_up_epochs": lambda c: c.train.schedule.warm_up_epochs,
    "momentum_rate": lambda c: c.train.optimizer.momentum,
    "l2_decay": lambda c: c.train.optimizer.l2_decay,
    "random_seed": lambda c: c.train.random_seed,
    "amp": lambda c: c.precision.amp,
}


def resume_changes(saved: SavedRun, config: RunConfig) -> list[str]:
    """'flag old -> new' for each RESUME_SETTINGS entry the resumed run changes (the new values apply)."""
    changes = []
    for flag, value_of in RESUME_SETTINGS.items():
        if saved.config is not None and saved.config.train is not None:
            old = value_of(saved.config)
        else:
            old = (saved.legacy_args or {}).get(flag)
        new = value_of(config)
        if old != new:
            changes.append(f"{flag} {old} -> {new}")
    return changes
