"""Markdown tables of the GPU benchmarks and where the fused kernels' goals stand.

    python3 bench/make_kernel_table.py --write-env env.json             # on the GPU machine: versions, GPU, driver
    python3 bench/make_kernel_table.py dwconv.json ... --throughput throughput.jsonl --reader reader.json \\
        --env env.json --command "<cmd>" --out bench/results/kernels_nvidia_h200.md

Inputs: the ``--benchmark-json`` files of bench/bench_dwconv_bn_act.py, bench_channel_shuffle.py,
bench_squeeze_excite.py (``GpuBench.record`` in bench/_harness.py writes ``{variant}_{phase}_ms``,
``fused_{phase}_GBps``, ``fused_{phase}_of_copy``, ``{phase}_speedup_vs_{eager,compile}`` and ``copy_GBps``; the case's
shape comes from pytest's ``params``); ``--throughput``: the JSON lines ``python -m imgcls.benchmark --json`` appends
(one per run: model, batch, precision, ``fused_ran`` and per row the switches and train / infer img/s), where the
training-step goals are read; ``--reader``: bench/bench_reader.py ``--feed-rate --json`` (the native reader's
training-batch rate), put beside each model's training img/s. bench/gpu_session.sh makes all of them in one device
call. "% of copy" is the fused GB/s over the bytes-moved floor divided by the measured copy bandwidth, i.e. the
floor's time (at copy speed) over the fused time.
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
from dataclasses import dataclass, field
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
class Throughput:
    """One run of ``python -m imgcls.benchmark --json``: a model, a batch and precision, and its rows."""

    info: dict

    def groups(self) -> dict[tuple[bool, bool], dict[str, dict]]:
        """{(amp, channels_last): {variant: row}}, variant 'eager', 'fused' or 'compile'."""
        out: dict[tuple[bool, bool], dict[str, dict]] = {}
        for row in self.info["rows"]:
            variant = "compile" if row.get("compiled") else "fused" if row["fused"] else "eager"
            out.setdefault((row["amp"], row["channels_last"]), {})[variant] = row
        return out

    def label(self, amp: bool, channels_last: bool) -> str:
        i = self.info
        layout = "channels_last" if channels_last else "nchw"
        return f"{i['amp_dtype'] if amp else 'fp32'} {layout} b{i['batch']} {i['size']}px"


@dataclass
class Runs:
    kernels: list[KernelCase]
    datetimes: list[str]
    incomplete: list[str]  # entries lacking the keys a finished case writes (failed check, stage stopped mid-case)
    throughput: list[Throughput] = field(default_factory=list)
    reader: dict | None = None  # bench_reader.py --feed-rate


def _kernel_complete(info: dict) -> bool:
    phases = [p for p in PHASES if f"fused_{p}_GBps" in info]
    keys = [f"{v}_{p}_ms" for v in VARIANTS for p in phases] + ["copy_GBps"]
    return bool(phases) and all(k in info for k in keys)


def load_runs(paths: list[Path], throughput: Path | None = None, reader: Path | None = None) -> Runs:
    """Every kernel case in the JSON files (in file order), the throughput runs and the reader's rate."""
    runs = Runs([], [], [])
    for path in paths:
        data = json.loads(path.read_text())
        runs.datetimes.append(data.get("datetime", "?"))
        for bench in data["benchmarks"]:
            test = bench["name"].split("[")[0]
            info = bench.get("extra_info", {})
            if test not in KERNEL_TESTS:
                continue
            if _kernel_complete(info):
                runs.kernels.append(KernelCase(test, dict(bench.get("params") or {}), info))
            else:
                runs.incomplete.append(bench["name"])
    if throughput is not None and throughput.exists():
        lines = throughput.read_text().splitlines()
        runs.throughput = [Throughput(json.loads(line)) for line in lines if line.strip()]
    if reader is not None and reader.exists():
        runs.reader = json.loads(reader.read_text())
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
    """fused train img/s over ``base`` train img/s, per run and (precision, layout) holding both, fused on Triton."""
    values = []
    for run in runs.throughput:
        if run.info["model"] != model or run.info.get("fused_ran") != "Triton":
            continue
        for (amp, channels_last), variants in run.groups().items():
            fused, other = variants.get("fused"), variants.get(base)
            if fused and other and fused["train_ips"] and other["train_ips"]:
                values.append((run.label(amp, channels_last), fused["train_ips"] / other["train_ips"]))
    return values


def evaluate_goals(runs: Runs) -> list[Verdict]:
    """The fused kernels' goals, each over every case of this run that it applies to."""

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
        "## Goals",
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


def throughput_table(runs: Runs) -> list[str]:
    """Per model run and precision: train and infer img/s of eager, fused, compile; the reader's rate beside."""
    if not runs.throughput:
        return []
    reader = runs.reader
    feed = "reader img/s / fastest train img/s" if reader else "reader"
    lines = [
        "## Model throughput (`python -m imgcls.benchmark`) and the reader's feeding rate",
        "",
        "Training step (forward, loss, backward, SGD step) and inference (eval, no grad) img/s on a fixed random",
        "batch, best of the interleaved rounds; every row's eval logits were checked against fp32 eager first.",
    ]
    if reader:
        lines.append(
            f"Reader: the native reader fills {reader['img_per_s']:.0f} training images/s (best batch; median "
            f"{reader['median_img_per_s']:.0f}) with {reader['threads']} threads on {reader['cpu_count']} CPUs "
            f"({reader['images']}, uint8 batches of {reader['batch']}). Beside each row, that rate over the "
            "fastest training img/s: under 1, the GPU waits for data."
        )
    lines += [
        "",
        "| Model | Precision | Fused ran | train eager | train compile | train fused | fused vs eager "
        f"| fused vs compile | infer eager | infer compile | infer fused | max logit err | {feed} |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs.throughput:
        for (amp, channels_last), v in run.groups().items():
            train = {name: v[name]["train_ips"] for name in VARIANTS if name in v and v[name]["train_ips"]}
            infer = {name: v[name]["infer_ips"] for name in VARIANTS if name in v and v[name]["infer_ips"]}
            cells = [f"{train[n]:.1f}" if n in train else "-" for n in VARIANTS]
            ratios = [
                f"{train['fused'] / train[b]:.2f}x" if "fused" in train and b in train else "-" for b in VARIANTS[:2]
            ]
            cells += ratios + [f"{infer[n]:.1f}" if n in infer else "-" for n in VARIANTS]
            error = max(row["logit_error"] for row in v.values())
            ratio = f"{reader['img_per_s'] / max(train.values()):.2f}" if reader and train else "-"
            lines.append(
                f"| {run.info['model']} | {run.label(amp, channels_last)} | {run.info.get('fused_ran', '?')} "
                f"| {' | '.join(cells)} | {error:.1e} | {ratio} |"
            )
    machines = sorted({run.info.get("machine", "?") for run in runs.throughput})
    return [*lines, "", *[f"- {m}" for m in machines], ""]


def header(runs: Runs, env: dict, commands: list[str], notes: list[str]) -> list[str]:
    infos = [c.info for c in runs.kernels]
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
        f"- Cases: {len(runs.kernels)} kernel cases, {len(runs.throughput)} model throughput runs{left_out}",
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
        *throughput_table(runs),
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
    parser.add_argument("json", type=Path, nargs="*", help="pytest-benchmark JSON files of the kernel benches")
    parser.add_argument("--throughput", type=Path, help="JSON lines of python -m imgcls.benchmark --json")
    parser.add_argument("--reader", type=Path, help="bench/bench_reader.py --feed-rate --json")
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
    missing = [str(p) for p in [*args.json, args.throughput, args.reader] if p is not None and not p.exists()]
    runs = load_runs(paths, args.throughput, args.reader)
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
