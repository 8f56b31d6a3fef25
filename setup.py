"""Packages imgcls and builds its native JPEG reader imgcls/_reader*.so with CMake (CMakeLists.txt).

``pip install .`` / ``pip wheel .`` put the module in the wheel; ``python setup.py build_ext`` builds it in place,
next to the package, for a checkout. The reader needs libjpeg-turbo: without it the build stops with one line naming
the packages to install. ``IMGCLS_NO_NATIVE_READER=1`` builds without the reader (imgcls then reads with OpenCV).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
NO_READER_ENV = "IMGCLS_NO_NATIVE_READER"
# CMakeLists.txt prints the reason for a missing prerequisite on one line that starts with this.
CMAKE_REASON_PREFIX = "imgcls: "


def native_reader_opted_out() -> bool:
    """``IMGCLS_NO_NATIVE_READER`` is set to a true value: build and install without the native reader."""
    return os.environ.get(NO_READER_ENV, "").strip().lower() not in ("", "0", "false", "no")


def build_error(message: str) -> SystemExit:
    """The one line a failed build ends with (setuptools prints it; pip shows it under the build output)."""
    return SystemExit(f"error: imgcls: {message}")


# The PyPI packages of the build requirements, and where each keeps its executable.
TOOL_BIN_DIRS = {"cmake": "CMAKE_BIN_DIR", "ninja": "BIN_DIR"}


def find_tool(name: str) -> str | None:
    """``name`` from its Python package (the build requirement), else from PATH. The package first: every build of
    a checkout then runs the same CMake version, which keeps the shared CMake tree incremental."""
    try:
        bin_dir = getattr(importlib.import_module(name), TOOL_BIN_DIRS[name])
    except (ImportError, AttributeError):
        bin_dir = None
    return (bin_dir and shutil.which(name, path=bin_dir)) or shutil.which(name)


def pybind11_cmake_dir() -> str:
    try:
        import pybind11
    except ImportError:
        raise build_error("pybind11 is not installed (pip install pybind11)") from None
    return pybind11.get_cmake_dir()


def run_cmake_configure(command: list[str]) -> None:
    """Configure; a missing prerequisite ends the build with CMakeLists.txt's one-line reason, nothing else."""
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode == 0:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)  # CMake's warnings
        return
    reasons = [line for line in proc.stderr.splitlines() if line.startswith(CMAKE_REASON_PREFIX)]
    if reasons:
        raise build_error(reasons[0][len(CMAKE_REASON_PREFIX) :])
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    raise build_error("CMake could not configure the native reader (its output is above)")


class CMakeBuild(build_ext):
    """build_ext that hands the one extension to CMake; in place when run as ``python setup.py build_ext``."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if "build_ext" in self.distribution.commands:
            self.inplace = True  # the README's command: a checkout runs with the module next to the package

    def run(self) -> None:
        if native_reader_opted_out():
            print(f"imgcls: {NO_READER_ENV} is set: building without the native reader (images are read with OpenCV)")
            return
        super().run()

    def get_outputs(self) -> list[str]:
        return [] if native_reader_opted_out() else super().get_outputs()

    def get_output_mapping(self) -> dict[str, str]:
        return {} if native_reader_opted_out() else super().get_output_mapping()

    def cmake_build_dir(self, generator: str) -> Path:
        """One CMake tree per Python ABI and generator, under build/, whatever setuptools' (possibly throwaway)
        build_temp is: the in-place build, the editable install and a wheel built here reuse each other's objects."""
        return ROOT / "build" / f"cmake-{sys.implementation.cache_tag}-{generator}"

    def build_extension(self, ext: Extension) -> None:
        cmake = find_tool("cmake")
        if cmake is None:
            raise build_error("cmake not found (pip install cmake ninja)")
        ninja = find_tool("ninja")
        build_dir = self.cmake_build_dir("ninja" if ninja else "make")
        # The module goes where setuptools expects it: build_lib (a wheel), then copied in place when asked.
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        asan = "ON" if os.environ.get("IMGCLS_ASAN") else "OFF"  # explicit both ways: the CMake cache remembers
        configure = [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DPython_EXECUTABLE={sys.executable}"]
        configure += [f"-Dpybind11_DIR={pybind11_cmake_dir()}", f"-DIMGCLS_OUTPUT_DIR={out_dir}"]
        configure += ["-DCMAKE_BUILD_TYPE=Release", f"-DIMGCLS_ASAN={asan}"]
        if ninja:
            # Ninja's path may change between builds (pip's isolated environments): give it every time.
            configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        run_cmake_configure(configure)
        jobs = str(os.cpu_count() or 1)
        if subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs]).returncode != 0:
            raise build_error("the native reader did not compile (the compiler's output is above)")


class BuildNativeFirst(build):
    """build with the native reader first: a missing prerequisite stops the build before pages of file copies."""

    sub_commands = [cmd for cmd in build.sub_commands if cmd[0] == "build_ext"] + [
        cmd for cmd in build.sub_commands if cmd[0] != "build_ext"
    ]


setup(
    # The repo's top-level kernels/ installs as imgcls.kernels: a name only this project uses.
    packages=find_packages(include=["imgcls", "imgcls.*"]) + ["imgcls.kernels"],
    package_dir={"imgcls.kernels": "kernels"},
    package_data={"imgcls.data": ["imagenet_labels.txt"]},
    ext_modules=[Extension("imgcls._reader", sources=[])],
    cmdclass={"build": BuildNativeFirst, "build_ext": CMakeBuild},
)
