"""Usage errors of every CLI are one line naming --help (no 35-line usage); input sizes beyond the readers' limit are
usage errors with both readers; an allocation that fails is one line, not a traceback."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from imgcls.limits import MAX_INPUT_SIZE

from .cli_helpers import one_error_line, run_limited, tiny_shapes

MODULES = {
    "train": "imgcls.train",
    "eval": "imgcls.eval",
    "infer": "imgcls.infer",
    "convert": "imgcls.convert.__main__",
    "benchmark": "imgcls.benchmark",
}


def usage_error(cli: str, flags: list[str], capsys: pytest.CaptureFixture) -> str:
    """Parse ``flags`` with ``cli``'s parser; the error line, checked to be the whole of stderr and exit status 2."""
    parser = importlib.import_module(MODULES[cli]).get_args_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert err.endswith(f"; see python -m imgcls.{cli.replace('.__main__', '')} --help\n"), err
    return err.strip()


@pytest.mark.parametrize(
    "cli, flags, words",
    [
        ("train", ["--batch_size", "0"], "argument --batch_size: must be >= 1, got 0"),
        ("train", ["--num_epochs=0"], "argument --num_epochs: must be >= 1, got 0"),
        ("train", ["--lr_strategy", "cosine"], "argument --lr_strategy: invalid choice: 'cosine' (choose from "),
        (
            "train",
            ["--lr_stratgy=cosine_decay"],
            "unrecognized arguments: --lr_stratgy=cosine_decay (did you mean --lr_strategy?)",
        ),  # fmt: skip
        ("train", ["--use_mixup=maybe"], "argument --use_mixup: expected True or False, got 'maybe'"),
        ("eval", ["--test_batch_size", "0"], "argument --batch_size/--test_batch_size: must be >= 1, got 0"),
        ("eval", ["--reader", "pil"], "argument --reader: invalid choice: 'pil'"),
        ("infer", ["--topk", "x"], "argument --topk: invalid positive_int value: 'x'"),
        ("infer", ["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
        ("convert", ["--model", "SqueezeNet1_1"], "the following arguments are required: --paddle/--pretrained_model"),
        ("convert", ["--class_dim=-3"], "argument --class_dim: must be >= 1, got -3"),
        ("benchmark", ["--steps", "0"], "argument --steps: must be >= 1, got 0"),
    ],
)
def test_a_usage_error_is_one_line_naming_help(cli, flags, words, capsys):
    err = usage_error(cli, flags, capsys)
    assert words in err, err


@pytest.mark.parametrize("cli", ["train", "eval", "infer"])
@pytest.mark.parametrize("side, reader", [(MAX_INPUT_SIZE + 1, "native"), (MAX_INPUT_SIZE + 1, "opencv"),
                                          (100_000, "opencv")])  # fmt: skip
def test_an_input_size_beyond_the_readers_limit_is_a_usage_error(cli, side, reader, capsys):
    err = usage_error(cli, [f"--image_shape=3,{side},{side}", f"--reader={reader}"], capsys)
    assert f"image_shape must be 3,S,S with 8 <= S <= {MAX_INPUT_SIZE}, got '3,{side},{side}'" in err
    if cli == "train":
        err = usage_error(cli, [f"--crop_size={side}", f"--reader={reader}"], capsys)
        assert f"argument --crop_size: must be at most {MAX_INPUT_SIZE} (the readers' limit), got {side}" in err


def test_running_out_of_memory_is_one_line(tmp_path):
    """The eval batch (the 10 val images at 8192 px: 7.5 GiB) cannot be allocated: one line saying so and what asks
    for less, in a subprocess whose address space may grow by 1 GiB only."""
    data = tiny_shapes(tmp_path / "data", num_train=10, num_val=10)
    weights = tmp_path / "w.pt"
    import torch

    from imgcls.models import create_model

    torch.save(create_model("ShuffleNetV2_x0_25", num_classes=10).state_dict(), weights)
    flags = ["--model=ShuffleNetV2_x0_25", f"--pretrained_model={weights}", f"--data_dir={data}", "--reader=opencv"]
    flags += [f"--image_shape=3,{MAX_INPUT_SIZE},{MAX_INPUT_SIZE}", "--batch_size=4096"]
    err = one_error_line(run_limited("imgcls.eval", flags, 1 << 30))
    assert err.startswith("error: out of memory (") and "a smaller --batch_size or --image_shape needs less" in err
    assert "GiB" in err, err


def test_every_cli_uses_the_one_line_parser():
    from imgcls.cli.flags import ArgumentParser

    for module in MODULES.values():
        assert isinstance(importlib.import_module(module).get_args_parser(), ArgumentParser), module
    assert Path(importlib.import_module("imgcls.cli.flags").__file__).name == "flags.py"
