"""Checkpoints: round trip, atomic saves, fine-tuning across a class-count change, exact (bit-for-bit) resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from imgcls import checkpoint as ckpt
from imgcls.models import create_model

MODEL = "ShuffleNetV2_x0_25"


def small_model(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(MODEL, num_classes=num_classes)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_round_trip(tmp_path):
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    state = {"epoch": 3, "step": 40, "optimizer": opt.state_dict(), "rng": ckpt.rng_states(), "args": {"lr": 0.1}}
    target = ckpt.save_checkpoint(tmp_path / MODEL / "3", model, state)
    assert sorted(p.name for p in target.iterdir()) == ["checksums.sha256", "model.pt", "state.pt"]
    weights, loaded = ckpt.load_training_state(target)
    assert_same_weights(weights, model.state_dict())
    assert loaded["epoch"] == 3 and loaded["step"] == 40
    fresh = small_model(seed=1)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    for p in opt.state:
        q = dict(zip(model.parameters(), fresh.parameters()))[p]
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])
    # the weights file alone is a plain state_dict for --pretrained_model (dir or file)
    assert_same_weights(ckpt.read_weights(target, MODEL), model.state_dict())
    assert_same_weights(ckpt.read_weights(target / "model.pt", MODEL), model.state_dict())


def test_rng_states_restore():
    states = ckpt.rng_states()
    a = (torch.rand(3), torch.initial_seed())
    ckpt.restore_rng_states(states)
    assert torch.equal(torch.rand(3), a[0])


def test_crash_between_write_and_rename_keeps_previous(tmp_path, monkeypatch):
    """A kill after the temp folder is written but before the rename: the old checkpoint stays whole."""
    target = tmp_path / "run" / "5"
    old_model = small_model(seed=0)
    ckpt.save_checkpoint(target, old_model, {"epoch": 5})

    def crash(tmp, dest):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ckpt, "publish_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(target, small_model(seed=1), {"epoch": 5})
    weights, state = ckpt.load_training_state(target)
    assert_same_weights(weights, old_model.state_dict())
    assert state["epoch"] == 5
    # the leftover temp folder is hidden and is replaced by the next save
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert leftovers and all(".tmp-" in name for name in leftovers)
    monkeypatch.undo()
    newer = small_model(seed=2)
    ckpt.save_checkpoint(target, newer, {"epoch": 5})
    assert_same_weights(ckpt.load_training_state(target)[0], newer.state_dict())
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_kill_inside_publish_falls_back_to_the_kept_copy(tmp_path, monkeypatch):
    """A kill between the two renames of an overwrite (target moved aside, temp not yet in place): loading finds
    the previous copy, and the next save (of another epoch) puts it back and clears every leftover."""
    target = tmp_path / "run" / "5"
    old_model = small_model(seed=0)
    ckpt.save_checkpoint(target, old_model, {"epoch": 5})
    # a stale temp folder of another process that is dead: it is swept too
    (target.parent / ".4.tmp-999999").mkdir()
    real_replace = ckpt.os.replace
    calls = []

    def killed_after_first_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(target, small_model(seed=1), {"epoch": 5})
    monkeypatch.undo()
    assert len(calls) == 2 and not target.exists()
    weights, state = ckpt.load_training_state(target)
    assert_same_weights(weights, old_model.state_dict())
    assert state["epoch"] == 5
    assert_same_weights(ckpt.read_weights(target / "model.pt", MODEL), old_model.state_dict())
    newer = small_model(seed=2)
    ckpt.save_checkpoint(target.parent / "6", newer, {"epoch": 6})
    assert_same_weights(ckpt.load_training_state(target)[0], old_model.state_dict())
    assert_same_weights(ckpt.load_training_state(target.parent / "6")[0], newer.state_dict())
    assert sorted(p.name for p in target.parent.iterdir()) == ["5", "6"]


class _RunsCodeWhenUnpickled:
    ran: list[str] = []

    def __reduce__(self):
        return (_RunsCodeWhenUnpickled.ran.append, ("unpickled",))


def test_state_loads_as_plain_data_only(tmp_path, capsys):
    """Training states round-trip under weights_only=True; a state.pt holding arbitrary pickled objects is refused
    (eval/infer read state.pt beside any --pretrained_model) and its code never runs."""
    from imgcls.eval import saved_run_of

    model = small_model()
    state = {"epoch": 0, "rng": ckpt.rng_states(), "args": {"lr": 0.1, "image_shape": (3, 32, 32)}}
    target = ckpt.save_checkpoint(tmp_path / "good", model, state)
    _, loaded = ckpt.load_training_state(target)
    ckpt.restore_rng_states(loaded["rng"])  # numpy's state survives as a tensor
    info = ckpt.read_run_info(target)
    assert info.legacy_args == {"lr": 0.1, "image_shape": (3, 32, 32)} and info.preprocess is None

    bad = ckpt.save_checkpoint(tmp_path / "bad", model, {"args": {"lr": _RunsCodeWhenUnpickled()}})
    with pytest.raises(ValueError, match="plain tensors"):
        ckpt.load_training_state(bad)
    with pytest.raises(SystemExit) as e:
        saved_run_of(str(bad / "model.pt"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "plain tensors" in err and "\n" not in err
    assert _RunsCodeWhenUnpickled.ran == []


def test_crash_during_file_write_leaves_no_target(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def dying_save(obj, path, *a, **kw):
        calls.append(path)
        if len(calls) == 2:  # the weights are written, the state is not
            raise OSError("disk full")
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "run" / "0", small_model(), {"epoch": 0})
    assert not (tmp_path / "run" / "0").exists()
    with pytest.raises(FileNotFoundError):
        ckpt.load_training_state(tmp_path / "run" / "0")


def test_finetune_skips_classifier_of_other_class_count(tmp_path):
    source = small_model(num_classes=1000, seed=3)
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    target = small_model(num_classes=10, seed=4)
    fresh_fc = {k: v.clone() for k, v in target.state_dict().items()}
    lines = []
    report = ckpt.load_pretrained(target, path, MODEL, log=lines.append)
    skipped = {k for k, v in source.state_dict().items() if v.shape != fresh_fc[k].shape}
    assert skipped and all(k.endswith(("weight", "bias")) for k in skipped)
    assert "1000 classes, this model 10: skipped" in lines[0]
    for key, value in target.state_dict().items():
        expected = fresh_fc[key] if key in skipped else source.state_dict()[key]
        assert torch.equal(value, expected), key
    assert len(report.loaded) == len(source.state_dict()) - len(skipped)


def test_pretrained_of_another_model_is_an_error(tmp_path):
    other = create_model("MobileNetV2_x0_25", num_classes=10)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError):
        ckpt.load_pretrained(small_model(), tmp_path / "other.pt", MODEL, log=lambda s: None)
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.load_pretrained(small_model(), tmp_path / "missing.pt", MODEL, log=lambda s: None)


def test_finetune_from_a_real_paddle_checkpoint_reports_what_it_did_not_place(parity_dir, tmp_path):
    """A checkpoint Paddle wrote (SqueezeNet1_1, 1000 classes), unpacked, with a stray file added: fine-tuning a
    10-class model loads every tensor but the classifier, says so, and names the file it skipped."""
    import shutil

    from imgcls.convert import paddle_to_state_dict, read_paddle_checkpoint

    folder = tmp_path / "SqueezeNet1_1_pretrained"
    shutil.copytree(parity_dir / "checkpoints" / "SqueezeNet1_1_pretrained", folder)
    (folder / "notes.txt").write_text("not a tensor")
    model = create_model("SqueezeNet1_1", num_classes=10)
    lines: list[str] = []
    report = ckpt.load_pretrained(model, folder, "SqueezeNet1_1", log=lines.append)
    assert any("non-tensor files skipped: notes.txt" in line for line in lines), lines
    assert any("1000 classes, this model 10: skipped" in line for line in lines), lines
    want = paddle_to_state_dict(
        read_paddle_checkpoint(parity_dir / "checkpoints" / "SqueezeNet1_1_pretrained"), "SqueezeNet1_1"
    )
    got = model.state_dict()
    assert len(report.loaded) == len(want) - 2  # all but the classifier's weight and bias
    for key in report.loaded:
        assert torch.equal(got[key], want[key]), key


# ---- exact resume through the real CLI (tiny built-in data, tiny images) ------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from imgcls.data.builtin import generate

    root = tmp_path_factory.mktemp("shapes")
    generate(root, 48, 16)
    return root


def train_args(data: Path, out: Path, *extra: str):
    from imgcls.train import get_args_parser

    flags = [
        f"--model={MODEL}",
        f"--data_dir={data}",
        f"--model_save_dir={out}",
        "--image_shape=3,32,32",
        "--batch_size=16",
        "--num_epochs=2",
        "--lr_strategy=cosine_decay",
        "--lr=0.05",
        "--use_mixup=True",
        "--use_label_smoothing",
        "--reader=opencv",
        "--reader_thread=1",
        "--tensorboard=False",
        *extra,
    ]
    return get_args_parser().parse_args(flags)


def test_resume_is_bit_exact(tiny_data, tmp_path, monkeypatch, capsys):
    """Ctrl-C in epoch 3 (exit status 130, one line naming the checkpoint to resume from), then a resume from it
    (epoch 1's: a later epoch than the first, so a wrongly saved epoch or step shows) gives the weights of the
    uninterrupted run, bit for bit, and trains only the missing epoch."""
    from imgcls import engine, train

    three = "--num_epochs=3"
    train.main(train_args(tiny_data, tmp_path / "straight", three))
    straight = torch.load(tmp_path / "straight" / MODEL / "2" / "model.pt", weights_only=True)

    real_epoch = engine.train_one_epoch
    trained = []

    def killed_in_third_epoch(*a, **kw):
        trained.append(a[4])  # epoch argument
        if a[4] == 2:
            raise KeyboardInterrupt("killed")
        return real_epoch(*a, **kw)

    monkeypatch.setattr(engine, "train_one_epoch", killed_in_third_epoch)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(train_args(tiny_data, tmp_path / "resumed", three))
    checkpoint = tmp_path / "resumed" / MODEL / "1"
    assert e.value.code == 130
    assert (
        capsys.readouterr().err.splitlines()[-1] == f"interrupted in epoch 3/3; resume with --checkpoint {checkpoint}"
    )
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **kw: trained.append(a[4]) or real_epoch(*a, **kw))
    torch.manual_seed(12345)  # a different global RNG state: resume must restore its own
    train.main(train_args(tiny_data, tmp_path / "resumed", three, f"--checkpoint={checkpoint}"))
    assert trained == [0, 1, 2, 2]
    resumed = torch.load(tmp_path / "resumed" / MODEL / "2" / "model.pt", weights_only=True)
    assert_same_weights(resumed, straight)
    with open(tmp_path / "resumed" / MODEL / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
