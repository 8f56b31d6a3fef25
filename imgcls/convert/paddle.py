"""Paddle 1.x checkpoints -> our state_dict.

A released ``<Model>_pretrained.tar`` holds one folder with one file per variable (file name = variable name),
each in Paddle's LoDTensor format (little-endian):

    uint32 version (0) | uint64 lod_level, then per level uint64 nbytes + offsets
    uint32 tensor version (0) | int32 desc_len | TensorDesc protobuf (1: data_type varint, 2: dims int64)
    raw data, C order

Names map to our keys through each model family's ``paddle_names`` (in the model cfg). Paddle's FC weights are
[in, out] (transposed for ``nn.Linear``), and Paddle's dropout multiplies by (1 - p) at inference, which we fold
into the weight of the following layer (``cfg.paddle_dropout``).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

# The registry itself, not the models package's create_model: the hub (which create_model(pretrained=True) uses)
# converts through this module.
from ..models._registry import build_model, get_model_cfg

PADDLE_DTYPES = {
    0: np.bool_,
    1: np.int16,
    2: np.int32,
    3: np.int64,
    4: np.float16,
    5: np.float32,
    6: np.float64,
    20: np.uint8,
    21: np.int8,
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint in TensorDesc")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _parse_tensor_desc(desc: bytes) -> tuple[int, list[int]]:
    """(data_type, dims) from a VarType.TensorDesc message; dims packed or not."""
    dtype, dims, pos = None, [], 0
    while pos < len(desc):
        key, pos = _varint(desc, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 1 and wire == 0:
            dtype, pos = _varint(desc, pos)
        elif field_no == 2 and wire == 0:
            d, pos = _varint(desc, pos)
            dims.append(d - (1 << 64) if d >= 1 << 63 else d)
        elif field_no == 2 and wire == 2:
            n, pos = _varint(desc, pos)
            end = pos + n
            while pos < end:
                d, pos = _varint(desc, pos)
                dims.append(d - (1 << 64) if d >= 1 << 63 else d)
        else:
            raise ValueError(f"unexpected field {field_no} (wire {wire}) in TensorDesc")
    if dtype is None:
        raise ValueError("TensorDesc without data_type")
    return dtype, dims


def read_lod_tensor(data: bytes) -> np.ndarray:
    """Decode one Paddle LoDTensor file."""
    f = io.BytesIO(data)

    def take(n: int) -> bytes:
        b = f.read(n)
        if len(b) != n:
            raise ValueError("truncated Paddle tensor file")
        return b

    if int.from_bytes(take(4), "little") != 0:
        raise ValueError("unsupported LoDTensor version")
    for _ in range(int.from_bytes(take(8), "little")):
        take(int.from_bytes(take(8), "little"))
    if int.from_bytes(take(4), "little") != 0:
        raise ValueError("unsupported Tensor version")
    desc_len = int.from_bytes(take(4), "little", signed=True)
    dtype_id, dims = _parse_tensor_desc(take(desc_len))
    if dtype_id not in PADDLE_DTYPES:
        raise ValueError(f"unsupported Paddle dtype {dtype_id}")
    dtype = np.dtype(PADDLE_DTYPES[dtype_id]).newbyteorder("<")
    count = int(np.prod(dims)) if dims else 1
    raw = take(count * dtype.itemsize)
    if f.read(1):
        raise ValueError("trailing bytes after Paddle tensor data")
    return np.frombuffer(raw, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


@dataclass
class PaddleCheckpoint:
    """What ``load_paddle_checkpoint`` read: the tensors, and the files that were not Paddle tensors."""

    tensors: dict[str, np.ndarray]
    skipped: list[str] = field(default_factory=list)  # released tars hold some non-tensor files


def load_paddle_checkpoint(path: str | os.PathLike) -> PaddleCheckpoint:
    """Read a ``<Model>_pretrained.tar`` or its unpacked folder; files that are not Paddle tensors are skipped and
    named in the result."""
    path = Path(path)
    tensors: dict[str, np.ndarray] = {}
    skipped: list[str] = []

    def add(name: str, data: bytes) -> None:
        try:
            tensors[name] = read_lod_tensor(data)
        except ValueError:
            skipped.append(name)

    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            add(file.name, file.read_bytes())
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    add(Path(member.name).name, tar.extractfile(member).read())
    else:
        raise FileNotFoundError(f"{path}: not a Paddle checkpoint folder or .tar")
    if not tensors:
        raise ValueError(f"{path}: no Paddle tensors found")
    return PaddleCheckpoint(tensors, skipped)


def read_paddle_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``<Model>_pretrained.tar`` or its unpacked folder -> {variable name: array} (non-tensor files are
    dropped; ``load_paddle_checkpoint`` names them)."""
    return load_paddle_checkpoint(path).tensors


def looks_like_paddle_checkpoint(path: str | os.PathLike) -> bool:
    """A folder of tensor files or a tar archive (what ``--pretrained_model`` hands to this converter)."""
    path = Path(path)
    if path.is_dir():
        return not any(p.suffix in (".pt", ".pth") or p.name == "model.pt" for p in path.iterdir())
    return path.is_file() and tarfile.is_tarfile(path)


@dataclass
class ConversionReport:
    """What the converter could not place."""

    missing: list[str] = field(default_factory=list)  # our keys with no Paddle tensor
    unused: list[str] = field(default_factory=list)  # Paddle tensors we have no place for
    skipped: list[str] = field(default_factory=list)  # files of the checkpoint that are not Paddle tensors

    def summary(self) -> str:
        parts = []
        if self.missing:
            missing = ", ".join(self.missing[:8])
            parts.append(f"{len(self.missing)} tensors missing from the Paddle checkpoint: {missing}")
        if self.unused:
            parts.append(f"{len(self.unused)} Paddle tensors not used: {', '.join(self.unused[:8])}")
        if self.skipped:
            parts.append(f"{len(self.skipped)} non-tensor files skipped: {', '.join(self.skipped[:8])}")
        return "; ".join(parts) or "all tensors placed"


def _linear_weight_keys(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def convert_paddle(
    paddle_tensors: dict[str, np.ndarray], model_name: str, num_classes: int | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map Paddle tensors onto ``model_name``'s state_dict; returns it with a report of what did not fit."""
    cfg = get_model_cfg(model_name)
    if cfg.paddle_names is None:
        raise NotImplementedError(f"{cfg.name} has no Paddle name map")
    with torch.device("meta"):
        model = build_model(cfg.name, num_classes=num_classes or 1000)
    names = cfg.paddle_names(model)
    linear_keys = _linear_weight_keys(model)
    state, report = {}, ConversionReport()
    for key, ref in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
            continue
        pname = names.get(key)
        if pname is None or pname not in paddle_tensors:
            report.missing.append(key if pname is None else f"{key} ({pname})")
            continue
        arr = np.asarray(paddle_tensors[pname], dtype=np.float32)
        if key in linear_keys:
            arr = arr.T
        if pname in cfg.paddle_dropout:
            arr = arr * np.float32(cfg.paddle_dropout[pname])
        if tuple(arr.shape) != tuple(ref.shape):
            raise ValueError(
                f"{pname}: Paddle shape {tuple(arr.shape)} does not fit {cfg.name}'s {key} {tuple(ref.shape)} "
                "(is it another model's checkpoint?)"
            )
        state[key] = torch.from_numpy(np.ascontiguousarray(arr))
    report.unused = sorted(set(paddle_tensors) - set(names.values()))
    return state, report


def checkpoint_class_count(paddle_tensors: dict[str, np.ndarray], model_name: str) -> int | None:
    """Class count of a Paddle checkpoint, read from the last tensor the model maps (the classifier bias)."""
    cfg = get_model_cfg(model_name)
    with torch.device("meta"):
        model = build_model(cfg.name, num_classes=1000)
    names = cfg.paddle_names(model)
    last_bias = [k for k in model.state_dict() if k.endswith("bias") and not k.endswith("num_batches_tracked")]
    if not last_bias:
        return None
    pname = names.get(last_bias[-1])
    return int(paddle_tensors[pname].shape[0]) if pname in paddle_tensors else None


def convert_complete(
    paddle_tensors: dict[str, np.ndarray], model_name: str, num_classes: int | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """``convert_paddle`` that insists on a complete state_dict: the class count is read from the checkpoint unless
    given, and a model tensor without its Paddle tensor raises ValueError. The report's ``unused`` lists the Paddle
    tensors left unplaced (what a loader should report)."""
    classes = num_classes or checkpoint_class_count(paddle_tensors, model_name)
    state, report = convert_paddle(paddle_tensors, model_name, num_classes=classes)
    if report.missing:
        raise ValueError(f"{model_name}: {report.summary()}")
    return state, report


def paddle_to_state_dict(paddle_tensors: dict[str, np.ndarray], model_name: str) -> dict[str, torch.Tensor]:
    """Paddle tensors (name -> array, Paddle layout) -> a complete state_dict for ``create_model(model_name)``.

    Raises ValueError if any of the model's tensors is missing or does not fit; unknown Paddle tensors are ignored
    (``convert_complete`` returns them).
    """
    return convert_complete(paddle_tensors, model_name)[0]


def convert_paddle_checkpoint(
    path: str | os.PathLike, model_name: str, num_classes: int | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Read a Paddle tar/folder and convert it for ``model_name`` (``convert_complete``). The report names what was
    not placed: ``unused`` (Paddle tensors the model has no place for) and ``skipped`` (files that are not tensors).
    Raises ValueError if a tensor is missing or does not fit, FileNotFoundError if ``path`` is not a checkpoint."""
    ckpt = load_paddle_checkpoint(path)
    state, report = convert_complete(ckpt.tensors, model_name, num_classes)
    report.skipped = ckpt.skipped
    return state, report
