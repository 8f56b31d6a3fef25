"""Paddle 1.x checkpoints -> our state_dict.

The files (``paddle_files``): one Paddle LoDTensor file per variable, in a released ``<Model>_pretrained.tar`` or
its unpacked folder. Names map to our keys through each model family's ``paddle_names`` (in the model cfg).
Paddle's FC weights are [in, out] (transposed for ``nn.Linear``), and Paddle's dropout multiplies by (1 - p) at
inference, which we fold into the weight of the following layer (``cfg.paddle_dropout``).

The model knows every tensor's shape before a byte of data is read (``expected_tensors``), so converting reads
only the tensors the model takes, each after its header matched the shape it must have; tensors the model has no
place for and files that are not tensors are passed over, never read. A class count read from the file is at
most ``MAX_INFERRED_CLASSES`` unless given.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgcls.limits import COMPRESSED_BYTES_PER_VALUE, COMPRESSED_SLACK, MAX_INFERRED_CLASSES

# The registry itself, not the models package's create_model: the hub (which create_model(pretrained=True) uses)
# converts through this module.
from ..models._registry import build_model, get_model_cfg
from .paddle_files import Plan, TensorHeader, is_tar_archive, load_paddle_checkpoint


def read_paddle_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``<Model>_pretrained.tar`` or its unpacked folder -> {variable name: array}, every tensor whole
    (non-tensor files are dropped; ``load_paddle_checkpoint`` names them). For a file you do not trust, convert it
    (``convert_paddle_checkpoint``): that reads only what the model takes."""
    return load_paddle_checkpoint(path).tensors


@dataclass(frozen=True)
class ExpectedTensors:
    """The Paddle tensors a model takes: Paddle name -> (our key, shape in Paddle's layout with None at the class
    dimension)."""

    model: str
    shapes: dict[str, tuple[str, tuple[int | None, ...]]]

    def values(self, num_classes: int | None) -> int:
        """How many values the tensors hold at ``num_classes`` (None: the most a file may say)."""
        classes = num_classes or MAX_INFERRED_CLASSES
        return sum(math.prod(classes if d is None else d for d in shape) for _, shape in self.shapes.values())

    def unpacked_limit(self, num_classes: int | None) -> int:
        """The most bytes a compressed checkpoint of this model may decompress to."""
        return self.values(num_classes) * COMPRESSED_BYTES_PER_VALUE + COMPRESSED_SLACK

    def plan(self, num_classes: int | None) -> Plan:
        """Read a tensor the model takes when its header has the shape it must have (the class count given, or the
        first classifier tensor's, at most MAX_INFERRED_CLASSES); pass over the others; refuse a misfit."""
        classes = [num_classes]

        def plan(name: str, header: TensorHeader) -> bool:
            if name not in self.shapes:
                return False
            key, want = self.shapes[name]
            got = header.shape
            fits = len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))
            class_dims = {g for w, g in zip(want, got) if w is None}
            if fits and class_dims:
                count = class_dims.pop() if len(class_dims) == 1 else -1
                if classes[0] is None and count > MAX_INFERRED_CLASSES:
                    raise ValueError(
                        f"{name}: a classifier of {count} classes, more than the {MAX_INFERRED_CLASSES} a checkpoint "
                        f"may give by itself (python -m imgcls.convert --class_dim {count} converts it)"
                    )
                classes[0] = classes[0] or count
                fits = count == classes[0] and count >= 1
            if not fits:
                shown = tuple("K" if d is None else d for d in want) if classes[0] is None else tuple(
                    classes[0] if d is None else d for d in want
                )  # fmt: skip
                raise ValueError(
                    f"{name}: Paddle shape {got} does not fit {self.model}'s {key} (Paddle layout {shown}; is it "
                    "another model's checkpoint?)"
                )
            return True

        return plan


def expected_tensors(model_name: str) -> ExpectedTensors:
    """The Paddle tensors ``model_name`` takes and their shapes (from two meta-device builds: the dimensions that
    follow the class count are the class dimensions)."""
    cfg = get_model_cfg(model_name)
    if cfg.paddle_names is None:
        raise NotImplementedError(f"{cfg.name} has no Paddle name map")
    with torch.device("meta"):
        model = build_model(cfg.name, num_classes=1000)
        other = build_model(cfg.name, num_classes=1001).state_dict()
    names, linear = cfg.paddle_names(model), _linear_weight_keys(model)
    shapes = {}
    for key, ref in model.state_dict().items():
        if key in names:
            shape = tuple(None if a != b else a for a, b in zip(ref.shape, other[key].shape))
            shapes[names[key]] = (key, shape[::-1] if key in linear else shape)
    return ExpectedTensors(cfg.name, shapes)


def looks_like_paddle_checkpoint(path: str | os.PathLike) -> bool:
    """A folder of tensor files or a tar archive (what ``--pretrained_model`` hands to this converter)."""
    path = Path(path)
    if path.is_dir():
        return not any(p.suffix in (".pt", ".pth") or p.name == "model.pt" for p in path.iterdir())
    return path.is_file() and is_tar_archive(path)


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
    Raises ValueError if a tensor is missing or does not fit, FileNotFoundError if ``path`` is not a checkpoint.
    Memory: the model's tensors (each read after its header matched), never a file it does not take."""
    expected = expected_tensors(model_name)
    ckpt = load_paddle_checkpoint(path, expected.plan(num_classes), expected.unpacked_limit(num_classes))
    state, report = convert_complete(ckpt.tensors, model_name, num_classes)
    report.skipped = ckpt.skipped
    report.unused = sorted({*report.unused, *ckpt.unread})
    return state, report
