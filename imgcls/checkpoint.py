"""Checkpoints laid out as the seed's: ``<model_save_dir>/<model>/<epoch>/`` holding

- ``model.pt``: the weights, a plain state_dict (what ``--pretrained_model``, eval and infer load);
- ``state.pt``: everything else a resume needs (optimizer, LR schedule step, epoch, RNG states, args).

Saving is atomic: both files go into a hidden temp folder beside the target, are fsynced, and the folder is renamed
into place (a rename within one filesystem is atomic). A kill at any moment leaves either the previous checkpoint or
the complete new one, never a half-written one.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_FILE = "model.pt"
STATE_FILE = "state.pt"
MIN_MATCH_FRACTION = 0.5  # fewer matching tensors than this means the file is another model's


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp_checkpoint(target: Path, weights: dict, state: dict | None) -> Path:
    """Write the files into a fresh hidden temp folder beside ``target``; fsynced, not yet visible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(weights, tmp / WEIGHTS_FILE)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    for file in tmp.iterdir():
        _fsync_path(file)
    _fsync_path(tmp)
    return tmp


def publish_checkpoint(tmp: Path, target: Path) -> None:
    """Rename the temp folder to ``target``; an existing ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(target: str | os.PathLike, model: nn.Module, state: dict | None = None) -> Path:
    """Atomically save ``model``'s state_dict (and the training ``state``) as the folder ``target``."""
    target = Path(target)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    publish_checkpoint(write_temp_checkpoint(target, weights, state), target)
    return target


def rng_states() -> dict:
    """The python, numpy and torch (CPU and CUDA) generator states."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_training_state(checkpoint_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(weights, state) of a checkpoint folder written by ``save_checkpoint``; a clear error when incomplete."""
    folder = Path(checkpoint_dir)
    if folder.is_file() and folder.name in (WEIGHTS_FILE, STATE_FILE):
        folder = folder.parent
    missing = [f for f in (WEIGHTS_FILE, STATE_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a training checkpoint (missing {', '.join(missing)})")
    weights = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    return weights, state


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict, or one nested under a usual key ('state_dict', 'model'); DataParallel prefixes dropped."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def read_weights(path: str | os.PathLike, model_name: str) -> dict[str, torch.Tensor]:
    """Weights from our checkpoint folder, a ``.pt``/``.pth`` state_dict, or a Paddle tar/folder (converted)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained model {path} does not exist")
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        path = path / WEIGHTS_FILE
    if path.is_file() and (path.suffix in (".pt", ".pth") or path.name == WEIGHTS_FILE):
        return _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    from imgcls.convert import looks_like_paddle_checkpoint, paddle_to_state_dict, read_paddle_checkpoint

    if looks_like_paddle_checkpoint(path):
        return paddle_to_state_dict(read_paddle_checkpoint(path), model_name)
    raise ValueError(f"{path}: not a checkpoint folder, .pt/.pth state_dict or Paddle checkpoint")


@dataclass
class LoadReport:
    """What ``load_matching`` did."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file shape, model shape)
    missing: list[str] = field(default_factory=list)  # model keys absent from the file
    unexpected: list[str] = field(default_factory=list)  # file keys the model does not have

    def lines(self) -> list[str]:
        """One line per kind of problem, for the log."""
        out = [f"loaded {len(self.loaded)} tensors"]
        if self.shape_mismatch:
            shown = ", ".join(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.shape_mismatch[:4])
            out.append(f"skipped {len(self.shape_mismatch)} tensors whose shape differs (file vs model): {shown}")
        if self.missing:
            out.append(f"{len(self.missing)} model tensors not in the file (kept fresh): {', '.join(self.missing[:6])}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} file tensors unused: {', '.join(self.unexpected[:6])}")
        return out


def load_matching(model: nn.Module, weights: dict[str, torch.Tensor]) -> LoadReport:
    """Copy every tensor whose name and shape match into ``model``; report the rest (e.g. a different classifier)."""
    own = model.state_dict()
    report = LoadReport()
    usable = {}
    for key, value in weights.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    report.missing = [k for k in own if k not in weights and not k.endswith("num_batches_tracked")]
    model.load_state_dict(usable, strict=False)
    return report


def load_pretrained(model: nn.Module, path: str | os.PathLike, model_name: str, log=print) -> LoadReport:
    """Fine-tuning load: every tensor whose name and shape match; a different classifier is skipped with one line.

    The seed's FAQ error (loading a 1000-class checkpoint into a model with another --class_dim) becomes a skip.
    """
    try:
        weights = read_weights(path, model_name)
    except (OSError, ValueError, NotImplementedError) as e:
        raise ValueError(f"cannot load --pretrained_model {path}: {e}") from None
    report = load_matching(model, weights)
    total = sum(1 for k in model.state_dict() if not k.endswith("num_batches_tracked"))
    if len(report.loaded) < MIN_MATCH_FRACTION * total:
        raise ValueError(
            f"--pretrained_model {path}: only {len(report.loaded)} of {model_name}'s {total} tensors match "
            "(is it another model's file?)"
        )
    classifier = [(k, a, b) for k, a, b in report.shape_mismatch if len(a) == len(b) and a[1:] == b[1:]]
    if classifier and len(classifier) == len(report.shape_mismatch):
        key, file_shape, model_shape = classifier[0]
        log(
            f"pretrained classifier has {file_shape[0]} classes, this model {model_shape[0]}: skipped "
            f"{', '.join(k for k, _, _ in classifier)} (trained from scratch)"
        )
        report.shape_mismatch = []
    log(f"loaded {path}: " + "; ".join(report.lines()))
    return report
