"""Packaging: what setup.py puts where, and what a build without libjpeg-turbo says. The full round trip (wheel with
pip's build isolation -> fresh venv -> train and infer from outside the checkout) is .ci/smoke_install.sh, run by CI.

The build checks run setup.py on a copy of the sources in a temp folder, so the checkout's build/ is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest

from imgcls.data import readers as reader
from imgcls.data.preprocess import PreprocessSpec
from imgcls.data.transforms import AugConfig

from .conftest import REPO

SOURCES = ("setup.py", "pyproject.toml", "CMakeLists.txt", "MANIFEST.in", "README.md", "csrc", "imgcls", "kernels")
BUILD_OUTPUTS = shutil.ignore_patterns("*.so", "__pycache__", "*.pyc")


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    """The files a build reads, copied without any built module."""
    copy = tmp_path / "src"
    copy.mkdir()
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=BUILD_OUTPUTS)
        else:
            shutil.copy2(src, copy / name)
    return copy


def run_setup(copy: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("IMGCLS_NO_NATIVE_READER", "PKG_CONFIG_PATH")}
    cmd = [sys.executable, "setup.py", *args]
    return subprocess.run(cmd, cwd=copy, env=environ | env, capture_output=True, text=True, timeout=300)


def built_modules(copy: Path) -> list[Path]:
    return sorted(copy.rglob("_reader*.so"))


def test_build_without_libjpeg_fails_with_one_line_naming_the_packages(source_copy):
    """pkg-config sees no libjpeg: the build stops, and its last line says what to install or how to opt out."""
    proc = run_setup(source_copy, "build_ext", PKG_CONFIG_LIBDIR="/nonexistent")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: imgcls: libjpeg-turbo not found"), proc.stderr
    for named in ("libjpeg62-turbo-dev", "libjpeg-turbo-devel", "brew install jpeg-turbo", "IMGCLS_NO_NATIVE_READER=1"):
        assert named in last, last
    assert "Traceback" not in proc.stderr and "CMake Error" not in proc.stderr, proc.stderr
    assert built_modules(source_copy) == []


def test_opt_out_builds_nothing_and_says_so_once(source_copy):
    """IMGCLS_NO_NATIVE_READER=1: build_ext succeeds without CMake, one notice, no module (even with no libjpeg)."""
    proc = run_setup(source_copy, "build_ext", IMGCLS_NO_NATIVE_READER="1", PKG_CONFIG_LIBDIR="/nonexistent")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert output.count("IMGCLS_NO_NATIVE_READER is set: building without the native reader") == 1, output
    assert built_modules(source_copy) == [] and not (source_copy / "build").exists()


def test_packages_put_kernels_under_imgcls_and_ship_the_labels(source_copy):
    """build_py lays out what the wheel holds: kernels/ as imgcls/kernels/, nothing named kernels at the top."""
    proc = run_setup(source_copy, "build_py", "--build-lib", "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = source_copy / "out"
    assert sorted(p.name for p in out.iterdir()) == ["imgcls"]
    kernels = {p.name for p in (REPO / "kernels").glob("*.py")}
    assert {p.name for p in (out / "imgcls" / "kernels").glob("*.py")} == kernels
    labels = out / "imgcls" / "data" / "imagenet_labels.txt"
    assert labels.read_bytes() == (REPO / "imgcls" / "data" / "imagenet_labels.txt").read_bytes()


def test_sdist_carries_what_a_wheel_build_needs(source_copy):
    proc = run_setup(source_copy, "sdist", "--dist-dir", "dist")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = (source_copy / "dist").glob("imgcls-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    cpp = {f"csrc/{p.name}" for p in (REPO / "csrc").glob("*.[ch]*")}
    wanted = {"setup.py", "pyproject.toml", "CMakeLists.txt", "kernels/dwconv_bn_act.py"}
    wanted.add("imgcls/data/imagenet_labels.txt")
    assert wanted | cpp <= names, sorted(wanted | cpp - names)
    assert not [name for name in names if name.endswith(".so")]


def test_torch_is_never_pinned_by_the_package():
    """An installed torch (CPU or CUDA build) must satisfy imgcls: no pin, no upper bound, not needed to build."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert not [r for r in project["build-system"]["requires"] if r.startswith("torch")]
    (torch_req,) = [r for r in project["project"]["dependencies"] if r.startswith("torch")]
    assert torch_req.replace(" ", "").startswith("torch>=") and "," not in torch_req and "<" not in torch_req


def test_first_use_without_the_reader_warns_once_and_reads_with_opencv(monkeypatch):
    """An install built without the reader: the first "auto" reader says so (naming the opt-out), later ones don't."""
    monkeypatch.setitem(sys.modules, "imgcls._reader", None)  # as if no module had been built
    monkeypatch.setattr(reader, "_warned_native_missing", False)
    args = dict(preprocess=PreprocessSpec(8, 9, (0.5,) * 3, (0.5,) * 3, AugConfig()), train=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        readers = [reader.make_reader("auto", **args) for _ in range(3)]
    assert [type(r) for r in readers] == [reader.OpenCVReader] * 3
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "IMGCLS_NO_NATIVE_READER" in messages[0] and "OpenCV" in messages[0], messages
    with pytest.raises(RuntimeError, match="native reader not built"):
        reader.make_reader("native", **args)
