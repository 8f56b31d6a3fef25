"""Released weights in one line: the table of Paddle's released weights, ``create_model(name, pretrained=True)``,
and ``--pretrained_model=<Model>`` in train / eval / infer / convert. Weights come from the loopback server of
tests/weights_server.py (real Paddle-written tars), never the internet."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from imgcls import checkpoint as ckpt
from imgcls import eval as eval_cli
from imgcls import infer as infer_cli
from imgcls import train as train_cli
from imgcls.convert import __main__ as convert_cli
from imgcls.convert import convert_paddle_checkpoint
from imgcls.data import IMAGENET_LABELS_PATH, load_labels
from imgcls.models import create_model, get_model_cfg, list_models, model_info
from imgcls.models._registry import IMAGENET_MEAN, IMAGENET_STD, PADDLE_WEIGHTS_HOST

from .conftest import PARITY, SHARED, require_shared
from .test_cli import tiny_train

MODEL = "ShuffleNetV2_x0_25"
TAR = f"{MODEL}_pretrained.tar"
SEED_README = SHARED / "seed" / "README_paddle_image_classification.md"
SEED_ROW = re.compile(r"^\|\[(\w+)\]\((https?)://paddle-imagenet-models-name\.bj\.bcebos\.com/(\w+\.tar)\)\s*\|"
                      r"\s*([\d.]+)%\s*\|\s*([\d.]+)%", re.M)  # fmt: skip


def hand_converted() -> dict[str, torch.Tensor]:
    return convert_paddle_checkpoint(PARITY / "checkpoints" / TAR, MODEL)[0]


def test_the_weights_table_is_the_seed_readme():
    """Every model Paddle links a tar for has that tar, Paddle's accuracy and its URL (https); the one row that
    links another model's tar (ResNeXt101_64x4d -> ResNeXt50_64x4d's) has no weights."""
    rows = SEED_ROW.findall(require_shared(SEED_README).read_text())
    assert len(rows) == 57
    released = []
    for paddle_name, _, tar, top1, top5 in rows:
        info = model_info(paddle_name)
        assert (info["top1"], info["top5"]) == (float(top1), float(top5)), paddle_name
        if tar.startswith(paddle_name.replace("_x1_0", "")):  # the tar of this row's own model
            assert (info["weights"], info["weights_url"]) == (tar, f"{PADDLE_WEIGHTS_HOST}/{tar}")
            released.append(info["name"])
        else:
            assert paddle_name == "ResNeXt101_64x4d" and info["weights"] is None and info["weights_url"] is None
    assert list_models(pretrained=True) == released and len(released) == 56
    assert set(list_models()) - set(released) == {"ResNeXt101_64x4d"}
    assert list_models("ShuffleNetV2*", pretrained=True)[:2] == ["ShuffleNetV2", "ShuffleNetV2_x0_25"]
    info = model_info("InceptionV4")
    assert (info["input_size"], info["resize_short"], info["mean"], info["std"]) == (
        299,
        320,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )


def test_pretrained_true_gives_the_logits_of_the_hand_converted_file(weights_server):
    model = create_model(MODEL, pretrained=True).eval()
    by_hand = create_model(MODEL).eval()
    by_hand.load_state_dict(hand_converted())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), by_hand(x))
    create_model(MODEL, pretrained=True)
    assert len(weights_server.gets(TAR)) == 1  # the second call reads the cache


def test_finetuning_keeps_every_tensor_but_the_classifier_and_says_so(weights_server, capsys):
    model = create_model(MODEL, pretrained=True, num_classes=10)
    want = hand_converted()
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == 10
        else:
            assert torch.equal(value, want[key]), key
    err = capsys.readouterr().err.strip().splitlines()[-1]
    want_line = f"loaded {MODEL}'s weights except the classifier (fc.weight, fc.bias: 1000 -> 10 classes; trained"
    assert err == f"{want_line} from scratch)"


def test_a_model_without_released_weights_fails_before_any_work(weights_server):
    with pytest.raises(ValueError, match="ResNeXt101_64x4d has no released Paddle weights"):
        create_model("ResNeXt101_64x4d", pretrained=True)
    assert weights_server.requests == []


def test_pretrained_model_rule_an_existing_path_wins_then_a_model_name(weights_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = ckpt.save_checkpoint(tmp_path / MODEL, create_model(MODEL, num_classes=10))  # a folder named like it
    assert ckpt.read_weights(MODEL, MODEL)["fc.weight"].shape[0] == 10 and weights_server.requests == []
    own.rename(tmp_path / "elsewhere")
    assert ckpt.read_weights(MODEL, MODEL)["fc.weight"].shape[0] == 1000
    assert len(weights_server.gets(TAR)) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.read_weights("NoSuchNet", MODEL)
    with pytest.raises(ValueError, match="no released Paddle weights"):
        ckpt.read_weights("ResNeXt101_64x4d", MODEL)


# ---- the CLIs --------------------------------------------------------------------------------------------------


def write_images(folder, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def imagenet_like(root) -> str:
    """A list-format dataset whose labels span ImageNet's 1000 classes (two images)."""
    write_images(root / "img", 2)
    (root / "train_list.txt").write_text("img/0.jpg 0\nimg/1.jpg 999\n")
    (root / "val_list.txt").write_text("img/0.jpg 0\nimg/1.jpg 999\n")
    return str(root)


def test_infer_with_a_model_name_prints_imagenet_class_names(weights_server, tmp_path, capsys):
    images = write_images(tmp_path / "images", 2)
    flags = [f"--model={MODEL}", f"--pretrained_model={MODEL}", "--topk=3", "--reader=opencv", "--image", *images]
    results = infer_cli.main(infer_cli.get_args_parser().parse_args(flags))
    names = set(load_labels(IMAGENET_LABELS_PATH))
    assert len(results) == 2 and all(name in names for _, top in results for _, _, name in top)
    shown = capsys.readouterr().out
    assert all(name in shown for _, top in results for _, _, name in top)
    assert len(weights_server.gets(TAR)) == 1


def test_eval_with_a_model_name(weights_server, tmp_path, capsys):
    data = imagenet_like(tmp_path / "data")
    flags = [f"--model={MODEL}", f"--pretrained_model={MODEL}", f"--data_dir={data}", "--reader=opencv"]
    result = eval_cli.main(eval_cli.get_args_parser().parse_args(flags))
    assert result["images"] == 2 and 0 <= result["top1"] <= result["top5"] <= 100
    assert len(weights_server.gets(TAR)) == 1


def test_eval_of_released_weights_follows_paddles_protocol(weights_server, tmp_path, monkeypatch):
    """``--model ResNet50_vd --pretrained_model=ResNet50_vd``: resize short 256, center crop 224, Paddle's mean/std
    (the model cfg's; the released tar carries no preprocessing). The RunConfig is the one eval.main builds."""
    seen = {}

    def capture(config, device):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(eval_cli, "load_for_inference", capture)
    data = imagenet_like(tmp_path / "data")
    flags = ["--model=ResNet50_vd", "--pretrained_model=ResNet50_vd", f"--data_dir={data}"]
    with pytest.raises(SystemExit):
        eval_cli.main(eval_cli.get_args_parser().parse_args(flags))
    config = seen["config"]
    pre = config.preprocess
    assert (config.model, config.pretrained_model, config.num_classes) == ("ResNet50_vd", "ResNet50_vd", 1000)
    assert (pre.input_size, pre.resize_short, pre.mean, pre.std) == (224, 256, IMAGENET_MEAN, IMAGENET_STD)
    cfg = get_model_cfg("ResNet50_vd")
    assert (pre.input_size, pre.resize_short, pre.mean, pre.std) == (
        cfg.input_size,
        cfg.resize_short,
        cfg.mean,
        cfg.std,
    )
    assert weights_server.requests == []  # reading the run record of a model name fetches nothing


def test_train_finetunes_from_a_model_name(weights_server, tmp_path, capsys):
    from imgcls.data.builtin import generate

    data = tmp_path / "shapes"
    data.mkdir()
    generate(data, 16, 4)
    flags = tiny_train(data, tmp_path / "out", f"--pretrained_model={MODEL}", "--num_epochs=1")
    train_cli.main(train_cli.get_args_parser().parse_args(flags))
    out = capsys.readouterr().out
    assert "pretrained classifier has 1000 classes, this model 10: skipped fc.weight, fc.bias" in out
    assert len(weights_server.gets(TAR)) == 1


def test_convert_with_a_model_name_writes_the_released_weights(weights_server, tmp_path, capsys):
    out = tmp_path / "w.pt"
    args = convert_cli.get_args_parser().parse_args(
        ["--model", MODEL, f"--pretrained_model={MODEL}", "--out", str(out)]
    )
    assert convert_cli.main(args) == 0
    want = hand_converted()
    got = torch.load(out, weights_only=True)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    capsys.readouterr()
    args = convert_cli.get_args_parser().parse_args(["--model", "SqueezeNet1_1", "--paddle", MODEL, "--out", str(out)])
    assert convert_cli.main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {MODEL} names {MODEL}'s released weights, but --model is SqueezeNet1_1"
    )


@pytest.mark.parametrize("command", ["eval", "infer", "train", "convert"])
def test_a_failed_fetch_is_one_error_line_and_exit_2(weights_server, tmp_path, capsys, command):
    weights_server.behaviours = ["404"]
    data = imagenet_like(tmp_path / "data")
    common = [f"--model={MODEL}", f"--pretrained_model={MODEL}", "--reader=opencv"]
    if command == "convert":
        args = convert_cli.get_args_parser().parse_args(["--model", MODEL, "--paddle", MODEL, "--out", "x.pt"])
        assert convert_cli.main(args) == 2
    else:
        cli = {"eval": eval_cli, "infer": infer_cli, "train": train_cli}[command]
        extra = {"eval": [f"--data_dir={data}"], "infer": ["--image", f"{data}/img/0.jpg"], "train": []}[command]
        if command == "train":
            extra = [f"--data_dir={data}", f"--model_save_dir={tmp_path / 'out'}", "--batch_size=2", "--num_epochs=1"]
        with pytest.raises(SystemExit) as e:
            cli.main(cli.get_args_parser().parse_args([*common, *extra]))
        assert e.value.code == 2
    # (train on this 2-image, 1000-class set also warns, in one line, that most classes have no image)
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.strip() and not line.startswith("warning: ")]
    assert len(err) == 1 and err[0].startswith("error: ") and "HTTP 404" in err[0] and TAR in err[0], err
