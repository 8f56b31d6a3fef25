"""The run config: built once from the flags in the documented order, never changed, saved under its own field
names; checkpoints and exports of the earlier format still load."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from imgcls import checkpoint as ckpt
from imgcls import eval as eval_cli
from imgcls import infer as infer_cli
from imgcls import train as train_cli
from imgcls.cli.layering import build_run_config
from imgcls.config import RunConfig, TrainConfig, from_plain, to_plain
from imgcls.data import PreprocessSpec, builtin
from imgcls.data.transforms import AugConfig
from imgcls.export import InferenceInfo
from imgcls.models import get_model_cfg

MODEL = "ShuffleNetV2_x0_25"
# A checkpoint written by the format-1 code (state.pt holding the CLI's flags under "args"): ShuffleNetV2_x0_25,
# 10 classes, 1 epoch on generate(root, 64, 24), trained with --image_shape 3,32,32 --resize_short_size 40
# --interpolation area --image_mean 0.5 0.4 0.3 --image_std 0.2 0.25 0.3.
FORMAT1 = Path(__file__).parent / "fixtures" / "checkpoint_format1"
# What the format-1 code's eval and infer printed for it on that data (OpenCV reader).
FORMAT1_EVAL_LOSS = 2.2997495333353677
FORMAT1_STAR_TOP3 = [(4, 0.10954), (1, 0.106455), (2, 0.104444)]


def train_flags(*flags: str):
    return train_cli.get_args_parser().parse_args(list(flags))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    builtin.generate(root, 64, 24)
    return root


def test_plain_round_trip_through_torch_and_json(tmp_path):
    spec = PreprocessSpec(40, 46, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), AugConfig(rotate=5.0, interpolation="area"))
    config = build_run_config(train_flags("--image_shape=3,40,40", "--lr=0.3"), train=True, num_classes=7)
    config = RunConfig(**{**vars(config), "preprocess": spec})
    torch.save(to_plain(config), tmp_path / "c.pt")
    assert from_plain(RunConfig, torch.load(tmp_path / "c.pt", weights_only=True)) == config
    assert from_plain(RunConfig, json.loads(json.dumps(to_plain(config)))) == config
    with pytest.raises(ValueError, match="unknown fields"):
        from_plain(TrainConfig, {**to_plain(config.train), "new_knob": 1})


def test_layering_order_and_flags_never_written():
    """flag > saved preprocessing > built-in dataset > model cfg > Paddle's defaults."""
    cfg = get_model_cfg(MODEL)
    args = train_flags()
    before = copy.deepcopy(vars(args))
    paddle = build_run_config(args, train=True, num_classes=10)
    assert vars(args) == before  # read, never written
    assert (paddle.preprocess.input_size, paddle.preprocess.resize_short) == (cfg.input_size, cfg.resize_short)
    assert paddle.preprocess.mean == cfg.mean and paddle.preprocess.interpolation == "linear"
    assert (paddle.batch_size, paddle.train.schedule.lr, paddle.train.schedule.strategy) == (8, 0.1, "piecewise_decay")
    assert paddle.preprocess.aug.lower_scale == 0.08

    class Builtin:
        builtin, root = True, Path("/builtin")

    on_builtin = build_run_config(args, train=True, num_classes=10, dataset=Builtin())
    assert on_builtin.preprocess.input_size == builtin.BUILTIN_IMAGE_SIZE
    assert on_builtin.preprocess.resize_short == round(48 * 256 / 224)  # follows the crop at the model's ratio
    assert (on_builtin.batch_size, on_builtin.train.schedule.lr) == (builtin.BUILTIN_BATCH_SIZE, builtin.BUILTIN_LR)
    explicit = build_run_config(
        train_flags("--batch_size=5", "--image_shape=3,64,64"), train=True, num_classes=10, dataset=Builtin()
    )
    assert (explicit.batch_size, explicit.preprocess.input_size) == (5, 64)

    saved_spec = PreprocessSpec(40, 50, (0.1, 0.2, 0.3), (0.3, 0.3, 0.3), AugConfig(interpolation="area"))
    saved = ckpt.SavedRun(MODEL, 10, saved_spec)
    eval_args = eval_cli.get_args_parser().parse_args([f"--model={MODEL}"])
    evaluated = build_run_config(eval_args, train=False, num_classes=10, dataset=Builtin(), saved=saved)
    assert evaluated.preprocess == saved_spec  # the checkpoint's preprocessing beats the built-in defaults
    flagged = eval_cli.get_args_parser().parse_args(
        [f"--model={MODEL}", "--image_shape=3,32,32", "--image_std", "1", "1", "1"]
    )
    evaluated = build_run_config(flagged, train=False, num_classes=10, saved=saved)
    pre = evaluated.preprocess
    assert (pre.input_size, pre.resize_short, pre.std, pre.mean) == (
        32,
        round(32 * 256 / 224),
        (1, 1, 1),
        (0.1, 0.2, 0.3),
    )


def test_config_is_frozen():
    config = build_run_config(train_flags(), train=True, num_classes=10)
    with pytest.raises(AttributeError):
        config.batch_size = 3
    with pytest.raises(AttributeError):
        config.train.schedule.lr = 3.0


def test_checkpoint_stores_config_fields_not_flags(tiny, tmp_path):
    out = tmp_path / "out"
    flags = [
        f"--model={MODEL}",
        f"--data_dir={tiny}",
        f"--model_save_dir={out}",
        "--reader=opencv",
        "--reader_thread=1",
        "--image_shape=3,32,32",
        "--batch_size=16",
        "--num_epochs=1",
        "--tensorboard=False",
        "--rotate=3",
        "--interpolation=area",
    ]
    train_cli.main(train_flags(*flags))
    state = torch.load(out / MODEL / "0" / "state.pt", weights_only=True)
    assert state["format"] == 2 and "args" not in state
    config = from_plain(RunConfig, state["config"])
    assert config.preprocess.aug == AugConfig(rotate=3.0, lower_scale=0.08, interpolation="area")
    assert config.train.schedule.num_epochs == 1 and config.num_classes == 10
    # eval and infer rebuild that preprocessing from the checkpoint alone
    evaluated = build_run_config(
        eval_cli.get_args_parser().parse_args([f"--model={MODEL}"]),
        train=False,
        num_classes=10,
        saved=ckpt.read_run_info(out / MODEL / "0"),
    )
    assert evaluated.preprocess == config.preprocess


def test_format1_checkpoint_evaluates_as_before(tiny, tmp_path, capsys):
    saved = ckpt.read_run_info(FORMAT1)
    assert saved.model == MODEL and saved.num_classes == 10 and saved.config is None
    assert saved.preprocess == PreprocessSpec(
        32, 40, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), AugConfig(interpolation="area")
    )
    common = [f"--model={MODEL}", f"--pretrained_model={FORMAT1}", "--reader=opencv"]
    result = eval_cli.main(eval_cli.get_args_parser().parse_args([*common, f"--data_dir={tiny}"]))
    assert result["images"] == 24 and result["loss"] == pytest.approx(FORMAT1_EVAL_LOSS, abs=1e-6)
    star = str(tiny / "val" / "star" / "00003.jpg")
    top = infer_cli.main(infer_cli.get_args_parser().parse_args([*common, "--topk=3", "--image", star]))[0][1]
    assert [c for c, _, _ in top] == [c for c, _ in FORMAT1_STAR_TOP3]
    assert [s for _, s, _ in top] == pytest.approx([s for _, s in FORMAT1_STAR_TOP3], abs=2e-6)
    assert top[0][2] == "cross"  # the class names saved with the run


def test_format1_checkpoint_fine_tunes_and_resumes(tiny, tmp_path, capsys):
    base = [
        f"--model={MODEL}",
        f"--data_dir={tiny}",
        "--reader=opencv",
        "--reader_thread=1",
        "--image_shape=3,32,32",
        "--batch_size=16",
        "--tensorboard=False",
    ]
    train_cli.main(
        train_flags(*base, f"--model_save_dir={tmp_path / 'ft'}", "--num_epochs=1", f"--pretrained_model={FORMAT1}")
    )
    assert "loaded" in capsys.readouterr().out
    resumable = tmp_path / "resume" / MODEL / "0"
    shutil.copytree(FORMAT1, resumable)
    train_cli.main(
        train_flags(
            *base, f"--model_save_dir={tmp_path / 'resume'}", "--num_epochs=2", f"--checkpoint={resumable}", "--lr=0.05"
        )
    )
    text = capsys.readouterr().out
    assert "resumed from" in text and "num_epochs 1 -> 2" in text
    assert torch.load(resumable.parent / "1" / "state.pt", weights_only=True)["format"] == 2


def test_export_info_round_trip_and_format1(tmp_path):
    spec = PreprocessSpec(32, 40, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), AugConfig(interpolation="area"))
    info = InferenceInfo(MODEL, 3, spec, ("a", "b", "c"))
    info.save(tmp_path / "inference.json")
    assert InferenceInfo.load(tmp_path / "inference.json") == info
    flat = {
        "model": MODEL,
        "num_classes": 3,
        "input_size": 32,
        "resize_short": 40,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "interpolation": "area",
        "label_names": ["a", "b", "c"],
    }
    (tmp_path / "old.json").write_text(json.dumps(flat))
    assert InferenceInfo.load(tmp_path / "old.json") == info
