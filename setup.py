"""Builds the native JPEG reader imgcls/_reader*.so with CMake (CMakeLists.txt); in place by default.

``python setup.py build_ext`` configures and builds ``build/`` and writes the module next to the package. When
libjpeg-turbo or CMake is missing it prints what to install and leaves imgcls reading images through OpenCV.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeBuild(build_ext):
    """build_ext that hands the one extension to CMake."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self.inplace = True  # the repo is used from its checkout: put the module in imgcls/

    def build_extension(self, ext: Extension) -> None:
        cmake = shutil.which("cmake") or str(Path(sys.executable).with_name("cmake"))
        if not Path(cmake).exists() and shutil.which(cmake) is None:
            print("imgcls: cmake not found (pip install cmake or apt-get install cmake); native reader skipped")
            return
        # setuptools builds into build_lib and, in place, copies the module next to the package.
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        configure = [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DPython_EXECUTABLE={sys.executable}"]
        configure += [f"-DIMGCLS_OUTPUT_DIR={out_dir}", "-DCMAKE_BUILD_TYPE=Release"]
        if os.environ.get("IMGCLS_ASAN"):
            configure.append("-DIMGCLS_ASAN=ON")
        jobs = str(os.cpu_count() or 1)
        subprocess.run(configure, check=True)
        # The default target: empty when CMake skipped the module for a missing libjpeg-turbo.
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)


setup(
    # The repo's top-level kernels/ installs as imgcls.kernels: a name only this project uses.
    packages=find_packages(include=["imgcls", "imgcls.*"]) + ["imgcls.kernels"],
    package_dir={"imgcls.kernels": "kernels"},
    package_data={"imgcls.data": ["imagenet_labels.txt"]},
    ext_modules=[Extension("imgcls._reader", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
