"""Hostile and damaged weights tars, fetched through the hub or given by path: memory bounded by the model, one
``error:`` line and exit status 2, and nothing left in ``$IMGCLS_HOME/weights`` that a later run trusts.

The tars are the real Paddle-written one of tests/weights_server.py, changed the way an attacker or a broken mirror
would: GNU sparse members that claim gigabytes in a few KB, a gzip bomb, a tar cut short whose Content-Length
matches. Each CLI runs in a subprocess whose address space may grow by ``ALLOWANCE`` past its imports, far less
than the gigabytes the hostile members claim.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from imgcls.convert import convert_paddle_checkpoint
from imgcls.hub import cache_paths, released_weights
from imgcls.models import get_model_cfg

from .cli_helpers import one_error_line, run_limited
from .conftest import PARITY, require_shared
from .test_convert import _varint

MODEL = "ShuffleNetV2_x0_25"
TAR = f"{MODEL}_pretrained.tar"
FOLDER = f"{MODEL}_pretrained"
ALLOWANCE = 400 << 20  # the real conversion needs ~10 MB more than its imports
CLAIMED = 3_000_000_000  # what each hostile member claims to hold (bytes)
BOMB_ZEROS = 1 << 30  # the gzip bomb's member: 1 GB of zeros in ~1 MB


def real_tar() -> Path:
    """The real Paddle-written tar of shared/ (a failure on CI when it is missing, a skip elsewhere)."""
    return require_shared(PARITY / "checkpoints" / TAR)


def real_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(real_tar()) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def tensor_header(dims: tuple[int, ...]) -> bytes:
    """The bytes before the data of a float32 Paddle LoDTensor file of shape ``dims`` (test_convert's writer of the
    format, which shares nothing with the converter, without the data)."""
    desc = b"\x08\x05" + b"".join(b"\x10" + _varint(d) for d in dims)
    return (0).to_bytes(4, "little") + (0).to_bytes(8, "little") + (0).to_bytes(4, "little") + len(desc).to_bytes(
        4, "little"
    ) + desc  # fmt: skip


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def regular(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(tarfile.GNU_FORMAT) + padded(data)


def field12(n: int) -> bytes:
    """A 12-byte numeric field of a GNU tar header (octal, or base-256 past 8 GB)."""
    return tarfile.itn(n, 12, tarfile.GNU_FORMAT)


def sparse(name: str, stored: bytes, real_size: int) -> bytes:
    """An old-GNU sparse member (type 'S'): ``stored`` at offset 0, then a hole up to ``real_size`` bytes, in a few
    hundred bytes of archive. Readers see a file of ``real_size`` bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(stored)
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = b"S"
    entries = [(0, len(stored))] + [(real_size, 0)] * 3
    for i, (offset, size) in enumerate(entries):
        header[386 + 24 * i : 410 + 24 * i] = field12(offset) + field12(size)
    header[482] = 0  # no extension blocks
    header[483:495] = field12(real_size)
    checksum = 256 + sum(header[:148]) + sum(header[156:512])
    header[148:156] = b"%06o\0 " % checksum
    return bytes(header) + padded(stored)


def archive(*blocks: bytes) -> bytes:
    return b"".join(blocks) + b"\0" * (2 * tarfile.BLOCKSIZE)


def real_blocks(*drop: str) -> list[bytes]:
    """The real tar's members as archive blocks, but those named ``drop``."""
    return [regular(info.name, data) for info, data in real_members() if Path(info.name).name not in drop]


def sparse_tensor_misshapen() -> bytes:
    """The classifier weights replaced by a sparse member holding the 3 GB tensor its header describes."""
    header = tensor_header((CLAIMED // 4,))
    return archive(*real_blocks("fc6_weights"), sparse(f"{FOLDER}/fc6_weights", header, len(header) + CLAIMED))


def sparse_tensor_padded() -> bytes:
    """The classifier bias with its right header, in a member that claims 3 GB."""
    return archive(*real_blocks("fc6_offset"), sparse(f"{FOLDER}/fc6_offset", tensor_header((1000,)), CLAIMED))


def sparse_non_tensor() -> bytes:
    """The real tar plus a 3 GB member that is no tensor."""
    return archive(*real_blocks(), sparse(f"{FOLDER}/notes", b"not a tensor", CLAIMED))


def sparse_unused_tensor() -> bytes:
    """The real tar plus a consistent 3 GB tensor the model has no place for."""
    header = tensor_header((CLAIMED // 4,))
    return archive(*real_blocks(), sparse(f"{FOLDER}/velocity_0", header, CLAIMED + len(header)))


def gzip_bomb() -> bytes:
    """The real tar, gzip-compressed, with a member of 1 GB of zeros: ~1 MB to download. gzip streams concatenate,
    so the zeros are one small compressed chunk repeated."""
    chunk = 1 << 24
    zeros = gzip.compress(bytes(chunk), compresslevel=9)
    junk = tarfile.TarInfo(f"{FOLDER}/zeros")
    junk.size = BOMB_ZEROS
    head = gzip.compress(b"".join(real_blocks()) + junk.tobuf(tarfile.GNU_FORMAT), compresslevel=1)
    return head + zeros * (BOMB_ZEROS // chunk) + gzip.compress(b"\0" * (2 * tarfile.BLOCKSIZE))


def cut_short() -> bytes:
    """The real tar cut inside a member: served whole, with a Content-Length that matches."""
    data = real_tar().read_bytes()
    return data[: len(data) // 2 + 100]


def cache_left() -> set[str]:
    folder = cache_paths(get_model_cfg(MODEL)).weights.parent
    return {p.name for p in folder.iterdir() if not p.name.endswith(".lock")} if folder.exists() else set()


def an_image(folder: Path) -> str:
    path = folder / "cat.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    return str(path)


def hand_converted() -> dict[str, torch.Tensor]:
    return convert_paddle_checkpoint(real_tar(), MODEL)[0]


def assert_good_weights_now(server) -> None:
    """A later run with a good mirror gets the right weights: nothing of the failed one is trusted."""
    server.files[TAR] = real_tar()
    got, want = released_weights(MODEL), hand_converted()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_the_hostile_tars_are_what_they_claim(tmp_path):
    """The builders above: tarfile sees 3 GB members, the bomb decompresses to over 1 GB, the cut tar fails."""
    path = tmp_path / "t.tar"
    path.write_bytes(sparse_non_tensor())
    with tarfile.open(path) as tar:
        notes = tar.getmember(f"{FOLDER}/notes")
        assert notes.issparse() and notes.size == CLAIMED
        assert tar.extractfile(notes).read(20) == b"not a tensor" + bytes(8)
    assert path.stat().st_size < real_tar().stat().st_size + 4096
    bomb = gzip_bomb()
    assert len(bomb) < real_tar().stat().st_size + (2 << 20)  # for a member of 1 GB
    with tarfile.open(fileobj=io.BytesIO(bomb), mode="r:gz") as tar:
        zeros = tar.getmember(f"{FOLDER}/zeros")
        assert zeros.size == BOMB_ZEROS and tar.extractfile(zeros).read(1 << 20) == bytes(1 << 20)
    path.write_bytes(cut_short())
    with pytest.raises((tarfile.TarError, EOFError, OSError)), tarfile.open(path) as tar:
        for member in tar:
            if member.isfile():
                tar.extractfile(member).read()


HOSTILE = {
    "sparse-misshapen-tensor": (sparse_tensor_misshapen, "fc6_weights: Paddle shape (750000000,) does not fit"),
    "sparse-padded-tensor": (sparse_tensor_padded, "fc6_offset: the file holds 3000000000 bytes but its header"),
    "sparse-non-tensor": (sparse_non_tensor, "1 non-tensor files skipped: notes"),
    "sparse-unused-tensor": (sparse_unused_tensor, "1 Paddle tensors not used: velocity_0"),
    "gzip-bomb": (gzip_bomb, "the gzip archive decompresses to more than"),
    "cut-short": (cut_short, "truncated or corrupt tar archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_download_is_bounded_one_line_and_leaves_nothing_trusted(weights_server, tmp_path, case):
    build, words = HOSTILE[case]
    served = tmp_path / "served.tar"
    served.write_bytes(build())
    weights_server.files[TAR] = served
    flags = ["--model", MODEL, f"--pretrained_model={MODEL}", "--reader=opencv", "--image", an_image(tmp_path)]
    err = one_error_line(run_limited("imgcls.infer", flags, ALLOWANCE))
    assert words in err and TAR in err, err
    assert not cache_left() & {f"{MODEL}.pt", f"{MODEL}.json", TAR}, cache_left()
    assert_good_weights_now(weights_server)


def huge_classifier() -> bytes:
    """The classifier replaced by consistent 3 GB members: 1.5 million classes (no class count is given by path)."""
    classes = CLAIMED // (4 * 512)
    weights_header, bias_header = tensor_header((512, classes)), tensor_header((classes,))
    weights = sparse(f"{FOLDER}/fc6_weights", weights_header, len(weights_header) + 512 * classes * 4)
    bias = sparse(f"{FOLDER}/fc6_offset", bias_header, len(bias_header) + classes * 4)
    return archive(*real_blocks("fc6_weights", "fc6_offset"), weights, bias)


def long_name() -> bytes:
    """A GNU long-name record that announces a 3 GB file name (tarfile reads such records whole)."""
    record = tarfile.TarInfo("././@LongLink")
    record.type, record.size = tarfile.GNUTYPE_LONGNAME, CLAIMED
    return archive(record.tobuf(tarfile.GNU_FORMAT), *real_blocks())


@pytest.mark.parametrize(
    "build, cli, words",
    [
        (huge_classifier, "imgcls.infer", "1464843 classes"),
        (long_name, "imgcls.convert", "a tar header record of 3000000000 bytes"),
    ],
    ids=["huge-classifier-infer", "long-name-convert"],
)
def test_a_hostile_tar_given_by_path_is_bounded_and_one_line(tmp_path, build, cli, words):
    path = tmp_path / TAR
    path.write_bytes(build())
    if cli == "imgcls.infer":
        flags = ["--model", MODEL, f"--pretrained_model={path}", "--reader=opencv", "--image", an_image(tmp_path)]
    else:
        flags = ["--model", MODEL, "--paddle", str(path), "--out", str(tmp_path / "out.pt")]
    err = one_error_line(run_limited(cli, flags, ALLOWANCE))
    assert str(path) in err and words in err, err


@pytest.mark.parametrize("error", [MemoryError, RuntimeError, OSError, tarfile.ReadError, EOFError])
def test_any_failure_while_converting_a_download_leaves_nothing_trusted(weights_server, monkeypatch, error):
    from imgcls.hub import weights

    real_convert, calls = weights.convert_paddle_checkpoint, []

    def fails_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise error("boom")
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(weights, "convert_paddle_checkpoint", fails_once)
    with pytest.raises(ValueError) as caught:
        released_weights(MODEL)
    assert "boom" in str(caught.value) and "\n" not in str(caught.value) and TAR in str(caught.value)
    assert not cache_left() & {f"{MODEL}.pt", f"{MODEL}.json", TAR}, cache_left()
    assert_good_weights_now(weights_server)
    assert len(calls) == 2
