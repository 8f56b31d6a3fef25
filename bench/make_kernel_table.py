"""Markdown table of the fused-kernel GPU benchmarks, and where issue 5's goals stand, from pytest-benchmark JSON.

    python3 bench/make_kernel_table.py --write-env env.json             # on the GPU machine: versions, GPU, driver
    python3 bench/make_kernel_table.py dwconv.json step.json ... --env env.json --command "<pytest cmd>" \\
        --out bench/results/kernels_nvidia_h200.md

Inputs are ``--benchmark-json`` files of bench/bench_dwconv_bn_act.py, bench_channel_shuffle.py,
bench_squeeze_excite.py (``GpuBench.record`` in bench/conftest.py writes ``{variant}_{phase}_ms``,
``fused_{phase}_GBps``, ``fused_{phase}_of_copy``, ``{phase}_speedup_vs_{eager,compile}`` and ``copy_GBps``; the case's
shape comes from pytest's ``params``) and of bench_models.py's ``test_train_step_gpu`` (``model``, ``path`` =
``train_{variant}``, ``img_per_s``, ``amp``, ``channels_last``, ``batch``, ``size``). bench/gpu_session.sh makes all
of them in one device call. "% of copy" is the fused GB/s over the bytes-moved floor divided by the measured copy
bandwidth, i.e. the floor's time (at copy speed) over the fused time.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

PHASES = ("fwd", "bwd", "both")
VARIANTS = ("eager", "compile", "fused")
# Test function -> the op it measures. The eval bench has no dtype parameter: it always runs fp16.
KERNEL_TESTS = {
    "test_dwconv_bn_act": "dwconv + BN + act, training",
    "test_dwconv_bn_act_eval": "dwconv + BN + act, eval (BN folded)",
    "test_concat_shuffle": "concat + channel shuffle",
    "test_squeeze_excite_residual": "SE + residual add + ReLU",
}
FIXED_DTYPE = {"test_dwconv_bn_act_eval": "fp16"}


@dataclass
class KernelCase:
    """One kernel bench case: its test function, its pytest params and the extra_info GpuBench.record wrote."""

    test: str
    params: dict
    info: dict

    @property
    def dtype(self) -> str:
        return str(self.params.get("dtype", FIXED_DTYPE.get(self.test, "?")))

    @property
    def layout(self) -> str:
        return str(self.params.get("layout", "?"))

    @property
    def shape(self) -> str:
        """The params other than dtype and layout, e.g. ``MobileNetV2 c=32 hw=112 k=3 stride=1 act=relu6``."""
        parts = [str(v) if k == "model" else f"{k}={v}" for k, v in self.params.items() if k not in ("dtype", "layout")]
        return " ".join(parts)

    def phases(self) -> list[str]:
        return [p for p in PHASES if f"fused_{p}_GBps" in self.info]


@dataclass
class StepCase:
    """One GPU training-step case of bench_models.py (one variant of one model/precision/layout)."""

    info: dict

    @property
    def group(self) -> tuple:
        i = self.info
        return (i["model"], i["amp"], "channels_last" if i["channels_last"] else "nchw", i["batch"], i["size"])

    @property
    def variant(self) -> str:
        return self.info["path"].removeprefix("train_")


@dataclass
class Runs:
    kernels: list[KernelCase]
    steps: list[StepCase]
    datetimes: list[str]
    incomplete: list[str]  # entries lacking the keys a finished case writes (failed check, stage stopped mid-case)


def _kernel_complete(info: dict) -> bool:
    phases = [p for p in PHASES if f"fused_{p}_GBps" in info]
    keys = [f"{v}_{p}_ms" for v in VARIANTS for p in phases] + ["copy_GBps"]
    return bool(phases) and all(k in info for k in keys)


def load_runs(paths: list[Path]) -> Runs:
    """Every kernel case and GPU training-step case in the JSON files, in file order."""
    runs = Runs([], [], [], [])
    for path in paths:
        data = json.loads(path.read_text())
        runs.datetimes.append(data.get("datetime", "?"))
        for bench in data["benchmarks"]:
            test = bench["name"].split("[")[0]
            info = bench.get("extra_info", {})
            if test in KERNEL_TESTS:
                if _kernel_complete(info):
                    runs.kernels.append(KernelCase(test, dict(bench.get("params") or {}), info))
                else:
                    runs.incomplete.append(bench["name"])
            elif str(info.get("path", "")).startswith("train_") and str(info.get("device", "")).startswith("cuda"):
                if "img_per_s" in info:
                    runs.steps.append(StepCase(info))
                else:
                    runs.incomplete.append(bench["name"])
    return runs


# ------------------------------------------------------------------------------------------------------------ goals


@dataclass(frozen=True)
class Goal:
    """A target on one number per case; ``higher`` says which side of ``target`` meets it."""

    text: str
    metric: str  # how the number is read, for the table
    target: float
    higher: bool

    def meets(self, value: float) -> bool:
        return value >= self.target if self.higher else value <= self.target


@dataclass
class Verdict:
    goal: Goal
    values: list[tuple[str, float]]  # (case label, value)

    def summary(self) -> tuple[str, str, str, str]:
        """(cases, geometric mean, worst case, met): met means every case meets the target; when only the
        geometric mean does, it says so."""
        if not self.values:
            return "0", "-", "-", "not measured"
        nums = [v for _, v in self.values]
        geo = math.exp(sum(math.log(v) for v in nums) / len(nums))
        label, worst = (min if self.goal.higher else max)(self.values, key=lambda lv: lv[1])
        failing = sum(not self.goal.meets(v) for v in nums)
        if failing == 0:
            met = "**met**"
        elif self.goal.meets(geo):
            met = f"not met: met on the geometric mean, {failing} of {len(nums)} cases miss"
        else:
            met = f"not met ({failing} of {len(nums)} cases miss)"
        return str(len(nums)), f"{geo:.3f}", f"{worst:.3f} ({label})", met


def _kernel_values(
    runs: Runs, test: str, value: Callable[[dict], float], keep: Callable[[KernelCase], bool] = lambda c: True
) -> list:
    return [(f"{c.shape} {c.dtype} {c.layout}", value(c.info)) for c in runs.kernels if c.test == test and keep(c)]


def _step_values(runs: Runs, model: str, base: str) -> list:
    """fused img/s over ``base`` img/s, per (precision, layout, batch, size) group holding both, fused on Triton."""
    groups: dict[tuple, dict[str, dict]] = {}
    for s in runs.steps:
        if s.info["model"] == model:
            groups.setdefault(s.group, {})[s.variant] = s.info
    values = []
    for (_, amp, layout, batch, size), variants in groups.items():
        fused, other = variants.get("fused"), variants.get(base)
        if fused and other and fused.get("fused_ran") == "triton":
            values.append((f"{amp} {layout} b{batch} {size}px", fused["img_per_s"] / other["img_per_s"]))
    return values


def evaluate_goals(runs: Runs) -> list[Verdict]:
    """Issue 5's goals, each over every case of this run that it applies to."""

    def stride1(c: KernelCase) -> bool:
        return int(c.params.get("stride", 0)) == 1

    dw = "test_dwconv_bn_act"
    return [
        Verdict(
            Goal("dwconv+BN+act fwd+bwd, stride 1: vs eager", "eager ms / fused ms (both)", 2.0, True),
            _kernel_values(runs, dw, lambda i: i["both_speedup_vs_eager"], stride1),
        ),
        Verdict(
            Goal("dwconv+BN+act fwd+bwd, stride 1: vs torch.compile", "compile ms / fused ms (both)", 1.4, True),
            _kernel_values(runs, dw, lambda i: i["both_speedup_vs_compile"], stride1),
        ),
        Verdict(
            Goal("dwconv+BN+act fwd+bwd, stride 1: of the bytes-moved floor", "fused GB/s / copy GB/s", 0.70, True),
            _kernel_values(runs, dw, lambda i: i["fused_both_of_copy"], stride1),
        ),
        Verdict(
            Goal("concat + shuffle (forward) vs a plain copy of the output", "fused ms / copy ms", 1.15, False),
            _kernel_values(runs, "test_concat_shuffle", lambda i: 1 / i["fused_fwd_of_copy"]),
        ),
        Verdict(
            Goal("SE + residual add + ReLU (forward) vs its floor", "fused ms / floor ms at copy speed", 1.2, False),
            _kernel_values(runs, "test_squeeze_excite_residual", lambda i: 1 / i["fused_fwd_of_copy"]),
        ),
        Verdict(
            Goal("ShuffleNetV2_swish training step vs eager", "fused img/s / eager img/s", 1.5, True),
            _step_values(runs, "ShuffleNetV2_swish", "eager"),
        ),
        Verdict(
            Goal("ShuffleNetV2_swish training step vs torch.compile", "fused img/s / compile img/s", 1.15, True),
            _step_values(runs, "ShuffleNetV2_swish", "compile"),
        ),
    ]


# ----------------------------------------------------------------------------------------------------------- tables


def goals_section(verdicts: list[Verdict]) -> list[str]:
    rows = [
        "## Goals (issue 5)",
        "",
        "Each goal is read over every case of these runs it applies to; it is met when every case meets it (the",
        "geometric mean and the worst case are given beside it). `not measured`: no such case in the JSON.",
        "",
        "| Goal | Number per case | Target | Cases | Geometric mean | Worst case | Met |",
        "|---|---|--:|--:|--:|---|---|",
    ]
    for v in verdicts:
        cases, geo, worst, met = v.summary()
        target = f"{'>=' if v.goal.higher else '<='} {v.goal.target:g}"
        rows.append(f"| {v.goal.text} | {v.goal.metric} | {target} | {cases} | {geo} | {worst} | {met} |")
    return rows


def kernel_tables(runs: Runs) -> list[str]:
    lines = []
    for test, title in KERNEL_TESTS.items():
        cases = [c for c in runs.kernels if c.test == test]
        if not cases:
            continue
        lines += [
            f"## {title} (`{test}`)",
            "",
            "| Case | dtype | layout | phase | eager ms | compile ms | fused ms | fused vs eager | fused vs compile "
            "| fused GB/s | % of copy |",
            "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for c in cases:
            i = c.info
            for p in c.phases():
                times = " | ".join(f"{i[f'{v}_{p}_ms']:.4f}" for v in VARIANTS)
                speedups = " | ".join(f"{i[f'{p}_speedup_vs_{b}']:.2f}x" for b in ("eager", "compile"))
                lines.append(
                    f"| {c.shape} | {c.dtype} | {c.layout} | {p} | {times} | {speedups} "
                    f"| {i[f'fused_{p}_GBps']:.1f} | {100 * i[f'fused_{p}_of_copy']:.1f}% |"
                )
        lines.append("")
    return lines


def step_table(runs: Runs) -> list[str]:
    groups: dict[tuple, dict[str, dict]] = {}
    for s in runs.steps:
        groups.setdefault(s.group, {})[s.variant] = s.info
    if not groups:
        return []
    lines = [
        "## Training step (forward + loss + backward + SGD step), img/s from each case's best round",
        "",
        "| Model | Precision | Layout | Batch | Size | eager img/s | compile img/s | fused img/s | fused vs eager "
        "| fused vs compile | first-step loss: fused (eager) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for (model, amp, layout, batch, size), v in groups.items():
        ips = {name: v[name]["img_per_s"] for name in VARIANTS if name in v}
        cells = [f"{ips[n]:.1f}" if n in ips else "-" for n in VARIANTS]
        ratios = [f"{ips['fused'] / ips[b]:.2f}x" if "fused" in ips and b in ips else "-" for b in ("eager", "compile")]
        loss = f"{v['fused']['first_loss']:.6f} ({v['fused']['eager_first_loss']:.6f})" if "fused" in v else "-"
        lines.append(
            f"| {model} | {amp} | {layout} | {batch} | {size} | {' | '.join(cells)} | {' | '.join(ratios)} | {loss} |"
        )
    return [*lines, ""]


def header(runs: Runs, env: dict, commands: list[str], notes: list[str]) -> list[str]:
    infos = [c.info for c in runs.kernels] + [s.info for s in runs.steps]
    gpus = sorted({i["gpu"] for i in infos if "gpu" in i} | ({env["gpu"]} if env.get("gpu") else set()))
    torches = sorted({i["torch"] for i in infos if "torch" in i})
    copies = sorted({c.info["copy_GBps"] for c in runs.kernels})
    copy = "not measured (no kernel case)"
    if copies:
        copy = f"{copies[0]:.1f} GB/s" if len(copies) == 1 else f"{copies[0]:.1f} to {copies[-1]:.1f} GB/s"
        copy += " (device-to-device copy of 256 MiB, read + write, once per pytest process)"
    left_out = ""
    if runs.incomplete:
        left_out = (
            f"; {len(runs.incomplete)} entries without complete results (a failed check, or a stage cut off) left out"
        )
    lines = [
        f"# Fused Triton kernels on {', '.join(gpus) or 'an unknown GPU'}",
        "",
        f"- GPU: {', '.join(gpus) or '?'}; driver {env.get('driver', '?')}; memory {env.get('gpu_memory', '?')}",
        f"- torch {', '.join(torches) or env.get('torch', '?')} (CUDA {env.get('cuda', '?')}, cuDNN "
        f"{env.get('cudnn', '?')}), triton {env.get('triton', '?')}, Python {env.get('python', '?')}",
        f"- Copy bandwidth: {copy}",
        f"- Date: environment read {env.get('date', '?')}; runs finished {', '.join(runs.datetimes) or '?'}",
        f"- Cases: {len(runs.kernels)} kernel cases, {len(runs.steps)} training-step cases{left_out}",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in commands],
        "",
    ]
    if notes:
        lines += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    lines += [
        "Times are `triton.testing.do_bench` means of one run (every case checked its output, gradients and running",
        "stats against the reference first); backward = (forward + backward) - forward; `compile` is",
        "`torch.compile(fullgraph=True)` of the reference, compiled afresh per case. Speedups are ratios within a",
        "case.",
        "",
    ]
    return lines


def render(runs: Runs, env: dict, commands: list[str], notes: list[str]) -> str:
    """The whole markdown file."""
    lines = [
        *header(runs, env, commands, notes),
        *goals_section(evaluate_goals(runs)),
        "",
        *kernel_tables(runs),
        *step_table(runs),
    ]
    return "\n".join(lines).rstrip() + "\n"


def probe_env() -> dict:
    """Versions and the GPU of this machine (run on the machine that benchmarks, before the benches)."""
    import torch
    import triton

    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip().splitlines()
        if out:
            driver, memory = (x.strip() for x in out[0].split(",", 1))
            env.update(driver=driver, gpu_memory=memory)
    env["slug"] = "".join(ch if ch.isalnum() else "_" for ch in (env["gpu"] or "no_gpu").lower())
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="*", help="pytest-benchmark JSON files of the kernel/model benches")
    parser.add_argument("--env", type=Path, help="the --write-env file of the benchmarking machine")
    parser.add_argument("--command", action="append", default=[], help="an exact command of the run (repeatable)")
    parser.add_argument("--notes", type=Path, help="a file of lines to list under Notes (e.g. each stage's status)")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    parser.add_argument("--write-env", type=Path, help="only write this machine's versions and GPU here, as JSON")
    args = parser.parse_args(argv)
    if args.write_env:
        args.write_env.write_text(json.dumps(probe_env(), indent=1) + "\n")
        return
    paths = [p for p in args.json if p.exists()]
    missing = [str(p) for p in args.json if not p.exists()]
    runs = load_runs(paths)
    env = json.loads(args.env.read_text()) if args.env and args.env.exists() else {}
    notes = args.notes.read_text().splitlines() if args.notes and args.notes.exists() else []
    notes += [f"{m}: not written (its stage did not finish or did not run)" for m in missing]
    text = render(runs, env, args.command, [n for n in notes if n.strip()])
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
