"""The rows of ``python -m imgcls.benchmark`` and their report: a markdown table in Paddle's style (ratios to the
baseline row of the same run), one line naming the machine and the versions, and a JSON record of the run."""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Config:
    """One benchmarked combination of the switches; ``compiled``: ``torch.compile`` of the model (reference blocks)."""

    fused: bool
    amp: bool
    channels_last: bool
    compiled: bool = False


@dataclass
class Row:
    """One configuration's measurements."""

    config: Config
    train_ips: float = 0.0  # best round, images per second
    infer_ips: float = 0.0
    logit_error: float = float("nan")  # the correctness gate's error (see benchmark.check), before any timing


def fused_note(device: torch.device) -> str:
    """What ``--fused`` ran as on ``device``: the Triton kernels, the interpreter, or the reference fallback."""
    from imgcls.layers.fused import interpreter_enabled, triton_installed

    if device.type == "cuda" and triton_installed():
        return "Triton"
    return "interpreter" if interpreter_enabled() else "fallback: reference path"


def table(args: argparse.Namespace, rows: list[Row], device: torch.device) -> str:
    """A markdown table in Paddle's style, with ratios to the first (baseline) row of the same run."""
    size = args.image_size or "model"
    amp = args.amp_dtype or ("fp16" if device.type == "cuda" else "bf16")
    base = rows[0]
    lines = [
        "| Model | batch | size | fused | compile | amp | channels_last | train img/s | x base | infer img/s "
        "| x base | infer ms/batch | max logit err |",
        "|- |:-: |:-: |:-: |:-: |:-: |:-: |-: |-: |-: |-: |-: |-: |",
    ]
    for r in rows:
        c = r.config
        fused = f"yes ({fused_note(device)})" if c.fused else "no"
        train = f"{r.train_ips:.1f} | {r.train_ips / base.train_ips:.2f}" if r.train_ips else "- | -"
        infer = f"{r.infer_ips:.1f} | {r.infer_ips / base.infer_ips:.2f}" if r.infer_ips else "- | -"
        ms = f"{1000 * args.batch_size / r.infer_ips:.1f}" if r.infer_ips else "-"
        lines.append(
            f"| {args.model} | {args.batch_size} | {size} | {fused} | {'yes' if c.compiled else 'no'} | "
            f"{amp if c.amp else 'no'} | "
            f"{'yes' if c.channels_last else 'no'} | {train} | {infer} | {ms} | {r.logit_error:.1e} |"
        )
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def describe(device: torch.device) -> str:
    """Machine and versions, for the record beside the table."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_name()}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"device: {where.strip()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads); "
        f"torch {torch.__version__}, python {platform.python_version()}; load average at the end {load:.2f}"
    )


def record(args: argparse.Namespace, rows: list[Row], device: torch.device) -> str:
    """One JSON line for the run: the model, batch, size, precision, machine line and every row's numbers."""
    amp = args.amp_dtype or ("fp16" if device.type == "cuda" else "bf16")
    fields = dict(model=args.model, batch=args.batch_size, size=args.image_size, amp_dtype=amp, device=str(device))
    fields["fused_ran"] = fused_note(device)
    fields["machine"] = describe(device)
    fields["rows"] = [{**asdict(r.config), **{k: v for k, v in asdict(r).items() if k != "config"}} for r in rows]
    return json.dumps(fields)
