"""File names that are not valid UTF-8 (a Latin-1 é, as os.listdir hands it over: a str with a surrogate escape).

Both readers read them (the native one gets the path as bytes, as Python's own file functions do), errors about
them come back as text, and a class-folder dataset of such names trains with the native reader.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from imgcls.data.datasets import load_dataset
from imgcls.data.loader import Loader
from imgcls.data.readers import make_reader

from ..conftest import require_native
from .helpers import spec

LATIN1_NAME = os.fsdecode(b"caf\xe9.jpg")  # 'caf\udce9.jpg'


def test_the_name_is_not_utf8():
    with pytest.raises(UnicodeEncodeError):
        LATIN1_NAME.encode("utf-8")


@pytest.mark.parametrize("kind", ["opencv", "native"])
def test_readers_read_non_utf8_file_names(tmp_path, variants, photo, kind):
    if kind == "native":
        require_native()
    odd = tmp_path / LATIN1_NAME
    odd.write_bytes(variants["baseline_420"])
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(variants["baseline_420"])
    odd_png = tmp_path / os.fsdecode(b"\xff\xfe-\xe9.png")  # not a JPEG: the native reader hands it to OpenCV
    odd_png.write_bytes(cv2.imencode(".png", photo[..., ::-1])[1].tobytes())  # cv2.imwrite crashes on such a name
    missing = tmp_path / os.fsdecode(b"gone-\xe9.jpg")
    paths = [str(odd), str(plain), str(odd_png), str(missing)]
    seeds = [5, 5, 6, 7]
    reader = make_reader(kind, spec(48, 56), train=True, num_threads=2)
    out = np.zeros((len(paths), 48, 48, 3), np.uint8)
    errors = reader.read_batch(paths, seeds, out)
    assert errors[:3] == [None, None, None], errors
    assert isinstance(errors[3], str) and "gone-" in errors[3]
    assert np.array_equal(out[0], out[1])  # the same bytes under a plain name
    if kind == "native":  # the same-pass normalized entry takes the same paths
        normalized = np.zeros((len(paths), 3, 48, 48), np.float32)
        scale, shift = np.full(3, 1 / 255, np.float32), np.zeros(3, np.float32)
        assert reader.read_batch_normalized(paths, seeds, normalized, scale, shift) == errors
        assert np.array_equal(normalized[0], normalized[1])
    reader.close()


def test_class_folder_dataset_with_non_utf8_names_trains_with_the_native_reader(tmp_path, variants):
    """Folder and file names from os.scandir, one class folder itself Latin-1: every image read, none skipped."""
    require_native()
    for split in ("train", "val"):
        for folder in (os.fsdecode(b"cl\xe0sse"), "plain"):
            (tmp_path / split / folder).mkdir(parents=True)
            (tmp_path / split / folder / LATIN1_NAME).write_bytes(variants["baseline_420"])
            (tmp_path / split / folder / "other.jpg").write_bytes(variants["progressive_420"])
    dataset = load_dataset(tmp_path)
    assert len(dataset.train) == 4 and any(LATIN1_NAME in s.path for s in dataset.train)
    args = dict(batch_size=2, preprocess=spec(32, 40, mean=(0.5,) * 3, std=(0.25,) * 3))
    loader = Loader(dataset.train, train=True, **args, random_seed=0, num_workers=2, prefetch=1, reader="native")
    images = sum(len(labels) for _, labels in loader)
    loader.close()
    assert images == 4 and loader.skipped == []
