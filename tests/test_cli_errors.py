"""What a user meets off the happy path gets one ``error:`` line (exit status 2), or a warning, never a traceback:
unloadable weights, nonsensical flag values, a diverging loss, an input too small for the model, a val set that
cannot be read, a mistyped label, an op without a deterministic kernel, Ctrl-C; and infer reads folders."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from imgcls import eval as eval_cli
from imgcls import infer as infer_cli
from imgcls.cli.layering import build_run_config
from imgcls.models import create_model

from .cli_helpers import MODEL, one_line_error, parse_train, run_train, tiny_shapes, tiny_train
from .conftest import require_native


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    torch.save(create_model(MODEL, num_classes=10).state_dict(), path)
    return path


def broken_files(weights: Path, folder: Path) -> dict[str, Path]:
    """Weights files a download or copy can leave, each with the words its error must use."""
    good = weights.read_bytes()
    files = {
        "empty file": b"",
        "truncated or corrupt torch file": good[: len(good) // 3],
        "not a torch.save file": bytes(range(256)) * 20,
    }
    paths = {}
    for i, (words, content) in enumerate(files.items()):
        paths[words] = folder / f"broken{i}.pt"
        paths[words].write_bytes(content)
    (folder / "tar").mkdir()
    tar = folder / "tar" / "SqueezeNet1_1_pretrained.tar"
    shutil.make_archive(str(tar.with_suffix("")), "tar", folder, ".")
    tar.write_bytes(tar.read_bytes()[:3000])  # cut inside its first member
    paths["truncated or corrupt tar archive"] = tar
    return paths


@pytest.mark.parametrize("cli", ["train", "eval", "infer"])
def test_unloadable_pretrained_model_is_one_line(cli, data, weights, tmp_path, capsys):
    common = [f"--model={MODEL}", f"--data_dir={data}", "--reader=opencv", "--image_shape=3,32,32"]
    for words, path in broken_files(weights, tmp_path).items():
        flags = [*common, f"--pretrained_model={path}"]
        if cli == "train":
            call = lambda f=flags: run_train(*tiny_train(data, tmp_path / "out", *f[2:], "--num_epochs=1"))  # noqa: E731
        else:
            module = eval_cli if cli == "eval" else infer_cli
            call = lambda f=flags, m=module: m.main(m.get_args_parser().parse_args(f))  # noqa: E731
        err = one_line_error(capsys, call)
        assert str(path) in err and words in err, (words, err)


@pytest.mark.parametrize(
    "flag, words",
    [
        ("--lr=-1", "--lr must be a finite number > 0, got -1.0"),
        ("--lr=0", "--lr must be a finite number > 0, got 0.0"),
        ("--lr=nan", "--lr must be a finite number > 0, got nan"),
        ("--lr=inf", "--lr must be a finite number > 0, got inf"),
        ("--l2_decay=-1e-4", "--l2_decay must be a finite number >= 0"),
        ("--momentum_rate=1", "--momentum_rate must be a finite number in [0, 1)"),
        ("--momentum_rate=-0.5", "--momentum_rate must be a finite number in [0, 1)"),
        ("--warm_up_epochs=-1", "--warm_up_epochs must be a finite number >= 0"),
        ("--step_epochs=0", "--step_epochs must be a finite number > 0"),
        ("--decay_rate=1.5", "--decay_rate must be a finite number in (0, 1]"),
        ("--decay_epochs=0", "--decay_epochs must be a finite number > 0"),
        ("--hue=0.7", "--hue must be a finite number in [0, 0.5]"),
        ("--brightness=-0.1", "--brightness must be a finite number >= 0"),
        ("--rotate=nan", "--rotate must be a finite number >= 0"),
    ],
)
def test_nonsensical_values_are_one_line_errors(flag, words, capsys):
    err = one_line_error(capsys, lambda: build_run_config(parse_train(flag), train=True, num_classes=10))
    assert words in err


@pytest.mark.parametrize("flag", ["--image_mean", "--image_std"])
def test_non_finite_mean_or_std_is_one_line(flag, capsys):
    args = parse_train(flag, "0.2", "nan", "0.2")
    err = one_line_error(capsys, lambda: build_run_config(args, train=True, num_classes=10))
    assert f"{flag} must be finite" in err


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--use_label_smoothing", "--label_smoothing_epsilon=1"], "--label_smoothing_epsilon must be"),
        (["--use_mixup", "--mixup_alpha=0"], "--mixup_alpha must be a finite number > 0"),
    ],
)
def test_values_of_switched_on_losses_are_checked(flags, words, capsys):
    err = one_line_error(capsys, lambda: build_run_config(parse_train(*flags), train=True, num_classes=10))
    assert words in err
    build_run_config(parse_train(*flags[1:]), train=True, num_classes=10)  # an unused value is not checked


def test_diverging_loss_names_the_step_and_the_lr(data, tmp_path, capsys):
    err = one_line_error(capsys, lambda: run_train(*tiny_train(data, tmp_path, "--num_epochs=1", "--lr=1e30")))
    assert "the training loss became" in err and "lr 1e+30 there" in err and "lower --lr" in err
    assert "resume with" not in err and "no checkpoint was saved" in err


@pytest.mark.parametrize("cli", ["train", "eval"])
def test_input_too_small_for_the_model_is_one_line_before_any_data(cli, data, weights, tmp_path, capsys):
    flags = ["--model=SqueezeNet1_1", f"--data_dir={data}", "--reader=opencv", "--image_shape=3,16,16"]
    if cli == "train":
        call = lambda: run_train(*flags, f"--model_save_dir={tmp_path}", "--num_epochs=1")  # noqa: E731
    else:
        args = eval_cli.get_args_parser().parse_args([*flags, f"--pretrained_model={weights}"])
        call = lambda: eval_cli.main(args)  # noqa: E731
    err = one_line_error(capsys, call)
    assert "16 px is too small for SqueezeNet1_1: it needs at least 29 px" in err
    assert not (tmp_path / "SqueezeNet1_1").exists()


def test_fixed_size_classifier_says_which_sizes_it_takes(capsys):
    args = parse_train("--model=AlexNet", "--image_shape=3,48,48")
    err = one_line_error(capsys, lambda: build_run_config(args, train=True, num_classes=10))
    assert "AlexNet takes inputs of 223 to 254 px only" in err and "not 48 px" in err
    build_run_config(parse_train("--model=AlexNet", "--image_shape=3,227,227"), train=True, num_classes=10)


def test_infer_classifies_every_image_in_a_folder_recursively(data, weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "nested" / "deeper").mkdir(parents=True)
    images = sorted((data / "val").rglob("*.jpg"))[:3]
    targets = [folder / "b.jpg", folder / "nested" / "a.JPG", folder / "nested" / "deeper" / "c.png"]
    for source, target in zip(images, targets):
        shutil.copy(source, target)  # the extension need not match the content: the decoder reads both
    (folder / "nested" / "notes.txt").write_text("not an image")
    base = [f"--model={MODEL}", f"--pretrained_model={weights}", "--reader=opencv", "--image_shape=3,32,32"]
    results = infer_cli.main(infer_cli.get_args_parser().parse_args([*base, "--image", str(folder)]))
    assert [p for p, _ in results] == sorted(str(t) for t in targets)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    args = infer_cli.get_args_parser().parse_args([*base, "--image", str(tmp_path / "empty")])
    err = one_line_error(capsys, lambda: infer_cli.main(args))
    assert f"--image {tmp_path / 'empty'}: a folder without image files" in err


@pytest.mark.parametrize("reader", ["opencv", "native"])
def test_zero_byte_image_is_reported_as_an_empty_file(reader, data, weights, tmp_path, capsys):
    if reader == "native":
        require_native()
    empty = tmp_path / "empty.jpg"
    empty.touch()
    good = next((data / "val").rglob("*.jpg"))
    base = [f"--model={MODEL}", f"--pretrained_model={weights}", f"--reader={reader}", "--image_shape=3,32,32"]
    results = infer_cli.main(infer_cli.get_args_parser().parse_args([*base, "--image", str(empty), str(good)]))
    assert [p for p, _ in results] == [str(good)]
    assert f"skipped {empty}: ValueError: empty file (0 bytes)" in capsys.readouterr().out


@pytest.mark.parametrize("reader", ["opencv", "native"])
def test_max_image_pixels_flag_reaches_both_readers(reader, data, weights, capsys):
    """--max_image_pixels: an image over it is skipped with its name and size, from eval, infer and train alike."""
    if reader == "native":
        require_native()
    good = next((data / "val").rglob("*.jpg"))
    base = [f"--model={MODEL}", f"--pretrained_model={weights}", f"--reader={reader}", "--image_shape=3,32,32"]
    flags = [*base, "--max_image_pixels=100", "--image", str(good)]
    with pytest.raises(SystemExit) as exit_info:
        infer_cli.main(infer_cli.get_args_parser().parse_args(flags))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and "none of the 1 images" in captured.err
    assert f"skipped {good}:" in captured.out and "over max_pixels 100" in captured.out
    config = build_run_config(parse_train("--max_image_pixels=100", f"--reader={reader}"), train=True, num_classes=3)
    assert config.read.max_pixels == 100


def without_val_images(data: Path, root: Path) -> Path:
    """``data`` with every val list entry pointing at a missing file."""
    shutil.copytree(data, root)
    lines = (root / "val_list.txt").read_text().splitlines()
    (root / "val_list.txt").write_text("".join(f"gone/{line}\n" for line in lines))
    return root


def test_every_val_image_missing_is_an_error_after_the_checkpoint(data, tmp_path, capsys):
    broken = without_val_images(data, tmp_path / "data")
    err = one_line_error(capsys, lambda: run_train(*tiny_train(broken, tmp_path / "out", "--num_epochs=2")))
    assert "epoch 1: none of the 8 val images could be read (8 skipped; e.g. " in err and "gone/" in err
    assert f"resume with --checkpoint {tmp_path / 'out' / MODEL / '0'}" in err  # the training epoch is kept
    flags = [f"--model={MODEL}", f"--data_dir={broken}", "--reader=opencv", f"--pretrained_model={tmp_path / 'out'}"]
    flags[-1] += f"/{MODEL}/0"
    err = one_line_error(capsys, lambda: eval_cli.main(eval_cli.get_args_parser().parse_args(flags)))
    assert "none of the 8 val images" in err


def test_sparse_labels_warn_once(data, tmp_path, capsys):
    """A mistyped label (70 among 0..9) makes 71 classes: training says so in one warning line."""
    from imgcls import train as train_cli

    typo = tmp_path / "typo"
    shutil.copytree(data, typo)
    (typo / "labels.txt").unlink()
    lines = (typo / "train_list.txt").read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " 70"
    (typo / "train_list.txt").write_text("\n".join(lines) + "\n")
    config, _ = train_cli.configure(parse_train(*tiny_train(typo, tmp_path / "out")))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert config.num_classes == 71
    assert warnings == [
        "warning: 60 of the 71 classes have no train image (labels 10-69); the class count comes from the largest "
        "label, 70: is a label mistyped?"
    ]
    train_cli.configure(parse_train(*tiny_train(data, tmp_path / "out")))
    assert "warning" not in capsys.readouterr().err


def test_op_without_a_deterministic_kernel_is_one_line(data, tmp_path, monkeypatch, capsys):
    """--deterministic is enforced: such an op (put_ on CPU) stops the run with the flag to pass; with
    --deterministic=False the same run trains. torch's setting is put back after the run either way."""
    from imgcls import engine

    real_step = engine.train_step

    def step_with_put(*args, **kwargs):
        torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))  # no deterministic kernel
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", step_with_put)
    err = one_line_error(capsys, lambda: run_train(*tiny_train(data, tmp_path / "a", "--num_epochs=1")))
    assert "put_ has no deterministic implementation on cpu" in err and "--deterministic=False" in err
    assert not torch.are_deterministic_algorithms_enabled()
    row = run_train(*tiny_train(data, tmp_path / "b", "--num_epochs=1", "--deterministic=False"))
    assert math.isfinite(row["train_loss"]) and not torch.are_deterministic_algorithms_enabled()


def test_ctrl_c_outside_the_epochs_is_one_line_with_status_130(capsys):
    from imgcls.cli.flags import run_command

    def interrupted_main(args):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        run_command(interrupted_main, eval_cli.get_args_parser(), " while loading", argv=[])
    assert e.value.code == 130
    assert capsys.readouterr().err == "interrupted while loading\n"
