"""The Paddle converter: the LoDTensor format, name mapping, FC transpose, dropout folding, reports, the CLI."""

from __future__ import annotations

import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from imgcls.convert import (
    convert_paddle,
    convert_paddle_checkpoint,
    load_paddle_checkpoint,
    paddle_to_state_dict,
    read_lod_tensor,
    read_paddle_checkpoint,
)
from imgcls.models import create_model, get_model_cfg

from .conftest import REPO


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def lod_tensor_bytes(arr: np.ndarray, packed: bool = False, lod: list[bytes] = ()) -> bytes:
    """Paddle 1.x LoDTensor file bytes for ``arr`` (float32/float64/int64)."""
    dtype_id = {np.float32: 5, np.float64: 6, np.int64: 3}[arr.dtype.type]
    if packed:
        dims = b"".join(_varint(d) for d in arr.shape)
        desc = b"\x08" + _varint(dtype_id) + b"\x12" + _varint(len(dims)) + dims
    else:
        desc = b"\x08" + _varint(dtype_id) + b"".join(b"\x10" + _varint(d) for d in arr.shape)
    head = struct.pack("<IQ", 0, len(lod)) + b"".join(struct.pack("<Q", len(x)) + x for x in lod)
    return head + struct.pack("<Ii", 0, len(desc)) + desc + arr.astype(arr.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_lod_tensor_round_trip(packed: bool, dtype, fresh_seed: int) -> None:
    rng = np.random.default_rng(fresh_seed)
    arr = (rng.standard_normal((3, 1, 5, 2)) * 100).astype(dtype)
    out = read_lod_tensor(lod_tensor_bytes(arr, packed=packed, lod=[b"\0" * 16]))
    assert out.dtype == arr.dtype and np.array_equal(out, arr)


@pytest.mark.parametrize("cut", [3, 20, -1])
def test_truncated_or_padded_tensor_is_an_error(cut: int) -> None:
    data = lod_tensor_bytes(np.ones((4, 4), np.float32))
    bad = data[:cut] if cut > 0 else data + b"\0"
    with pytest.raises(ValueError):
        read_lod_tensor(bad)


def _fake_paddle(model: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random Paddle-layout tensors for ``model``, from its own name map (FC stored [in, out])."""
    rng = np.random.default_rng(seed)
    net = create_model(model)
    names = get_model_cfg(model).paddle_names(net)
    linear = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
    tensors = {}
    for key, value in net.state_dict().items():
        if key in names:
            shape = value.shape[::-1] if key in linear else value.shape
            tensors[names[key]] = rng.standard_normal(tuple(shape)).astype(np.float32)
    return tensors


def test_fc_transpose_and_dropout_fold() -> None:
    tensors = _fake_paddle("AlexNet")
    state = paddle_to_state_dict(tensors, "AlexNet")
    names = get_model_cfg("AlexNet").paddle_names(create_model("AlexNet"))
    for key, pname in names.items():
        arr = tensors[pname]
        expected = arr.T if arr.ndim == 2 else arr
        factor = get_model_cfg("AlexNet").paddle_dropout.get(pname, 1.0)
        assert torch.equal(state[key], torch.from_numpy(np.ascontiguousarray(expected * np.float32(factor)))), key
    assert get_model_cfg("AlexNet").paddle_dropout == {"fc6_weights": 0.5, "fc7_weights": 0.5}


def test_report_missing_and_unused() -> None:
    tensors = _fake_paddle("ShuffleNetV2_x0_25")
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["some_optimizer_moment"] = np.zeros(3, np.float32)
    _, report = convert_paddle(tensors, "ShuffleNetV2_x0_25")
    assert report.unused == ["some_optimizer_moment"]
    assert len(report.missing) == 1 and dropped in report.missing[0]
    with pytest.raises(ValueError, match="missing"):
        paddle_to_state_dict(tensors, "ShuffleNetV2_x0_25")


def _squeezenet_tar(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A 7-class SqueezeNet1_1 Paddle checkpoint as a released tar: one folder, plus a file that is not a tensor."""
    tensors = _fake_paddle("SqueezeNet1_1")
    tensors["conv10_weights"] = tensors["conv10_weights"][:7]
    tensors["conv10_offset"] = tensors["conv10_offset"][:7]
    folder = tmp_path / "SqueezeNet1_1_pretrained"
    folder.mkdir()
    for name, arr in tensors.items():
        (folder / name).write_bytes(lod_tensor_bytes(arr))
    (folder / "README").write_text("not a tensor")
    tar_path = tmp_path / "SqueezeNet1_1_pretrained.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname=folder.name)
    return tar_path, tensors


def test_checkpoint_reader_reports_what_it_skips(tmp_path: Path) -> None:
    """The reader returns the skipped files with the tensors (no state kept between calls); the converter's report
    carries them and the Paddle tensors it could not place, for ``--pretrained_model`` to log."""
    tar_path, tensors = _squeezenet_tar(tmp_path)
    ckpt = load_paddle_checkpoint(tar_path)
    assert set(ckpt.tensors) == set(tensors) and ckpt.skipped == ["README"]
    (tmp_path / "SqueezeNet1_1_pretrained" / "README").unlink()
    clean = load_paddle_checkpoint(tmp_path / "SqueezeNet1_1_pretrained")
    assert clean.skipped == [] and ckpt.skipped == ["README"]  # each read reports its own files
    state, report = convert_paddle_checkpoint(tar_path, "SqueezeNet1_1")
    assert report.skipped == ["README"] and report.unused == [] and report.missing == []
    assert state["classifier.weight"].shape[0] == 7  # class count read from the checkpoint
    with pytest.raises(ValueError, match="another model"):
        convert_paddle_checkpoint(tar_path, "SqueezeNet1_0")


def test_other_class_count_and_cli(tmp_path: Path) -> None:
    """A 7-class Paddle checkpoint in a tar with an extra non-tensor file converts through the CLI; a wrong model
    or name is one ``error:`` line and exit status 2, not a traceback."""
    tar_path, tensors = _squeezenet_tar(tmp_path)
    assert set(read_paddle_checkpoint(tar_path)) == set(tensors)
    out = tmp_path / "sq.pt"
    cmd = [sys.executable, "-m", "imgcls.convert", "--model", "SqueezeNet1_1", "--paddle", str(tar_path)]
    cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    model = create_model("SqueezeNet1_1", num_classes=7)
    model.load_state_dict(torch.load(out), strict=True)
    assert "skipped 1 files that are not Paddle tensors: README" in proc.stdout
    bad = subprocess.run(cmd[:4] + ["SqueezeNet"] + cmd[5:], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "SqueezeNet1_1" in bad.stderr
    wrong = subprocess.run(cmd[:4] + ["SqueezeNet1_0"] + cmd[5:], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.startswith("error: ") and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "does not fit" in wrong.stderr and "Traceback" not in wrong.stderr
