"""Damaged checkpoints: each save records the sha256 of its files (checksums.sha256) and every read checks them, so
a flipped bit is one error line naming the file, from eval, infer, resume and fine-tuning alike; a state.pt whose
preprocessing cannot be read stops eval and infer (never a guessed preprocessing); checkpoints written without a
manifest still load; torch's warnings never come before the error line."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgcls import checkpoint as ckpt
from imgcls import eval as eval_cli
from imgcls import infer as infer_cli
from imgcls.checksums import MANIFEST_FILE

from .cli_helpers import MODEL, one_line_error, run_train, tiny_shapes, tiny_train

FORMAT1 = Path(__file__).parent / "fixtures" / "checkpoint_format1"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A checkpoint of one epoch (epoch 0) of a tiny training run."""
    out = tmp_path_factory.mktemp("run")
    run_train(*tiny_train(data, out, "--num_epochs=1"))
    return out / MODEL / "0"


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    """A copy of the trained checkpoint, in a run folder of its own, to damage."""
    target = tmp_path / "run" / MODEL / "0"
    shutil.copytree(trained, target)
    return target


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def eval_or_infer(cli: str, data: Path, checkpoint: Path) -> None:
    flags = [f"--model={MODEL}", f"--pretrained_model={checkpoint}", "--reader=opencv", f"--data_dir={data}"]
    if cli == "infer":
        flags += ["--image", str(next((data / "val").rglob("*.jpg")))]
    module = eval_cli if cli == "eval" else infer_cli
    module.main(module.get_args_parser().parse_args(flags))


def test_a_save_records_the_sha256_of_each_file_beside_them(copy):
    assert sorted(p.name for p in copy.iterdir()) == [MANIFEST_FILE, "model.pt", "state.pt"]
    lines = (copy / MANIFEST_FILE).read_text().splitlines()
    want = [f"{hashlib.sha256((copy / name).read_bytes()).hexdigest()}  {name}" for name in ("model.pt", "state.pt")]
    assert lines == want
    check = subprocess.run(["sha256sum", "-c", MANIFEST_FILE], cwd=copy, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.splitlines() == ["model.pt: OK", "state.pt: OK"], check


def damaged_use(use: str, data: Path, checkpoint: Path, tmp_path: Path):
    """A call that loads ``checkpoint`` as ``use`` says."""
    if use in ("eval", "infer"):
        return lambda: eval_or_infer(use, data, checkpoint)
    flag = f"--checkpoint={checkpoint}" if use == "resume" else f"--pretrained_model={checkpoint}"
    folder = checkpoint.parent.parent if use == "resume" else tmp_path / "finetune"
    return lambda: run_train(*tiny_train(data, folder, flag, "--num_epochs=2"))


@pytest.mark.parametrize("use", ["eval", "infer", "resume", "finetune"])
@pytest.mark.parametrize("where", ["zip-header", "middle", "last-byte"])
def test_a_flipped_bit_in_model_pt_is_one_line_naming_it(copy, data, tmp_path, capsys, use, where):
    weights = copy / "model.pt"
    flip(weights, {"zip-header": 0, "middle": weights.stat().st_size // 2, "last-byte": -1}[where])
    err = one_line_error(capsys, damaged_use(use, data, copy, tmp_path))
    assert f"{weights}: its sha256 differs from the one recorded in {MANIFEST_FILE}" in err, err


@pytest.mark.parametrize("use", ["eval", "infer", "resume"])
def test_a_flipped_bit_in_state_pt_is_one_line_naming_it(copy, data, tmp_path, capsys, use):
    state = copy / "state.pt"
    flip(state, state.stat().st_size // 2)
    err = one_line_error(capsys, damaged_use(use, data, copy, tmp_path))
    assert f"{state}: its sha256 differs" in err, err


def test_a_damaged_manifest_is_one_line_naming_it(copy, data, capsys):
    (copy / MANIFEST_FILE).write_text("not a checksum line\n")
    err = one_line_error(capsys, lambda: eval_or_infer("eval", data, copy))
    assert f"{copy / MANIFEST_FILE}:1: not a '<sha256>  <file>' line" in err


def unreadable_state(state: Path) -> None:
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])


def not_a_dict(state: Path) -> None:
    state.unlink()
    torch.save([1, 2, 3], state)


@pytest.mark.parametrize("cli", ["eval", "infer"])
@pytest.mark.parametrize(
    "damage, words",
    [(unreadable_state, "truncated or corrupt torch file"), (not_a_dict, "not a training state")],
    ids=["truncated", "not-a-dict"],
)
def test_a_state_pt_that_cannot_be_read_is_not_evaluated_with_guessed_preprocessing(
    copy, data, capsys, cli, damage, words
):
    """Without a manifest (as written before manifests existed) the damage shows only when state.pt is read."""
    (copy / MANIFEST_FILE).unlink()
    damage(copy / "state.pt")
    err = one_line_error(capsys, lambda: eval_or_infer(cli, data, copy))
    assert str(copy / "state.pt") in err and words in err and "is not guessed" in err, err


def test_checkpoints_without_a_manifest_still_load(copy, data, capsys):
    """The format-1 fixture and a new checkpoint whose manifest is gone: loaded, unchecked."""
    assert not (FORMAT1 / MANIFEST_FILE).exists()
    weights, state = ckpt.load_training_state(FORMAT1)
    assert "fc.weight" in weights and ckpt.read_run_info(FORMAT1).legacy_args["class_dim"] == 10
    assert torch.equal(ckpt.read_weights(FORMAT1, MODEL)["fc.bias"], weights["fc.bias"])
    (copy / MANIFEST_FILE).unlink(missing_ok=True)
    eval_or_infer("eval", data, copy)
    assert "top-1" in capsys.readouterr().out


def test_a_raw_pickle_is_one_line_without_torch_warnings(tmp_path, data):
    """torch warns about the pickle protocol of a file not written by torch.save; the user sees only our line."""
    raw = tmp_path / "raw.pt"
    raw.write_bytes(__import__("pickle").dumps({"fc.weight": [1.0, 2.0]}, protocol=4))
    image = str(next((data / "val").rglob("*.jpg")))
    flags = [f"--model={MODEL}", f"--pretrained_model={raw}", "--reader=opencv", "--image", image]
    run = subprocess.run([sys.executable, "-m", "imgcls.infer", *flags], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert (
        run.stderr
        == f"error: cannot load --pretrained_model {raw}: {raw}: not a torch.save file (unrecognized bytes)\n"
    )
