"""The run configuration: every setting of a train / eval / infer run, typed, built once and never changed after.

``imgcls.cli.layering.build_run_config`` makes a ``RunConfig`` from the command line, taking each setting from the
first of these that has it:

1. the flag, when given;
2. (eval / infer) the preprocessing saved in the checkpoint being evaluated;
3. the built-in dataset's defaults, when the built-in dataset is used;
4. the model's config (input size, resize-short size, mean / std: ``imgcls.models.get_model_cfg``);
5. Paddle's defaults (the argparse defaults of the flags).

A checkpoint stores ``to_plain(config)``: these field names, never the CLI's flag spellings. ``from_plain`` reads it
back. Both work for any record here (and ``PreprocessSpec``), nested records included.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass

from imgcls.data.image_header import DEFAULT_MAX_PIXELS
from imgcls.data.preprocess import PreprocessSpec
from imgcls.data.shards.order import DEFAULT_SHUFFLE_BUFFER

T = typing.TypeVar("T")


@dataclass(frozen=True)
class ReadConfig:
    """How images are read: which reader, its threads, how many images to read ahead, EXIF rotation, DCT scaling."""

    reader: str = "auto"
    threads: int = 1
    buffer_images: int = 512  # Paddle's --reader_buf_size unit; the loader keeps whole batches (2..16)
    apply_exif: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS  # an image whose header claims more is skipped, never decoded
    dct_scaling: str = "train"  # where the native reader may decode at 1/2..1/8 (readers.DCT_SCALING_MODES)
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER  # tar shards: samples held for shuffling


@dataclass(frozen=True)
class PrecisionConfig:
    """Mixed precision (``amp_dtype`` None: fp16 on CUDA, bf16 on CPU) and the activation memory layout."""

    amp: bool = False
    amp_dtype: str | None = None
    channels_last: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate strategy and its parameters (``imgcls.optim.LRSchedule``)."""

    strategy: str
    lr: float
    num_epochs: int
    step_epochs: tuple[float, ...] = (30, 60, 90)
    warm_up_epochs: float = 5.0
    decay_epochs: float = 2.4
    decay_rate: float = 0.97


@dataclass(frozen=True)
class OptimizerConfig:
    """Momentum SGD with L2 decay on every parameter, as Paddle's Momentum + L2Decay."""

    momentum: float = 0.9
    l2_decay: float = 1e-4


@dataclass(frozen=True)
class LossConfig:
    """How the training loss is formed: label smoothing epsilon (0 = off), mixup alpha (0 = off)."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """What only training needs."""

    schedule: ScheduleConfig
    optimizer: OptimizerConfig = OptimizerConfig()
    loss: LossConfig = LossConfig()
    eval_batch_size: int = 8  # the val pass after each epoch (global, all processes)
    random_seed: int = 1000
    deterministic: bool = True
    sync_bn: bool = False
    save_dir: str = "output/"
    checkpoint: str | None = None  # resume from this checkpoint folder ("auto": the run folder's newest, if any)
    save_steps: int = 0  # also a mid-epoch checkpoint every this many optimizer steps (0: none)
    overwrite: bool = False  # remove a previous run in the run folder first
    tensorboard: bool = True


@dataclass(frozen=True)
class RunConfig:
    """One run: the model, its data and preprocessing, how it computes; ``train`` is None for eval and infer.

    ``batch_size`` is the global batch of a step (training) or the eval / infer batch."""

    model: str
    num_classes: int
    preprocess: PreprocessSpec
    batch_size: int
    data_dir: str | None = None
    pretrained_model: str | None = None
    fused: bool = False
    read: ReadConfig = ReadConfig()
    precision: PrecisionConfig = PrecisionConfig()
    train: TrainConfig | None = None


def to_plain(record: object) -> dict:
    """A record as nested dicts of plain values (``torch.load(weights_only=True)`` and JSON can hold them)."""
    return dataclasses.asdict(record)


def from_plain(cls: type[T], data: Mapping) -> T:
    """The inverse of ``to_plain``; a key the record lacks is a ValueError (a file from a newer version)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _plain_value(hints[name], value) for name, value in data.items()})


def _plain_value(hint: object, value: object) -> object:
    """``value`` as the type ``hint`` wants: nested records rebuilt, lists back to tuples."""
    if value is None:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    return value
