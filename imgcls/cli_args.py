"""Flag helpers shared by the train / eval / infer CLIs: the seed's flag spellings and value forms.

Every flag takes ``--flag=value`` and ``--flag value``; list flags take ``--step_epochs 30 60 90``; booleans take the
seed's ``--use_mixup=True`` as well as a bare ``--use_mixup``. Flags whose default depends on the data or the model
default to None here and are filled in by ``fill_defaults`` (explicit flag > built-in dataset > model cfg > seed).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import torch

from imgcls.data.transforms import INTERPOLATIONS, AugConfig

TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}
# A few epochs from scratch: a short warmup (lr 0.1 at step 0 diverges) then the seed's cosine.
BUILTIN_LR_STRATEGY = "cosine_decay_warmup"
BUILTIN_WARMUP_EPOCHS = 1.0
DEFAULT_PREFETCH = 4  # batches read ahead (--reader_buf_size)


def str2bool(text: str | bool) -> bool:
    """'True'/'False' (any case), 1/0, yes/no, on/off."""
    if isinstance(text, bool):
        return text
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def image_shape(text: str) -> tuple[int, int, int]:
    """The seed's '3,224,224' (channels, height, width); only square 3-channel shapes are trained."""
    try:
        c, h, w = (int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W like 3,224,224, got {text!r}") from None
    if c != 3 or h != w or h < 8:
        raise argparse.ArgumentTypeError(f"image_shape must be 3,S,S with S >= 8, got {text!r}")
    return c, h, w


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool | None, help: str) -> None:
    """``--name`` (-> True), ``--name=True|False`` or ``--name False``."""
    parser.add_argument(f"--{name}", type=str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags every CLI shares: the model, the data, the preprocessing and the device."""
    parser.add_argument("--model", default="ShuffleNetV2_swish", help="registered model name (imgcls.models)")
    parser.add_argument("--data_dir", default=None, help="data folder (default ./data/ILSVRC2012/, else built-in)")
    parser.add_argument("--pretrained_model", default=None, help="weights: checkpoint dir, .pt/.pth, Paddle tar")
    parser.add_argument("--class_dim", type=positive_int, default=None, help="class count (default: from the data)")
    parser.add_argument("--image_shape", type=image_shape, default=None, help="C,H,W (default: the model's)")
    parser.add_argument("--resize_short_size", type=positive_int, default=None, help="eval resize (default: model's)")
    parser.add_argument("--interpolation", default=None, choices=sorted(INTERPOLATIONS), help="resize method")
    parser.add_argument("--image_mean", type=float, nargs=3, default=None, help="per-channel mean (RGB, 0..1)")
    parser.add_argument("--image_std", type=float, nargs=3, default=None, help="per-channel std (RGB, 0..1)")
    parser.add_argument("--reader", default="auto", choices=["auto", "native", "opencv"], help="image reader")
    parser.add_argument("--reader_thread", type=positive_int, default=None, help="loader workers (default: cores)")
    parser.add_argument("--reader_buf_size", type=positive_int, default=None, help="batches prefetched")
    add_bool(parser, "use_gpu", None, "run on CUDA (default: when a GPU exists)")
    add_bool(parser, "fused", False, "route blocks through the Triton kernels (GPU or TRITON_INTERPRET=1)")


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """Mixed precision and memory layout (train and eval)."""
    add_bool(parser, "amp", False, "autocast: fp16 + GradScaler on CUDA, bf16 on CPU (see --amp_dtype)")
    parser.add_argument("--amp_dtype", default=None, choices=["fp16", "bf16"], help="autocast dtype with --amp")
    add_bool(parser, "channels_last", False, "NHWC memory layout for the model and its inputs")


def fail(message: str) -> NoReturn:
    """A one-line error and exit status 2 (no traceback), for bad flags and unusable data."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def pick_device(use_gpu: bool | None) -> torch.device:
    """CUDA when asked for (or by default when present); a GPU request without CUDA warns once, runs on CPU."""
    has_cuda = torch.cuda.is_available()
    if use_gpu is None:
        use_gpu = has_cuda
    if use_gpu and not has_cuda:
        warnings.warn("imgcls: --use_gpu=True but no CUDA device is available; running on CPU", stacklevel=2)
        return torch.device("cpu")
    return torch.device("cuda" if use_gpu else "cpu")


def first_set(*values):
    """The first value that is not None (the default-precedence rule)."""
    return next((v for v in values if v is not None), None)


def fill_preprocess(args: argparse.Namespace, cfg) -> None:
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
    """The args stored in a training checkpoint's state.pt (for eval/infer defaults); {} for any other file."""
    if not path:
        return {}
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    state_file = folder / "state.pt"
    if not state_file.is_file():
        return {}
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    return dict(state.get("args", {}), label_names=state.get("label_names"))


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


def resolve_data(args: argparse.Namespace):
    """The dataset for ``args.data_dir``; a one-line error and exit 2 when it cannot be used."""
    from imgcls.data import DataError, resolve_dataset

    try:
        return resolve_dataset(args.data_dir, args.class_dim, getattr(args, "total_images", None))
    except DataError as e:
        fail(str(e))


def model_cfg(name: str):
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


def prepare(args: argparse.Namespace, train: bool, seed_defaults: dict | None = None, spec=None, need_data=True):
    """Resolve data (unless given or not needed), model cfg, every layered default and the device
    -> (spec, cfg, device)."""
    cfg = model_cfg(args.model)  # a bad model name fails before any data work
    if spec is None and need_data:
        spec = resolve_data(args)
    args.model = cfg.name
    explicit_size = take_image_shape(args)
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
    return spec, cfg, pick_device(args.use_gpu)


def loader_for(
    args: argparse.Namespace, samples, train: bool, aug, batch_size: int, rank: int = 0, world_size: int = 1
):
    """A loader over ``samples``; ``rank``/``world_size`` give this process its shard (``batch_size`` per rank)."""
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
        prefetch=args.reader_buf_size or DEFAULT_PREFETCH,
        reader=args.reader,
        rank=rank,
        world_size=world_size,
        pin_memory=torch.cuda.is_available() and args.use_gpu is not False,
    )


def build_data(args: argparse.Namespace, spec, aug, rank: int = 0, world_size: int = 1):
    """(train loader, val loader) for a training run; both batch sizes are global (all ranks together).

    Train: each rank reads every world_size-th sample of the epoch's order, batch_size / world_size at a time.
    Val: each rank evaluates every world_size-th image (all of them are read once; the counts are summed).
    """
    if not spec.val:
        fail(f"{spec.root}: the val list is empty; training reports val accuracy every epoch")
    if len(spec.train) < args.batch_size:
        fail(f"--batch_size {args.batch_size} is larger than the {len(spec.train)} train images")
    if args.batch_size % world_size:
        fail(f"--batch_size {args.batch_size} is the global batch and must divide by the {world_size} processes")
    train = loader_for(args, spec.train, True, aug, args.batch_size // world_size, rank, world_size)
    val_batch = -(-args.test_batch_size // world_size)
    val_aug = AugConfig(interpolation=args.interpolation)
    val = loader_for(args, spec.val[rank::world_size], False, val_aug, val_batch)
    return train, val
