"""Flag helpers shared by the train / eval / infer CLIs: Paddle's flag spellings and value forms.

Every flag takes ``--flag=value`` and ``--flag value``; list flags take ``--step_epochs 30 60 90``; booleans take
Paddle's ``--use_mixup=True`` as well as a bare ``--use_mixup``. Flags whose default depends on the data or the
model default to None here; ``layering.build_run_config`` resolves them (see ``imgcls.config`` for the order).
Also the CLIs' parser (``ArgumentParser``: a usage error is one line), their one-line messages (``fail``,
``warn``, and ``run_command`` for running out of memory) and the device choice.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import re
import sys
from collections.abc import Callable
from typing import NoReturn

import torch

from imgcls import distributed as dist
from imgcls.data.image_header import DEFAULT_MAX_PIXELS
from imgcls.data.readers import DCT_SCALING_MODES
from imgcls.data.shards.order import DEFAULT_SHUFFLE_BUFFER
from imgcls.data.transforms import INTERPOLATIONS
from imgcls.limits import MAX_INPUT_SIZE

TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}
# --reader_buf_size counts images, as Paddle's (its default there: 2048 samples); data.prefetch_batches turns
# it into whole batches, at least 2 (one read while one is consumed), at most 16 (a Paddle user's 2048 at batch 8 must
# not queue 256 batches). 512 images: 2 batches of 256 at 224 px (~1.2 GB of float32 in flight), 8 of the built-in 64.
DEFAULT_READER_BUF_SIZE = 512
MIN_PREFETCH_BATCHES, MAX_PREFETCH_BATCHES = 2, 16
# cv2's interpolation codes, Paddle's integer --interpolation form.
INTERPOLATION_CODES = {0: "nearest", 1: "linear", 2: "cubic", 3: "area", 4: "lanczos"}


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
    """An integer >= 1 (argparse type)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (argparse type)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def input_side(text: str) -> int:
    """An input size in pixels, 1..MAX_INPUT_SIZE (argparse type)."""
    value = positive_int(text)
    if value > MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INPUT_SIZE} (the readers' limit), got {value}")
    return value


def image_shape(text: str) -> tuple[int, int, int]:
    """Paddle's '3,224,224' (channels, height, width); only square 3-channel shapes of 8..MAX_INPUT_SIZE px."""
    try:
        c, h, w = (int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W like 3,224,224, got {text!r}") from None
    if c != 3 or h != w or not 8 <= h <= MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"image_shape must be 3,S,S with 8 <= S <= {MAX_INPUT_SIZE}, got {text!r}")
    return c, h, w


def interpolation(text: str) -> str:
    """A resize method by name (``linear``) or by Paddle's cv2 code (``1``); returns the name."""
    word = text.strip().lower()
    if word.isdigit() and int(word) in INTERPOLATION_CODES:
        return INTERPOLATION_CODES[int(word)]
    if word in INTERPOLATIONS:
        return word
    codes = ", ".join(f"{k} {v}" for k, v in INTERPOLATION_CODES.items())
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(sorted(INTERPOLATIONS))} or a code ({codes})")


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool | None, help: str) -> None:
    """``--name`` (-> True), ``--name=True|False`` or ``--name False``."""
    parser.add_argument(f"--{name}", type=str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags every CLI shares: the model, the data, the preprocessing and the device."""
    parser.add_argument(
        "--model", default="ShuffleNetV2_swish", help="registered model name (imgcls.models.list_models())"
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="train_list.txt + val_list.txt, or train/<class>/ + val/<class>/ "
        "(default: ./data/ILSVRC2012/ if it exists, else the built-in set)",
    )
    parser.add_argument(
        "--pretrained_model",
        default=None,
        help="weights: a checkpoint folder, model.pt, a .pt/.pth state_dict, a Paddle _pretrained.tar / folder, or a "
        "model name: Paddle's released ImageNet weights of it (downloaded once, then cached)",
    )
    parser.add_argument(
        "--class_dim",
        type=positive_int,
        default=None,
        help="class count (default: from the data; a value that disagrees with it is an error)",
    )
    parser.add_argument(
        "--image_shape",
        type=image_shape,
        default=None,
        help=f"C,H,W of the network input, square, 8 to {MAX_INPUT_SIZE} px (default: the model's, 3,224,224 for most)",
    )
    parser.add_argument(
        "--resize_short_size",
        type=positive_int,
        default=None,
        help="eval: resize the short side to this, then center crop (default: the model's ratio, 256 for 224)",
    )
    parser.add_argument(
        "--interpolation", type=interpolation, default=None, help="resize method: name or cv2 code 0-4 (linear)"
    )
    parser.add_argument(
        "--image_mean",
        type=float,
        nargs=3,
        default=None,
        help="per-channel mean, RGB in 0..1 (default: the model's, ImageNet's)",
    )
    parser.add_argument(
        "--image_std",
        type=float,
        nargs=3,
        default=None,
        help="per-channel std, RGB in 0..1 (default: the model's, ImageNet's)",
    )
    parser.add_argument(
        "--reader",
        default="auto",
        choices=["auto", "native", "opencv"],
        help="native (C++ reader), opencv (reference), auto (native when built)",
    )
    parser.add_argument(
        "--reader_thread", type=positive_int, default=None, help="decode threads (default: the CPU count)"
    )
    parser.add_argument(
        "--reader_buf_size",
        type=positive_int,
        default=DEFAULT_READER_BUF_SIZE,
        help=f"images read ahead (Paddle's unit; its default 2048), kept as whole batches, {MIN_PREFETCH_BATCHES} to "
        f"{MAX_PREFETCH_BATCHES}",
    )
    parser.add_argument(
        "--dct_scaling",
        default="train",
        choices=list(DCT_SCALING_MODES),
        help="where the native reader may decode JPEGs at 1/2..1/8 scale: train (fast training; eval Paddle-exact), "
        "all (eval too: faster, not Paddle's pixels), none (every transform OpenCV's pixels)",
    )
    add_bool(parser, "apply_exif", False, "rotate images by their EXIF orientation tag (default: raw pixels)")
    parser.add_argument(
        "--max_image_pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help="an image whose header claims more pixels is skipped and reported, never decoded (any format, both "
        "readers)",
    )
    add_bool(
        parser, "use_gpu", None, "run on CUDA (default: when a GPU exists; True without one warns once and runs on CPU)"
    )
    add_bool(
        parser,
        "fused",
        False,
        "Triton kernels in the blocks (a GPU, or the CPU with TRITON_INTERPRET=1; "
        "else one warning and the reference path)",
    )


def add_shard_args(parser: argparse.ArgumentParser) -> None:
    """Training from WebDataset tar shards (docs/data.md): where they are, and the shuffle buffer."""
    parser.add_argument(
        "--train_shards",
        default=None,
        help="train tar shards: a brace pattern of paths or http(s) URLs, e.g. 'train-{000000..000146}.tar' "
        "(default: --data_dir's train-*.tar when it holds them)",
    )
    parser.add_argument("--val_shards", default=None, help="val tar shards, as --train_shards")
    parser.add_argument(
        "--shuffle_buffer",
        type=positive_int,
        default=DEFAULT_SHUFFLE_BUFFER,
        help="tar shards: samples held in memory for shuffling (1: shard order only)",
    )


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """Mixed precision and memory layout (train and eval)."""
    add_bool(parser, "amp", False, "mixed precision: fp16 with a GradScaler on CUDA, bf16 on CPU (see --amp_dtype)")
    parser.add_argument(
        "--amp_dtype",
        default=None,
        choices=["fp16", "bf16"],
        help="autocast dtype with --amp (default: fp16 on CUDA, bf16 on CPU)",
    )
    add_bool(parser, "channels_last", False, "NHWC memory layout for the model and its inputs")


def fail(message: str) -> NoReturn:
    """A one-line error and exit status 2 (no traceback), for bad flags and unusable data."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """The CLIs' parser: a usage error (a bad value, an unknown flag, a missing one) is one ``error:`` line naming
    ``--help`` (and the flag meant, for a misspelled one), exit status 2, instead of argparse's whole usage."""

    def error(self, message: str) -> NoReturn:
        """argparse's hook for every usage error."""
        unknown = message.removeprefix("unrecognized arguments: ") if message.startswith("unrecognized") else ""
        flags = [word.split("=", 1)[0] for word in unknown.split() if word.startswith("--")]
        meant = [m for flag in flags for m in difflib.get_close_matches(flag, self._option_string_actions, n=1)]
        hint = f" (did you mean {', '.join(meant)}?)" if meant else ""
        fail(f"{message}{hint}; see python -m {self.prog} --help")


def os_error_text(error: OSError) -> str:
    """An OSError's cause in words with its errno name: 'No space left on device (ENOSPC)'."""
    name = errno.errorcode.get(error.errno or 0)
    text = error.strerror or str(error) or type(error).__name__
    return f"{text} ({name})" if name else text


def warn(message: str) -> None:
    """A one-line ``warning: ...`` on stderr, from rank 0 only (every rank would say the same)."""
    dist.print0(f"warning: {message}", file=sys.stderr, flush=True)


INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def interrupted(message: str) -> NoReturn:
    """Ctrl-C: one line on stderr (past a progress bar's unfinished line) and exit status 130, no traceback."""
    if sys.stderr.isatty():
        print(file=sys.stderr)
    dist.print0(f"interrupted{message}", file=sys.stderr, flush=True)
    raise SystemExit(INTERRUPTED_EXIT)


def run_command(
    main: Callable[[argparse.Namespace], object],
    parser: argparse.ArgumentParser,
    message: str,
    argv: list[str] | None = None,
) -> None:
    """A CLI's ``__main__``: ``main`` of the parsed ``argv`` (default: the command line), with Ctrl-C outside what
    ``main`` handles itself turned into ``interrupted(message)``, and an allocation that failed into one line.
    A torchrun worker then exits without the interpreter's shutdown (``distributed.end_worker_process``)."""
    if dist.env_world()[2] <= 1:
        run_main(main, parser, message, argv)
        return
    code: int | str | None = 0
    try:
        run_main(main, parser, message, argv)
    except SystemExit as e:
        code = e.code
    dist.end_worker_process(code)


def run_main(
    main: Callable[[argparse.Namespace], object],
    parser: argparse.ArgumentParser,
    message: str,
    argv: list[str] | None,
) -> None:
    try:
        main(parser.parse_args(argv))
    except KeyboardInterrupt:
        interrupted(message)
    except (MemoryError, torch.OutOfMemoryError) as e:
        out_of_memory(e)
    except RuntimeError as e:
        if "DefaultCPUAllocator" not in str(e):  # torch's CPU allocator raises a plain RuntimeError
            raise
        out_of_memory(e)


def out_of_memory(error: BaseException) -> NoReturn:
    """An allocation that failed: one line with what was asked for, and what asks for less."""
    text = " ".join(str(error).split())
    asked = re.search(r"allocate (\d+) bytes", text)
    if asked:
        text = f"{int(asked.group(1)) / 2**30:.1f} GiB asked for"
    fail(f"out of memory ({text or type(error).__name__}): a smaller --batch_size or --image_shape needs less")


def pick_device(use_gpu: bool | None) -> torch.device:
    """CUDA when asked for (or by default when present); a GPU request without CUDA warns, runs on CPU.

    Each CLI calls this once, so the warning is one line."""
    has_cuda = torch.cuda.is_available()
    if use_gpu is None:
        use_gpu = has_cuda
    if use_gpu and not has_cuda:
        warn("--use_gpu=True but no CUDA device is available; running on CPU")
        return torch.device("cpu")
    return torch.device("cuda" if use_gpu else "cpu")
