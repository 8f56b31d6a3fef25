"""Availability and fallbacks: an unloadable module, images read through the OpenCV reference."""

from __future__ import annotations

import importlib
import threading
import warnings

import numpy as np
import pytest

from imgcls.data import readers as reader_module
from imgcls.data import transforms as T
from imgcls.data.readers import OpenCVReader, make_reader
from imgcls.data.readers.native import NativeReader

from .helpers import spec

# The unloadable case needs a built module to find (and then fail to load).
pytestmark = pytest.mark.usefixtures("needs_native")


def test_unloadable_native_module_falls_back_with_one_warning(monkeypatch):
    """A built module that cannot load (its libjpeg .so missing): "auto" warns once and reads with OpenCV."""
    real_import = importlib.import_module

    def failing_import(name: str, *args, **kwargs):
        if name == "imgcls._reader":
            raise ImportError("libjpeg.so.62: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", failing_import)
    monkeypatch.setattr(reader_module, "_warned_native_missing", False)
    args = dict(train=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        readers = [make_reader("auto", spec(8, 9), **args), make_reader("auto", spec(8, 9), **args)]
    assert all(isinstance(r, OpenCVReader) for r in readers)
    assert len(caught) == 1 and "not loadable" in str(caught[0].message) and "libjpeg.so.62" in str(caught[0].message)
    with pytest.raises(RuntimeError, match="not loadable"):
        make_reader("native", spec(8, 9), **args)


def test_fallback_images_read_on_the_reader_threads(files):
    """Non-JPEG files and interpolations the C++ reader lacks go through OpenCV on num_threads threads."""
    paths = [files["png"]] * 6 + [files["baseline_420"]]
    seeds = list(range(len(paths)))
    for aug in (T.AugConfig(), T.AugConfig(interpolation="cubic")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = NativeReader(True, 40, 48, aug, num_threads=3)
        used = set()
        fill = reader._reference.fill

        def recording_fill(*a, fill=fill, used=used):
            used.add(threading.current_thread().name)
            return fill(*a)

        reader._reference.fill = recording_fill
        out = np.zeros((len(paths), 40, 40, 3), np.uint8)
        assert reader.read_batch(paths, seeds, out) == [None] * len(paths)
        assert used and all(name.startswith("imgcls-reader") for name in used), used
        ref = OpenCVReader(True, 40, 48, aug)
        for i in range(6):
            assert np.array_equal(out[i], ref.read_one(paths[i], seeds[i]))
        reader.close()
