"""Paddle's released weights on demand (imgcls.hub): download, resume, convert, cache, verify, lock, offline.

No internet: every test fetches from a loopback server (tests/weights_server.py) that serves the real Paddle-written
tars of shared/paddle_parity/checkpoints through ``$IMGCLS_WEIGHTS_MIRROR``, with ``$IMGCLS_HOME`` in a temp folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from imgcls.convert import convert_paddle_checkpoint
from imgcls.hub import MIRROR_ENV, OFFLINE_ENV, DownloadError, cache_paths, released_weights
from imgcls.hub.progress import Progress, human_bytes
from imgcls.models import get_model_cfg

from .conftest import PARITY

MODEL, OTHER = "ShuffleNetV2_x0_25", "SqueezeNet1_1"
TAR = f"{MODEL}_pretrained.tar"


def real_tar(name: str = MODEL) -> Path:
    return PARITY / "checkpoints" / f"{name}_pretrained.tar"


def hand_converted(name: str = MODEL) -> dict[str, torch.Tensor]:
    """What a user gets by downloading the tar and converting it by hand."""
    return convert_paddle_checkpoint(real_tar(name), name)[0]


def assert_same_state(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def cache_files() -> set[str]:
    """What the weights cache holds, lock files aside."""
    folder = cache_paths(get_model_cfg(MODEL)).weights.parent
    return {p.name for p in folder.iterdir() if not p.name.endswith(".lock")} if folder.exists() else set()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_use_fetches_converts_and_records_then_reads_the_cache(weights_server):
    state = released_weights(MODEL)
    assert_same_state(state, hand_converted())
    assert len(weights_server.gets(TAR)) == 1
    assert cache_files() == {f"{MODEL}.pt", f"{MODEL}.json"}  # the tar's tensors live in the .pt
    paths = cache_paths(get_model_cfg(MODEL))
    record = json.loads(paths.record.read_text())
    assert record["tar"] == {"file": TAR, "size": real_tar().stat().st_size, "sha256": sha256(real_tar())}
    assert record["weights"]["sha256"] == sha256(paths.weights)
    assert record["url"] == f"{weights_server.url}/{TAR}"

    assert_same_state(released_weights(MODEL), state)
    assert len(weights_server.gets(TAR)) == 1  # the second use makes no request


def other_models_tar(server, tmp_path: Path) -> None:
    server.files[TAR] = real_tar(OTHER)


def tar_with_extra_file(server, tmp_path: Path) -> None:
    """The real tar plus one tensor file the model has no place for: the converter must place everything."""
    out = tmp_path / "extra.tar"
    with tarfile.open(real_tar()) as src, tarfile.open(out, "w") as dst:
        members = [m for m in src.getmembers() if m.isfile()]
        for member in members:
            dst.addfile(member, src.extractfile(member))
        extra = tarfile.TarInfo(str(Path(members[0].name).parent / "extra_var"))
        extra.size = members[0].size
        dst.addfile(extra, src.extractfile(members[0]))
    server.files[TAR] = out


def not_a_tar(server, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(50_000))
    server.files[TAR] = junk


@pytest.mark.parametrize(
    "setup, error, words",
    [
        ("404", DownloadError, "HTTP 404"),
        ("html", DownloadError, "sent an HTML page"),
        ("truncate", DownloadError, "ended after 1000 of"),
        (other_models_tar, ValueError, f"is not {MODEL}'s weights"),
        (tar_with_extra_file, ValueError, "1 Paddle tensors not used: extra_var"),
        (not_a_tar, ValueError, "did not send a tar archive"),
    ],
    ids=["404", "html", "truncated", "other-model", "extra-tensor", "not-a-tar"],
)
def test_a_bad_response_is_one_clear_error_and_caches_nothing(weights_server, tmp_path, setup, error, words):
    if isinstance(setup, str):
        weights_server.behaviours = [setup]
    else:
        setup(weights_server, tmp_path)
    with pytest.raises(error) as caught:
        released_weights(MODEL)
    message = str(caught.value)
    assert words in message and "\n" not in message and f"{weights_server.url}/{TAR}" in message
    left = cache_files()
    assert not left & {f"{MODEL}.pt", f"{MODEL}.json", TAR}, left  # nothing a later load would take as weights
    assert left <= ({f"{TAR}.part", f"{TAR}.part.tag"} if setup == "truncate" else set())

    weights_server.files[TAR] = real_tar()  # the host recovers: the next call gets the right weights
    assert_same_state(released_weights(MODEL), hand_converted())


@pytest.mark.parametrize("retry, status", [("ok", 206), ("no-range", 200)], ids=["resume", "restart"])
def test_an_interrupted_download_resumes_or_restarts(weights_server, retry, status):
    weights_server.behaviours = ["truncate", retry]
    with pytest.raises(DownloadError, match="run again to resume"):
        released_weights(MODEL)
    part = cache_paths(get_model_cfg(MODEL)).part
    assert part.stat().st_size == weights_server.truncate_at
    assert_same_state(released_weights(MODEL), hand_converted())
    first, second = weights_server.gets(TAR)
    assert first["range"] is None and second["range"] == f"bytes={weights_server.truncate_at}-"
    assert second["status"] == status
    assert cache_files() == {f"{MODEL}.pt", f"{MODEL}.json"}


FETCH_AND_SUM = (
    "import sys\n"
    "from imgcls.hub import released_weights\n"
    "print('ready', flush=True)\n"
    "state = released_weights(sys.argv[1])\n"
    "print(repr(sum(float(v.double().sum()) for v in state.values())))\n"
)


def test_two_processes_fetching_at_once_download_once_and_both_get_the_weights(weights_server):
    """The first process is held mid-body by the server until the second has started, found the download under way
    and waits for it; then both finish with the same weights and one good cache."""
    weights_server.behaviours = ["gate"]
    env = dict(os.environ)
    command = [sys.executable, "-c", FETCH_AND_SUM, MODEL]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waited, second = False, None
    try:
        deadline = time.monotonic() + 300
        while not weights_server.gets(TAR) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first process is mid-download
        second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in iter(second.stderr.readline, ""):
            if "waiting for another process" in line:
                waited = True
                break
    finally:
        weights_server.gate.set()
        outs = [p.communicate(timeout=300) for p in (first, second) if p is not None]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert waited, "the second process did not wait for the first"
    sums = [out.splitlines()[-1] for out, _ in outs]
    assert sums[0] == sums[1]
    assert len(weights_server.gets(TAR)) == 1
    assert cache_files() == {f"{MODEL}.pt", f"{MODEL}.json"}
    assert_same_state(released_weights(MODEL), hand_converted())


def test_offline_names_the_url_and_where_a_hand_downloaded_tar_is_picked_up(weights_server, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    paths = cache_paths(get_model_cfg(MODEL))
    with pytest.raises(DownloadError) as caught:
        released_weights(MODEL)
    message = str(caught.value)
    assert f"{weights_server.url}/{TAR}" in message and str(paths.tar) in message and "\n" not in message
    assert weights_server.requests == []

    paths.tar.parent.mkdir(parents=True, exist_ok=True)
    paths.tar.write_bytes(real_tar().read_bytes())  # the user downloads it by hand
    assert_same_state(released_weights(MODEL), hand_converted())
    assert weights_server.requests == [] and not paths.tar.exists()
    assert json.loads(paths.record.read_text())["placed_by_hand"] is True


def test_no_network_names_the_url_and_the_cache_path(weights_server, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv(MIRROR_ENV, closed)
    with pytest.raises(DownloadError) as caught:
        released_weights(MODEL)
    message = str(caught.value)
    assert f"cannot reach {closed}/{TAR}" in message and str(cache_paths(get_model_cfg(MODEL)).tar) in message
    assert cache_files() == set()


def retarred_with_one_value_changed(tmp_path: Path) -> Path:
    """The real tar, rebuilt with the last byte of one tensor changed: a valid tar of the same model."""
    out = tmp_path / "changed.tar"
    with tarfile.open(real_tar()) as src, tarfile.open(out, "w") as dst:
        members = [m for m in src.getmembers() if m.isfile()]
        for member in members:
            data = bytearray(src.extractfile(member).read())
            if member is members[0]:
                data[-1] ^= 0x01
            dst.addfile(member, io.BytesIO(bytes(data)))
    return out


def test_the_cache_is_checked_and_a_refetch_must_match_the_first_tar(weights_server, tmp_path, capsys):
    paths = cache_paths(get_model_cfg(MODEL))
    released_weights(MODEL)
    damaged = bytearray(paths.weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    paths.weights.write_bytes(bytes(damaged))
    assert_same_state(released_weights(MODEL), hand_converted())  # noticed, fetched again, checked
    assert len(weights_server.gets(TAR)) == 2 and "does not match its record" in capsys.readouterr().err

    paths.weights.unlink()
    weights_server.files[TAR] = retarred_with_one_value_changed(tmp_path)
    with pytest.raises(ValueError, match="differs from the one first fetched") as caught:
        released_weights(MODEL)
    assert str(paths.record) in str(caught.value)
    assert cache_files() == {f"{MODEL}.json"}  # the pin stays, the new tar is not taken


def test_the_cache_is_loaded_as_plain_tensors_only(weights_server):
    """A .pt whose pickle would build an arbitrary object is refused even when its record matches."""
    paths = cache_paths(get_model_cfg(MODEL))
    released_weights(MODEL)
    torch.save({"fc.weight": torch.zeros(1), "evil": Path("/")}, paths.weights)
    record = json.loads(paths.record.read_text())
    record["weights"].update(size=paths.weights.stat().st_size, sha256=sha256(paths.weights))
    paths.record.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="unreadable"):
        released_weights(MODEL)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_bytes_rate_and_eta_on_a_terminal_and_two_lines_elsewhere():
    assert (human_bytes(512), human_bytes(1536), human_bytes(3 << 30)) == ("512 B", "1.5 KB", "3.0 GB")
    tty = Terminal()
    bar = Progress("x.tar", 4 << 20, stream=tty)
    bar.update(1 << 20)
    bar.close(ok=True)
    shown = tty.getvalue()  # tqdm's bar: label, percentage, bytes, [elapsed<ETA, rate]
    assert shown.startswith("\rx.tar:") and shown.endswith("\n"), shown
    last = shown.rstrip("\n").split("\r")[-1]
    assert "25%" in last and "1.00M/4.00M" in last and re.search(r"\[\d\d:\d\d<\d\d:\d\d, ", last), last
    log = io.StringIO()
    bar = Progress("x.tar", 4 << 20, done=1 << 20, stream=log)
    bar.update(3 << 20)
    bar.close(ok=True)
    lines = log.getvalue().splitlines()
    assert lines[0] == "downloading x.tar (4.0 MB, resuming at 1.0 MB)"
    assert lines[1].startswith("downloaded x.tar: 4.0 MB in ") and len(lines) == 2


def test_one_home_for_weights_and_the_builtin_data(monkeypatch, tmp_path):
    from imgcls.data.builtin import cache_root
    from imgcls.home import imgcls_home, weights_dir

    monkeypatch.delenv("IMGCLS_HOME", raising=False)
    monkeypatch.delenv("IMGCLS_CACHE", raising=False)
    assert imgcls_home() == Path.home() / ".cache" / "imgcls"
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "old"))
    assert imgcls_home() == tmp_path / "old"  # the older name still works
    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path / "new"))
    assert imgcls_home() == cache_root() == tmp_path / "new" and weights_dir() == tmp_path / "new" / "weights"
