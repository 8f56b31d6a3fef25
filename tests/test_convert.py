"""The Paddle converter: the LoDTensor format, name mapping, FC transpose, dropout folding, reports, the CLI."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from imgcls.convert import (
    convert_paddle,
    convert_paddle_checkpoint,
    load_paddle_checkpoint,
    paddle_to_state_dict,
    read_lod_tensor,
    read_paddle_checkpoint,
)
from imgcls.models import create_model, get_model_cfg

from .conftest import PARITY, REPO, require_shared


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


def paddle_params(model: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, Paddle shape, kind) of every tensor of ``model``'s Paddle program, from the shared table that Paddle's
    own programs produced (``param_names.tsv.gz``): independent of the name maps under test."""
    rows = []
    with gzip.open(require_shared(PARITY / "param_names.tsv.gz"), "rt") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if line.startswith("#") or fields[0] != model:
                continue
            name, shape, _, kind = fields[1:]
            rows.append((name, tuple(int(d) for d in shape.split(",")), kind))
    assert rows, f"{model} is not in the parameter table"
    return rows


def _fake_paddle(model: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors with the names and Paddle-layout shapes of ``model``'s Paddle program (FC stored [in, out])."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape, _ in paddle_params(model)}


# AlexNet's map, written out by hand: Paddle's conv1..conv5 and fc6..fc8 (weights, offset) onto our Sequentials
# (features: conv, relu[, pool] per layer; classifier: dropout, fc6, relu, dropout, fc7, relu, fc8).
ALEXNET_LAYERS = {
    "features.0": "conv1",
    "features.3": "conv2",
    "features.6": "conv3",
    "features.8": "conv4",
    "features.10": "conv5",
    "classifier.1": "fc6",
    "classifier.4": "fc7",
    "classifier.6": "fc8",
}
# Paddle's AlexNet scales at inference by (1 - dropout) after fc6 and fc7: their weights take the factor.
ALEXNET_DROPOUT = {"fc6_weights": 0.5, "fc7_weights": 0.5}


def test_fc_transpose_and_dropout_fold() -> None:
    tensors = _fake_paddle("AlexNet")
    state = paddle_to_state_dict(tensors, "AlexNet")
    names = {f"{key}.{ours}": f"{layer}_{theirs}" for key, layer in ALEXNET_LAYERS.items()
             for ours, theirs in (("weight", "weights"), ("bias", "offset"))}  # fmt: skip
    assert set(state) == set(names) and set(names.values()) == set(tensors)
    for key, pname in names.items():
        arr = tensors[pname]
        expected = arr.T if arr.ndim == 2 else arr
        factor = ALEXNET_DROPOUT.get(pname, 1.0)
        assert torch.equal(state[key], torch.from_numpy(np.ascontiguousarray(expected * np.float32(factor)))), key
    assert get_model_cfg("AlexNet").paddle_dropout == ALEXNET_DROPOUT


# The parameter table's kind of each of our tensors, by the module that holds it.
KINDS = {
    (nn.Conv2d, "weight"): "conv",
    (nn.Conv2d, "bias"): "bias",
    (nn.Linear, "weight"): "fc",
    (nn.Linear, "bias"): "bias",
    (nn.BatchNorm2d, "weight"): "bn_scale",
    (nn.BatchNorm2d, "bias"): "bias",
    (nn.BatchNorm2d, "running_mean"): "bn_mean",
    (nn.BatchNorm2d, "running_var"): "bn_var",
}


def our_kinds(model: nn.Module) -> dict[str, str]:
    """State-dict key -> the parameter table's kind, from the module type and the tensor's name."""
    kinds = {}
    for prefix, module in model.named_modules():
        for (cls, attr), kind in KINDS.items():
            if isinstance(module, cls) and getattr(module, attr, None) is not None:
                kinds[f"{prefix}.{attr}"] = kind
    return kinds


def source_of(value: torch.Tensor, tensors: dict[str, np.ndarray]) -> list[str]:
    """The Paddle tensors ``value`` was converted from: equal up to a transpose (FC) and a scalar factor (dropout)."""
    got = value.numpy()
    found = []
    for name, arr in tensors.items():
        if arr.size != got.size:
            continue
        for cand in (arr, arr.T) if arr.ndim == 2 else (arr,):
            if cand.shape == got.shape and np.allclose(got, cand * (got.flat[0] / cand.flat[0]), rtol=1e-6, atol=0):
                found.append(name)
    return found


@pytest.mark.parametrize("model", ["ShuffleNetV2_x0_25", "MobileNetV2_x0_25", "SE_ResNeXt50_32x4d", "SqueezeNet1_1"])
def test_every_paddle_tensor_lands_once_on_a_tensor_of_its_kind(model: str) -> None:
    """Each of our tensors comes from exactly one Paddle tensor, of the kind the parameter table gives it (a BN
    mean never filled from a variance, a bias never from a BN scale), and every Paddle tensor is used once."""
    params = paddle_params(model)
    tensors, kinds = _fake_paddle(model, seed=1), {name: kind for name, _, kind in params}
    state = paddle_to_state_dict(tensors, model)
    used = []
    for key, kind in our_kinds(create_model(model)).items():
        sources = source_of(state[key], tensors)
        assert len(sources) == 1, f"{key}: from {sources}"
        assert kinds[sources[0]] == kind, f"{key} ({kind}) was filled from {sources[0]} ({kinds[sources[0]]})"
        used += sources
    assert sorted(used) == sorted(tensors)


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
