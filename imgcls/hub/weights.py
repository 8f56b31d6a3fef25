"""Paddle's released ImageNet weights, fetched once: ``released_weights(name)`` -> the model's state_dict.

The cache (``imgcls.home.weights_dir()``: ``$IMGCLS_HOME/weights``, default ``~/.cache/imgcls/weights``) holds per
model::

    <Model>.pt            the converted state_dict, loaded with torch.load(weights_only=True)
    <Model>.json          its record: where the tar came from, the tar's size and sha256, the .pt's size and sha256
    <tar>                 a tar put here by hand is picked up (``<tar>`` is Paddle's file name, e.g.
                          ShuffleNetV2_swish_pretrained.tar), converted, then removed: its tensors live in the .pt
    <tar>.part(.tag)      a download in progress, or one that stopped early (the next call resumes it); a complete
                          download is converted from here and removed, whether the conversion works or fails, so
                          a downloaded tar never takes the name that only a tar put in place by hand has
    <Model>.lock          held by the one process that fetches and converts; others wait, then read the cache

Trust on first use: Paddle publishes no hashes, so the first tar fetched is trusted. Its sha256 is recorded and any
later tar of that model (after the .pt was lost or damaged) must match it; every load checks the .pt against its
record. The converter must place every tensor of the tar, with none left over, or nothing is cached; it reads
only the tensors the model takes, each after its header matched its shape (``imgcls.convert``), so a hostile tar
costs no more memory than the model. Any failure to fetch or convert is one line and leaves nothing a later call
would trust.

``IMGCLS_WEIGHTS_MIRROR=<base URL>`` fetches ``<base>/<tar>`` instead of Paddle's host; ``IMGCLS_OFFLINE=1`` never
touches the network (a cached model, or a tar put in place by hand, still loads).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from imgcls.convert.paddle import convert_paddle_checkpoint
from imgcls.convert.paddle_files import is_tar_archive
from imgcls.home import weights_dir
from imgcls.models._registry import ModelCfg, canonical_name, get_model_cfg, weights_url

from .download import DownloadError, discard, download

MIRROR_ENV = "IMGCLS_WEIGHTS_MIRROR"
OFFLINE_ENV = "IMGCLS_OFFLINE"
RECORD_FORMAT = 1
PADDLE_CLASSES = 1000  # every released tar is an ImageNet-1k classifier


def say(message: str) -> None:
    """The hub's messages go to stderr, beside the progress bar."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CachePaths:
    """The cache files of one model (see the module docstring)."""

    weights: Path
    record: Path
    tar: Path
    part: Path
    lock: Path


def cache_paths(cfg: ModelCfg) -> CachePaths:
    """Where ``cfg``'s released weights are cached."""
    root = weights_dir()
    return CachePaths(
        weights=root / f"{cfg.name}.pt",
        record=root / f"{cfg.name}.json",
        tar=root / cfg.weights,
        part=root / f"{cfg.weights}.part",
        lock=root / f"{cfg.name}.lock",
    )


def offline() -> bool:
    """``IMGCLS_OFFLINE`` set to anything but empty / 0 / false / no."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def download_url(cfg: ModelCfg) -> str:
    """Paddle's URL of the tar, or the same file name under ``$IMGCLS_WEIGHTS_MIRROR``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{cfg.weights}" if mirror else weights_url(cfg)


def released_cfg(name: str) -> ModelCfg:
    """The cfg of a model with released weights; KeyError for an unknown name, ValueError when Paddle released none."""
    cfg = get_model_cfg(name)
    if not cfg.weights:
        raise ValueError(f"{cfg.name} has no released Paddle weights (imgcls.models.list_models(pretrained=True))")
    return cfg


def model_named_by(text: str) -> str | None:
    """The rule for a ``--pretrained_model`` value that is not an existing path: the registered model it names (an
    alias too), whose released weights are meant; None when it names none. ValueError when that model has no
    released weights."""
    try:
        name = canonical_name(str(text))
    except KeyError:
        return None
    return released_cfg(name).name


def released_weights(name: str, log: Callable[[str], None] = say) -> dict[str, torch.Tensor]:
    """The state_dict of Paddle's released ImageNet weights of model ``name`` (1000 classes): from the cache, or
    fetched, converted and cached on first use. One process fetches at a time; the others wait for it."""
    cfg = released_cfg(name)
    paths = cache_paths(cfg)
    state = load_cached(paths)
    if state is None:
        with locked(paths.lock, f"waiting for another process fetching {cfg.name}'s weights", log):
            state = load_cached(paths, log)  # that process may have finished meanwhile
            if state is None:
                state = fetch_and_cache(cfg, paths, log)
    return state


def load_cached(paths: CachePaths, log: Callable[[str], None] | None = None) -> dict[str, torch.Tensor] | None:
    """The cached state_dict when it matches its record; None when there is none or it does not match (``log``
    says so)."""
    if not paths.weights.is_file() or not paths.record.is_file():
        return None
    kept = read_record(paths.record).get("weights") or {}
    if file_digest(paths.weights) != (kept.get("size"), kept.get("sha256")):
        if log is not None:
            log(f"warning: {paths.weights} does not match its record {paths.record.name} (damaged?); fetching again")
        return None
    return load_state(paths.weights)


def fetch_and_cache(cfg: ModelCfg, paths: CachePaths, log: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """Take the tar (put in place by hand, or downloaded), check it against the record's pin, convert it exactly,
    store the .pt and its record; the tar is removed. A download is removed whatever goes wrong; a tar put in place
    by hand that fails the checks is kept, and named in the error."""
    for stale in paths.weights.parent.glob(f".{cfg.name}.*.tmp-*"):  # a killed writer's (we hold the lock)
        stale.unlink(missing_ok=True)
    url = download_url(cfg)
    pinned = read_record(paths.record).get("tar") if paths.record.is_file() else None
    by_hand = paths.tar.is_file()
    source = paths.tar if by_hand else fetch_tar(url, paths)
    try:
        tar_record = check_pin(source, paths, pinned, url)
        state = convert_exactly(source, paths.tar.name, cfg, url)
        store(state, paths, {"model": cfg.name, "url": url, "placed_by_hand": by_hand, "tar": tar_record})
    except BaseException as e:
        if not by_hand:
            discard(paths.part)
        if by_hand and isinstance(e, ValueError):
            raise ValueError(f"{e} (remove or replace {paths.tar})") from None
        raise
    if by_hand:
        paths.tar.unlink(missing_ok=True)
    else:
        discard(paths.part)
    trust = "the same as first fetched" if pinned else "trusted on first use"
    log(f"cached {cfg.name}'s weights at {paths.weights} ({paths.tar.name} sha256 {tar_record['sha256']}: {trust})")
    return state


def check_pin(source: Path, paths: CachePaths, pinned: dict | None, url: str) -> dict:
    """The tar's {file, size, sha256}; ValueError when it differs from the ``pinned`` one (the first fetched)."""
    size, sha256 = file_digest(source)
    if pinned and (size, sha256) != (pinned.get("size"), pinned.get("sha256")):
        raise ValueError(
            f"{paths.tar.name} from {url} differs from the one first fetched (sha256 {sha256[:16]}... vs "
            f"{str(pinned.get('sha256'))[:16]}...); delete {paths.record} to trust the new one"
        )
    return {"file": paths.tar.name, "size": size, "sha256": sha256}


def fetch_tar(url: str, paths: CachePaths) -> Path:
    """Download ``url`` into ``paths.part`` and return it, complete; DownloadError (naming the URL and where a tar
    fetched by hand is picked up) when offline or the download fails, ValueError when the body is not a tar."""
    if offline():
        raise DownloadError(f"{paths.tar.name} is not cached and {OFFLINE_ENV} is set: download {url} to {paths.tar}")
    try:
        download(url, paths.part, paths.tar.name)
    except DownloadError as e:
        raise DownloadError(f"{e} (or download it by hand to {paths.tar})") from None
    if not is_tar_archive(paths.part):
        discard(paths.part)
        raise ValueError(f"{url} did not send a tar archive")
    return paths.part


def convert_exactly(source: Path, tar_name: str, cfg: ModelCfg, url: str) -> dict[str, torch.Tensor]:
    """Convert the tar for ``cfg``'s model: every tensor of the model filled, every tensor of the tar placed. Any
    failure is a ValueError in one line."""
    problem = f"{tar_name} from {url} is not {cfg.name}'s weights"
    try:
        state, report = convert_paddle_checkpoint(source, cfg.name, num_classes=PADDLE_CLASSES)
    except (ValueError, FileNotFoundError) as e:
        detail = str(e).splitlines()[0].removeprefix(f"{source}: ")
        raise ValueError(f"{problem}: {detail}") from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged tar raises, the user gets one line and a clean cache
        detail = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{tar_name} from {url} could not be converted ({type(e).__name__}: {detail})") from None
    if report.unused or report.skipped:
        raise ValueError(f"{problem} (another model's tar?): {report.summary()}")
    return state


def store(state: dict[str, torch.Tensor], paths: CachePaths, record: dict) -> None:
    """Write the .pt, then its record (the record last: a record always describes a complete .pt)."""
    atomic_write(paths.weights, lambda f: torch.save(state, f))
    size, sha256 = file_digest(paths.weights)
    first_seen = read_record(paths.record).get("first_seen") if paths.record.is_file() else None
    record.update(format=RECORD_FORMAT, first_seen=first_seen or time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record["weights"] = {"file": paths.weights.name, "size": size, "sha256": sha256}
    atomic_write(paths.record, lambda f: f.write(json.dumps(record, indent=2).encode() + b"\n"))


def atomic_write(target: Path, write: Callable) -> None:
    """``write(file)`` into a temp file beside ``target``, fsync, rename over ``target``: readers see the old file
    or the whole new one."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def read_record(path: Path) -> dict:
    """A model's cache record; ValueError when it is unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable cache record ({e}); delete it to fetch the weights again") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: unreadable cache record; delete it to fetch the weights again")
    return record


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex digest) of a file."""
    with open(path, "rb") as f:
        return os.fstat(f.fileno()).st_size, hashlib.file_digest(f, "sha256").hexdigest()


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A cached state_dict, plain tensors only."""
    try:
        with warnings.catch_warnings():  # torch's warnings about an odd file: the error below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: unreadable ({str(e).strip()[:120]}); delete it to fetch the weights again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state_dict of tensors; delete it to fetch the weights again")
    return state


@contextmanager
def locked(path: Path, waiting: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed; the OS frees it when the process dies). When another
    process holds it, ``log(waiting)`` once, then wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{waiting} ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
