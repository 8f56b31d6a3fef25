"""Odd file names and list files: non-UTF-8 names in lists, folders and CLI output, a UTF-8 BOM, UTF-16 lists.

On Linux a file name is bytes; Python hands a name that is not UTF-8 over as a str with surrogate escapes
(``os.fsdecode``). A list file names such a file with the same bytes, and every printed line (predictions,
the skipped-image report) shows it with a backslash escape instead of crashing the print.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from imgcls import engine
from imgcls import infer as infer_cli
from imgcls import train as train_cli
from imgcls.data.datasets import DataError, load_dataset, load_labels, parse_list_file
from imgcls.data.read_report import printable
from imgcls.models import create_model

from .conftest import require_native

LATIN1_NAME = os.fsdecode(b"caf\xe9.jpg")  # 'caf\udce9.jpg', as os.listdir gives it
MODEL = "ShuffleNetV2_x0_25"


def write_image(path: Path, seed: int = 0) -> None:
    """A small JPEG written through bytes (cv2.imwrite crashes the interpreter on a surrogate-escaped name)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", pixels)[1].tobytes())


def test_printable_escapes_what_is_not_utf8():
    assert printable(LATIN1_NAME) == "caf\\xe9.jpg"
    assert printable("plain/é.jpg") == "plain/é.jpg"
    printable(LATIN1_NAME).encode("utf-8")  # printable on any UTF-8 stream


def test_list_file_names_non_utf8_files_and_loses_its_bom(tmp_path):
    write_image(tmp_path / "train" / LATIN1_NAME)
    write_image(tmp_path / "train" / "plain.jpg")
    lines = b"\xef\xbb\xbftrain/caf\xe9.jpg 0\ntrain/plain.jpg 1\n"  # a BOM, then a Latin-1 byte in a name
    (tmp_path / "train_list.txt").write_bytes(lines)
    samples = parse_list_file(tmp_path / "train_list.txt")
    assert [s.label for s in samples] == [0, 1]
    assert [Path(s.path).name for s in samples] == [LATIN1_NAME, "plain.jpg"]
    assert all(Path(s.path).is_file() for s in samples)


@pytest.mark.parametrize(
    "data, line",
    [
        ("train/a.jpg 0\ntrain/b.jpg 1\n".encode("utf-16"), 1),  # Notepad's "Unicode": BOM FF FE, then NULs
        (b"train/a.jpg 0\ntrain/b\x00.jpg 1\n", 2),
    ],
    ids=["utf16", "nul"],
)
def test_list_file_that_is_not_text_is_a_one_line_error_with_file_and_line(tmp_path, data, line):
    (tmp_path / "train_list.txt").write_bytes(data)
    (tmp_path / "val_list.txt").write_bytes(b"train/a.jpg 0\n")
    with pytest.raises(DataError, match=rf"train_list\.txt:{line}: .*UTF-8") as e:
        load_dataset(tmp_path)
    assert "\n" not in str(e.value)


def test_labels_file_not_utf8_is_an_error_with_file_and_line(tmp_path):
    (tmp_path / "labels.txt").write_bytes(b"\xef\xbb\xbfcat\ndog\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"labels\.txt:3: .*UTF-8"):
        load_labels(tmp_path / "labels.txt")
    (tmp_path / "labels.txt").write_bytes(b"\xef\xbb\xbfcat\ndog\n")
    assert load_labels(tmp_path / "labels.txt") == ["cat", "dog"]  # no BOM glued to the first name


def test_skipped_report_prints_non_utf8_names(capsys):
    engine.report_skipped([(f"/data/{LATIN1_NAME}", f"cannot open /data/{LATIN1_NAME}")])
    out = capsys.readouterr().out
    assert "/data/caf\\xe9.jpg: cannot open /data/caf\\xe9.jpg" in out


@pytest.mark.parametrize("reader", ["opencv", "native"])
def test_infer_predicts_a_non_utf8_file_name(tmp_path, capsys, reader):
    if reader == "native":
        require_native()
    weights = tmp_path / "w.pt"
    torch.save(create_model(MODEL, num_classes=10).state_dict(), weights)
    image = tmp_path / LATIN1_NAME
    write_image(image)
    flags = [f"--model={MODEL}", f"--pretrained_model={weights}", f"--reader={reader}", "--image_shape=3,32,32"]
    results = infer_cli.main(infer_cli.get_args_parser().parse_args([*flags, "--image", str(image)]))
    assert [path for path, _ in results] == [str(image)]
    assert f"{tmp_path}/caf\\xe9.jpg: " in capsys.readouterr().out


def test_train_on_a_class_folder_with_non_utf8_names_native_reader(tmp_path, capsys):
    """The default reader on a folder dataset whose names os.scandir gives with surrogate escapes; the one corrupt
    file among them is skipped and reported by its (escaped) name."""
    require_native()
    data = tmp_path / "data"
    for split, count in (("train", 4), ("val", 2)):
        for c, folder in enumerate((os.fsdecode(b"cl\xe0sse"), "plain")):
            for i in range(count):
                write_image(data / split / folder / os.fsdecode(b"img%d-\xe9.jpg" % i), seed=10 * c + i)
    (data / "train" / "plain" / LATIN1_NAME).write_bytes(b"\xff\xd8 not really a jpeg")
    flags = [f"--model={MODEL}", f"--data_dir={data}", f"--model_save_dir={tmp_path / 'out'}", "--reader=native"]
    flags += ["--reader_thread=1", "--image_shape=3,32,32", "--batch_size=3", "--num_epochs=1", "--tensorboard=False"]
    train_cli.main(train_cli.get_args_parser().parse_args(flags))
    out = capsys.readouterr().out
    assert "skipped 1 unreadable images" in out and "plain/caf\\xe9.jpg: " in out
