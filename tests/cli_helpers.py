"""Helpers the CLI tests share: a tiny generated dataset, the flags of a tiny training run, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

MODEL = "ShuffleNetV2_x0_25"


def tiny_shapes(root: Path, num_train: int = 32, num_val: int = 8) -> Path:
    """The built-in shapes at a small count (10 classes), written into ``root``."""
    from imgcls.data.builtin import generate

    generate(root, num_train, num_val)
    return root


def tiny_train(data: Path, out: Path, *extra: str) -> list[str]:
    """Flags of a tiny training run (32 px, batch 16, OpenCV reader, one thread, no TensorBoard)."""
    return [
        f"--model={MODEL}",
        f"--data_dir={data}",
        f"--model_save_dir={out}",
        "--reader=opencv",
        "--reader_thread=1",
        "--image_shape=3,32,32",
        "--batch_size=16",
        "--lr=0.05",
        "--tensorboard=False",
        *extra,
    ]


def parse_train(*flags: str):
    from imgcls import train as train_cli

    return train_cli.get_args_parser().parse_args(list(flags))


def run_train(*flags: str) -> dict:
    from imgcls import train as train_cli

    return train_cli.main(parse_train(*flags))


def one_line_error(capsys: pytest.CaptureFixture, call: Callable[[], object]) -> str:
    """Run ``call``, expect exit status 2 and, as stderr's last line, its only ``error: ...`` line (progress bars
    and warnings may come before it; no traceback); returns it."""
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


# Runs Python code after the usual imports, under an address-space limit of what they took plus an allowance: an
# allocation beyond it fails (MemoryError, or the process dies), so passing proves the bound.
_LIMITED = """
import importlib, resource, runpy, sys
code, allowance = sys.argv[1], int(sys.argv[2])
for name in ("imgcls.models", "imgcls.convert", "imgcls.hub", "imgcls.data", "imgcls.engine", "imgcls.export", "cv2"):
    importlib.import_module(name)
with open("/proc/self/status") as f:
    used = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + allowance, resource.RLIM_INFINITY))
sys.argv = [sys.argv[0], *sys.argv[3:]]
exec(code)
"""
_RUN_MODULE = "sys.argv = sys.argv[1:]\nrunpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"


def run_python_limited(code: str, args: list[str], allowance: int, timeout: float = 300) -> subprocess.CompletedProcess:
    """``code`` (``sys.argv[1:]`` = ``args``) in a subprocess whose address space may grow by ``allowance`` bytes
    past its imports (one malloc arena and one math thread, so that threads reserve no extra address space)."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _LIMITED, code, str(allowance), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def run_limited(module: str, flags: list[str], allowance: int, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m module *flags`` under ``run_python_limited``'s address-space limit."""
    return run_python_limited(_RUN_MODULE, [module, *flags], allowance, timeout)


def one_error_line(run: subprocess.CompletedProcess) -> str:
    """The only ``error:`` line of a finished CLI run, which exited with status 2 and printed no traceback."""
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 2 and len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    return errors[0]


def plain_shapes(root: Path, classes: tuple[str, ...], num_train: int, num_val: int, side: int = 40) -> Path:
    """The built-in dataset's shapes alone (white on black: no background texture, colors or clutter), written into
    ``root`` as JPEG lists: a task a small net learns in a couple of hundred steps, so a test can check learning."""
    import cv2
    import numpy as np

    from imgcls.data.builtin import shape_mask

    for split, count, seed in (("train", num_train, 0), ("val", num_val, 1)):
        rng = np.random.default_rng(seed)
        lines = []
        for i in range(count):
            label = i % len(classes)
            mask = shape_mask(classes[label], side, side, rng)
            relative = f"{split}/{i:05d}.jpg"
            (root / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / relative), np.repeat(np.rint(mask * 255).astype(np.uint8)[..., None], 3, axis=2))
            lines.append(f"{relative} {label}\n")
        (root / f"{split}_list.txt").write_text("".join(lines))
    return root
