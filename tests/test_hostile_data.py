"""Hostile or mistyped data: a label far beyond the rest is one line naming file:line, with no allocation that grows
with its value (checked under an address-space limit); class folders take every image format the readers decode and
say which files they leave out."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgcls.limits import MAX_INFERRED_CLASSES

from .cli_helpers import (
    one_error_line,
    one_line_error,
    parse_train,
    run_limited,
    run_python_limited,
    tiny_shapes,
    tiny_train,
)

ALLOWANCE = 600 << 20  # a tiny training run; a class count of 2e9 would need gigabytes


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


def with_label(data: Path, root: Path, split: str, line: int, label: int) -> Path:
    """A copy of ``data`` whose ``split`` list has ``label`` on line ``line`` (1-based); no labels.txt."""
    shutil.copytree(data, root)
    (root / "labels.txt").unlink()
    path = root / f"{split}_list.txt"
    lines = path.read_text().splitlines()
    lines[line - 1] = f"{lines[line - 1].rsplit(' ', 1)[0]} {label}"
    path.write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_huge_label_is_one_line_naming_file_and_line_in_bounded_memory(data, tmp_path, split):
    typo = with_label(data, tmp_path / "typo", split, 5, 2_000_000_000)
    run = run_limited("imgcls.train", tiny_train(typo, tmp_path / "out", "--num_epochs=1"), ALLOWANCE)
    err = one_error_line(run)
    assert f"{typo / f'{split}_list.txt'}:5: label 2000000000" in err and "--class_dim" in err, err
    assert not (tmp_path / "out").exists()


def test_the_label_limit_is_the_documented_cap_and_class_dim_moves_it(data, tmp_path, capsys):
    from imgcls import train as train_cli

    at_cap = with_label(data, tmp_path / "cap", "train", 3, MAX_INFERRED_CLASSES)
    err = one_line_error(capsys, lambda: train_cli.configure(parse_train(*tiny_train(at_cap, tmp_path / "o"))))
    assert f"{at_cap / 'train_list.txt'}:3: label {MAX_INFERRED_CLASSES} " in err
    err = one_line_error(capsys, lambda: train_cli.configure(parse_train(*tiny_train(data, tmp_path, "--class_dim=7"))))
    assert "train_list.txt:" in err and "outside 0..6 (--class_dim 7)" in err, err
    config, _ = train_cli.configure(parse_train(*tiny_train(at_cap, tmp_path / "o", f"--class_dim={100_001}")))
    assert config.num_classes == MAX_INFERRED_CLASSES + 1
    capsys.readouterr()


SPARSE_WARNING = """
from pathlib import Path
from imgcls.cli.data import warn_sparse_labels
from imgcls.data import DatasetSpec, Sample
classes = int(sys.argv[1])
samples = [Sample("a.jpg", 0), Sample("b.jpg", 5), Sample("c.jpg", classes - 1)]
warn_sparse_labels(DatasetSpec(Path("."), samples, samples, classes, None, builtin=False))
"""


def test_the_sparse_label_warning_costs_nothing_per_class():
    """The warning's work follows the samples, not the class count: 10**12 classes are counted, not listed (under
    an address-space limit: a list of them would need terabytes)."""
    classes = 10**12
    run = run_python_limited(SPARSE_WARNING, [str(classes)], 64 << 20)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr == (
        f"warning: {classes - 3} of the {classes} classes have no train image (labels 1-4, 6-{classes - 2}); the "
        f"class count comes from the largest label, {classes - 1}: is a label mistyped?\n"
    )


def write_image(path: Path, extension: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)  # JPEG 2000 wants 32 px or more
    if extension == ".gif":  # OpenCV writes no GIF: a minimal one by hand (1x1, one color)
        path.write_bytes(
            b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
            b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
        )
        return
    assert cv2.imwrite(str(path), pixels[..., 0] if extension == ".pgm" else pixels), path


READABLE = [
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".gif",
    ".ppm",
    ".pgm",
    ".jp2",
    ".ras",
    ".hdr",
    ".avif",
]


def test_class_folders_take_every_format_the_readers_decode_and_name_what_they_leave_out(tmp_path, capsys):
    from imgcls.cli.data import resolve_data
    from imgcls.data.preprocess import PreprocessSpec
    from imgcls.data.readers import make_reader

    for split in ("train", "val"):
        for i, extension in enumerate(READABLE):
            write_image(tmp_path / split / ("a" if i % 2 else "b") / f"{i}{extension}", extension)
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "b" / "labels.csv").write_text("x")
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"\0")
    dataset = resolve_data(str(tmp_path))
    assert sorted(Path(s.path).suffix for s in dataset.train) == sorted(READABLE)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: {tmp_path}: 2 files in the class folders are not images by their extension and are left out "
        f"(.csv 1, .txt 1; e.g. {tmp_path / 'train' / 'a' / 'notes.txt'})"
    ], err
    reader = make_reader("opencv", PreprocessSpec(8, 8, (0.5,) * 3, (0.2,) * 3), train=False)
    paths = [s.path for s in dataset.train]
    errors = reader.read_batch(paths, [0] * len(paths), np.empty((len(paths), 8, 8, 3), np.uint8))
    assert all(e is None for e in errors), list(zip(paths, errors))
