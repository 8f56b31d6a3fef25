"""What the checkpoint checksums cost: saving and loading a model's checkpoint with its sha256 manifest against the
same work without it, on one core, files in the page cache.

Save: ``save_checkpoint`` (streams model.pt, hashing what it writes, then writes checksums.sha256) against the same
call with the hash replaced by one that does nothing, and against a bare ``torch.save`` into a file, fsynced.
Load: ``read_weights`` of the checkpoint folder (which hashes model.pt before loading it) against the same folder
without its manifest (loaded unchecked). The loaded weights are compared with the saved ones first. Methods
alternate, best of ``--rounds``.

    .venv/bin/python -m bench.bench_checkpoint --model ResNet50_vd     # the table in bench/results/checkpoint_cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from imgcls import checkpoint as ckpt
from imgcls.checksums import MANIFEST_FILE, file_sha256
from imgcls.models import create_model


class NoHash:
    """Stands in for hashlib.sha256 in the baseline save: the same calls, no hashing."""

    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 64


def unhashed_save(path: Path, model: torch.nn.Module) -> None:
    real = ckpt.hashlib.sha256
    ckpt.hashlib.sha256 = NoHash
    try:
        ckpt.save_checkpoint(path, model)
    finally:
        ckpt.hashlib.sha256 = real


def plain_save(path: Path, weights: dict) -> None:
    with open(path, "wb") as f:
        torch.save(weights, f)
        f.flush()
        os.fsync(f.fileno())


def timed(timings: dict[str, list[float]], name: str, call: Callable, *args: object) -> None:
    start = time.perf_counter()
    call(*args)
    timings.setdefault(name, []).append(time.perf_counter() - start)


def measure(model_name: str, rounds: int) -> tuple[dict[str, float], int]:
    """Best seconds of each method, and model.pt's size in bytes."""
    model = create_model(model_name)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    timings: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        checked, unchecked = root / "checked", root / "unchecked"
        ckpt.save_checkpoint(checked, model)
        ckpt.save_checkpoint(unchecked, model)
        (unchecked / MANIFEST_FILE).unlink()
        loaded = ckpt.read_weights(checked, model_name)
        assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)
        for i in range(rounds):
            timed(timings, "save_checkpoint", ckpt.save_checkpoint, root / f"s{i}", model)
            timed(timings, "save_checkpoint, hash off", unhashed_save, root / f"u{i}", model)
            timed(timings, "torch.save + fsync", plain_save, root / f"p{i}.pt", weights)
            timed(timings, "read_weights", ckpt.read_weights, checked, model_name)
            timed(timings, "read_weights, no manifest", ckpt.read_weights, unchecked, model_name)
            timed(timings, "sha256 of model.pt", file_sha256, checked / "model.pt")
        size = (checked / "model.pt").stat().st_size
    return {name: min(times) for name, times in timings.items()}, size


def table(model_name: str, rounds: int) -> str:
    times, size = measure(model_name, rounds)
    lines = [
        f"{model_name}: model.pt {size / 1e6:.1f} MB; best of {rounds} rounds, one thread, files in the page cache",
        "",
        "| operation | seconds | MB/s of model.pt | with the checksum vs without |",
        "|---|---|---|---|",
    ]
    pairs = {"save_checkpoint": "save_checkpoint, hash off", "read_weights": "read_weights, no manifest"}
    for name, seconds in times.items():
        ratio = f"{seconds / times[pairs[name]]:.2f}x (+{seconds - times[pairs[name]]:.3f} s)" if name in pairs else ""
        lines.append(f"| {name} | {seconds:.3f} | {size / seconds / 1e6:.0f} | {ratio} |")
    return "\n".join(lines)


def machine_lines() -> str:
    """The CPU, its load at the start, and the versions: the header of a CPU checkpoint benchmark's output."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return (
        f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start\n"
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ResNet50_vd")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_lines())
    print(table(args.model, args.rounds))


if __name__ == "__main__":
    main()
