"""Checkpoints laid out as Paddle's: ``<model_save_dir>/<model>/<epoch>/`` holding

- ``model.pt``: the weights, a plain state_dict (what ``--pretrained_model``, eval and infer load);
- ``state.pt``: everything else a resume needs (optimizer, LR schedule step, epoch, RNG states) and the run's
  ``RunConfig`` (``imgcls.config``: preprocessing spec included) and class names, which eval and infer read.

Saving is atomic: both files go into a hidden temp folder beside the target, are fsynced, and the folder is renamed
into place (a rename within one filesystem is atomic). Overwriting an existing folder takes two renames (target ->
hidden ``.old-`` copy, temp -> target); a kill between them leaves no target but the whole previous copy, which
loading falls back to and the next save puts back. The next save also removes the temp folders that this process or
a dead one left (a live process's are its saves in progress). So a kill at any moment leaves the previous checkpoint
or the complete new one, never a half-written one; a save that fails (a full disk, a read-only folder) removes what
it wrote and raises the ``OSError``, whose errno names the cause.

Both files load with ``torch.load(weights_only=True)``: tensors and plain Python values only (RNG states included),
so reading a checkpoint (eval and infer read ``state.pt`` for the run's preprocessing) never runs pickled code.
Each save also writes ``checksums.sha256`` (``imgcls.checksums``: the sha256 of each file, hashed as it is
written), and each read checks the file against it first: a damaged file is an error naming it, never weights with
flipped bits. A checkpoint without the manifest loads unchecked.

``state.pt`` formats: 2 (``format: 2``, the run's ``config`` under the config's own field names) and 1 (no
``format`` key; the CLI's flags under ``args``), which still loads for eval, infer, fine-tuning and resume.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imgcls.checksums import verify, write_manifest
from imgcls.config import RunConfig, from_plain, to_plain
from imgcls.data.preprocess import PreprocessSpec
from imgcls.data.transforms import AugConfig
from imgcls.randomness import restore_rng_states, rng_states

WEIGHTS_FILE = "model.pt"
STATE_FILE = "state.pt"
MIN_MATCH_FRACTION = 0.5  # fewer matching tensors than this means the file is another model's
TMP_TAG, OLD_TAG = ".tmp-", ".old-"  # hidden folders beside a target: .<name>.tmp-<pid>, .<name>.old-<pid>
STATE_FORMAT = 2


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hidden(target: Path, tag: str) -> Path:
    return target.parent / f".{target.name}{tag}{os.getpid()}"


def kept_copy(target: Path) -> Path | None:
    """The previous ``target`` that an interrupted publish moved aside, when ``target`` itself is missing."""
    if target.exists() or not target.parent.is_dir():
        return None
    copies = [p for p in target.parent.glob(f".{target.name}{OLD_TAG}*") if (p / WEIGHTS_FILE).is_file()]
    return max(copies, key=lambda p: p.stat().st_mtime) if copies else None


def existing_path(path: str | os.PathLike) -> Path:
    """``path`` (a checkpoint folder or a file in one), or its kept previous copy when a kill mid-publish left it
    missing."""
    path = Path(path)
    if path.exists():
        return path
    if path.name in (WEIGHTS_FILE, STATE_FILE):
        kept = kept_copy(path.parent)
        return kept / path.name if kept is not None else path
    return kept_copy(path) or path


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _left_by_live_other(folder: Path, tag: str) -> bool:
    """Whether a hidden ``.<name><tag><pid>`` folder belongs to another process that still runs (its save is in
    progress: not a leftover)."""
    pid_text = folder.name.rsplit(tag, 1)[1]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and pid_alive(pid)


def sweep_leftovers(parent: Path) -> None:
    """Undo what interrupted saves of this process or of dead ones left in ``parent``: a previous copy whose target
    is missing goes back in place, other ``.old-`` copies and the ``.tmp-`` folders are removed. Those of another
    live process are its saves in progress and stay."""
    if not parent.is_dir():
        return
    for old in sorted(parent.glob(f".*{OLD_TAG}*"), key=lambda p: p.stat().st_mtime, reverse=True):
        if _left_by_live_other(old, OLD_TAG):
            continue
        target = parent / old.name[1:].rsplit(OLD_TAG, 1)[0]
        if not target.exists() and (old / WEIGHTS_FILE).is_file():
            os.replace(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in parent.glob(f".*{TMP_TAG}*"):
        if not _left_by_live_other(tmp, TMP_TAG):
            shutil.rmtree(tmp, ignore_errors=True)


class _RecordingFile(io.RawIOBase):
    """A file torch.save streams into that hashes what it writes (sha256) and keeps the OSError of a failed write:
    torch's zip writer reports it only as "unexpected pos ...", which never says the disk is full."""

    def __init__(self, file: io.BufferedWriter) -> None:
        super().__init__()
        self.file, self.error, self.sha256 = file, None, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        try:
            written = self.file.write(data)
        except OSError as e:
            self.error = e
            raise
        self.sha256.update(memoryview(data)[:written])
        return written


def write_synced(path: Path, obj: object) -> str:
    """``torch.save`` of ``obj`` as a new file ``path``, streamed and fsynced; returns the file's sha256 (hex). A
    full disk or a read-only folder raises the ``OSError`` whose errno says so."""
    with open(path, "xb") as file:
        recorder = _RecordingFile(file)
        try:
            torch.save(obj, recorder)
            file.flush()
        except RuntimeError:
            if recorder.error is None:
                raise
            raise recorder.error from None
        os.fsync(file.fileno())
    return recorder.sha256.hexdigest()


def write_temp_checkpoint(target: Path, weights: dict, state: dict | None) -> Path:
    """Write the files into a fresh hidden temp folder beside ``target``; fsynced, not yet visible. On any failure
    (an ``OSError`` from a full disk, an interrupt) the temp folder is removed before the error goes on."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target.parent)
    tmp = _hidden(target, TMP_TAG)
    tmp.mkdir()
    try:
        digests = {WEIGHTS_FILE: write_synced(tmp / WEIGHTS_FILE, weights)}
        if state is not None:
            digests[STATE_FILE] = write_synced(tmp / STATE_FILE, state)
        write_manifest(tmp, digests)
        _fsync_path(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def publish_checkpoint(tmp: Path, target: Path) -> None:
    """Rename the temp folder to ``target``; an existing ``target`` is moved aside first and removed after. A rename
    that fails puts the previous ``target`` back and removes the temp folder before the error goes on."""
    old = None
    if target.exists():
        old = _hidden(target, OLD_TAG)
        os.replace(target, old)  # a kill from here to the next rename leaves only ``old``: see kept_copy
    try:
        os.replace(tmp, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(target: str | os.PathLike, model: nn.Module, state: dict | None = None) -> Path:
    """Atomically save ``model``'s state_dict (and the training ``state``) as the folder ``target``."""
    target = Path(target)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    publish_checkpoint(write_temp_checkpoint(target, weights, state), target)
    return target


def _load_plain(path: Path) -> object:
    """``torch.load`` of tensors and plain values only, after the file matched its checkpoint's checksum manifest;
    ValueError saying what is wrong with the file otherwise (damaged since it was saved; an empty, truncated or
    foreign file; objects whose unpickling could run code). torch's own warnings are not shown: the error says it."""
    verify(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: {_unloadable_reason(path, e)}") from None


def _unloadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in words (torch's own messages run to a dozen lines)."""
    if path.stat().st_size == 0:
        return "empty file"
    if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        return "holds objects other than plain tensors and values (not loaded: unpickling them could run code)"
    if zipfile.is_zipfile(path) or isinstance(error, EOFError):
        return "truncated or corrupt torch file (an interrupted copy or download?)"
    if isinstance(error, pickle.UnpicklingError):
        return "not a torch.save file (unrecognized bytes)"
    return "truncated or corrupt torch file (an interrupted copy or download?)"


def checkpoint_folder(path: str | os.PathLike) -> Path:
    """The folder of a checkpoint given as the folder or one of its files (its kept copy after a kill mid-save)."""
    folder = existing_path(path)
    return folder.parent if folder.is_file() and folder.name in (WEIGHTS_FILE, STATE_FILE) else folder


def load_training_state(checkpoint_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(weights, state) of a checkpoint folder written by ``save_checkpoint``; FileNotFoundError when incomplete,
    ValueError when a file holds more than tensors and plain values."""
    folder = checkpoint_folder(checkpoint_dir)
    if not folder.exists():
        raise FileNotFoundError(f"checkpoint {folder} does not exist")
    missing = [f for f in (WEIGHTS_FILE, STATE_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a training checkpoint (missing {', '.join(missing)})")
    return _load_plain(folder / WEIGHTS_FILE), _load_plain(folder / STATE_FILE)


def training_state(
    config: RunConfig,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    label_names: list[str] | None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """Everything besides the weights that an exact resume needs, and what eval/infer read: the run's config
    (preprocessing included) and class names."""
    state = dict(format=STATE_FORMAT, epoch=epoch, step=step, optimizer=optimizer.state_dict(), rng=rng_states())
    state.update(config=to_plain(config), label_names=label_names)
    state.update(scaler=scaler.state_dict() if scaler is not None else None)
    return state


def restore_training_state(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """Load a ``save_checkpoint`` folder into ``model`` (every tensor must fit: ValueError naming the mismatch
    otherwise), ``optimizer``, the RNGs and ``scaler``; returns the state (epoch, step, config, ...)."""
    weights, state = load_training_state(path)
    report = load_matching(model, weights)
    if report.shape_mismatch or report.missing or report.unexpected:
        saved_model = saved_run(state).model or "another model"
        raise ValueError(f"the weights ({saved_model}) do not fit this model: " + "; ".join(report.lines()[1:]))
    optimizer.load_state_dict(state["optimizer"])
    restore_rng_states(state["rng"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state


def resume_training(
    checkpoint_dir: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    momentum: float,
    l2_decay: float,
) -> tuple[int, int, SavedRun]:
    """Restore a training checkpoint, then let this run's ``momentum`` and ``l2_decay`` win over the saved
    optimizer's (the caller rebuilds the LR schedule from its own config).
    -> (first epoch to train, its global step, what the checkpoint says of its run)."""
    state = restore_training_state(checkpoint_dir, model, optimizer, scaler)
    for group in optimizer.param_groups:
        group["momentum"], group["weight_decay"] = momentum, l2_decay
    return state["epoch"] + 1, state["step"], saved_run(state)


@dataclass(frozen=True)
class SavedRun:
    """What a checkpoint's ``state.pt`` says about the run that wrote it (any format)."""

    model: str | None = None
    num_classes: int | None = None
    preprocess: PreprocessSpec | None = None
    label_names: list[str] | None = None
    config: RunConfig | None = None  # format 2
    legacy_args: dict | None = None  # format 1: the CLI flags as they were spelled then
    mid_epoch: dict | None = None  # a step checkpoint's position in its epoch (imgcls.step_checkpoints)


def saved_run(state: dict) -> SavedRun:
    """The ``SavedRun`` of a loaded ``state.pt`` (format 2, or format 1 with its ``args``)."""
    names = state.get("label_names")
    if state.get("format") == STATE_FORMAT:
        config = from_plain(RunConfig, state["config"])
        mid_epoch = state.get("mid_epoch")
        return SavedRun(config.model, config.num_classes, config.preprocess, names, config=config, mid_epoch=mid_epoch)
    args = state.get("args") or {}
    return SavedRun(args.get("model"), args.get("class_dim"), _format1_preprocess(args), names, legacy_args=args)


def _format1_preprocess(args: dict) -> PreprocessSpec | None:
    """The preprocessing of a format-1 run, from the flags it stored (None when they are incomplete)."""
    keys = ("crop_size", "resize_short_size", "image_mean", "image_std", "interpolation")
    if any(args.get(k) is None for k in keys):
        return None
    aug_fields = ("lower_scale", "lower_ratio", "upper_ratio", "rotate", "brightness", "contrast", "saturation", "hue")
    aug = AugConfig(interpolation=args["interpolation"], **{k: args[k] for k in aug_fields if args.get(k) is not None})
    mean, std = tuple(args["image_mean"]), tuple(args["image_std"])
    return PreprocessSpec(args["crop_size"], args["resize_short_size"], mean, std, aug)


def read_run_info(path: str | os.PathLike) -> SavedRun | None:
    """The ``SavedRun`` of the ``state.pt`` beside ``path`` (a checkpoint folder or its model.pt); None when there
    is none (a plain state_dict or a Paddle file); ValueError when it cannot be read. Loaded as plain data only."""
    folder = checkpoint_folder(path)
    if folder.is_file():
        folder = folder.parent
    state_file = folder / STATE_FILE
    if not state_file.is_file():
        return None
    state = _load_plain(state_file)
    if not isinstance(state, dict):
        raise ValueError(f"{state_file}: not a training state (a {type(state).__name__}, not a dict)")
    try:
        return saved_run(state)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{state_file}: unreadable run record ({e})") from None


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict, or one nested under a usual key ('state_dict', 'model'); DataParallel prefixes dropped."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def read_weights(
    path: str | os.PathLike, model_name: str, log: Callable[[str], None] | None = None
) -> dict[str, torch.Tensor]:
    """Weights from our checkpoint folder, a ``.pt``/``.pth`` state_dict, or a Paddle tar/folder (converted; what
    the converter could not place is passed to ``log`` in one line). A ``path`` that does not exist but names a
    registered model means Paddle's released weights of that model (``imgcls.hub``: fetched once, then cached)."""
    given, path = path, existing_path(path)
    if not path.exists():
        from imgcls.hub import model_named_by, released_weights

        name = model_named_by(str(given))
        if name is not None:
            return released_weights(name)
        raise FileNotFoundError(f"pretrained model {path} does not exist (nor is it a model name)")
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        path = path / WEIGHTS_FILE
    if path.is_file() and (path.suffix in (".pt", ".pth") or path.name == WEIGHTS_FILE):
        return _unwrap_state_dict(_load_plain(path), path)
    from imgcls.convert import convert_paddle_checkpoint, looks_like_paddle_checkpoint

    if looks_like_paddle_checkpoint(path):
        try:
            state, conversion = convert_paddle_checkpoint(path, model_name)
        except (tarfile.TarError, EOFError) as e:
            raise ValueError(f"{path}: truncated or corrupt tar archive ({e})") from None
        if log is not None and (conversion.unused or conversion.skipped):
            log(f"converted Paddle checkpoint {path}: {conversion.summary()}")
        return state
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


def load_pretrained(
    model: nn.Module, path: str | os.PathLike, model_name: str, log: Callable[[str], None] = print
) -> LoadReport:
    """Fine-tuning load: every tensor whose name and shape match; a different classifier is skipped with one line.

    Paddle's FAQ error (loading a 1000-class checkpoint into a model with another --class_dim) becomes a skip.
    """
    try:
        weights = read_weights(path, model_name, log)
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
