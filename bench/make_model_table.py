"""Markdown table from a ``pytest bench/bench_models.py --benchmark-json=FILE`` run (see bench_models.py's header).

    .venv/bin/python bench/make_model_table.py models.json --command "<pytest cmd>" --out bench/results/models_cpu.md

Times are each case's best round (the least disturbed one on a shared machine); speedups are ratios of two cases of
the same run. Every machine fact in the header (CPU, Python, torch, threads, load) comes from the JSON, i.e. from the
machine that ran the benchmark, not the one that makes the table; the header's command line is the whole chain, the
benchmark and this script.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the checkout

from imgcls.models.table import count_parameters  # noqa: E402


def machine_line(run: dict, threads: int) -> str:
    """The benchmarked machine, from pytest-benchmark's ``machine_info`` (py-cpuinfo's brand and count)."""
    info = run.get("machine_info", {})
    cpu = info.get("cpu", {})
    brand = cpu.get("brand_raw") or info.get("processor") or "unknown CPU"
    count = f", {cpu['count']} CPUs" if "count" in cpu else ""
    system = " ".join(x for x in (info.get("system"), info.get("release")) if x)
    return f"Machine: {brand}{count}{f' ({system})' if system else ''}; {threads} torch threads."


def command_chain(bench_command: str, argv: list[str]) -> str:
    """The benchmark command followed by this script's own invocation (so the table can be regenerated)."""
    own = shlex.join([".venv/bin/python", "bench/make_model_table.py", *argv])
    return f"{bench_command} && {own}" if bench_command else f"(benchmark command not given) then {own}"


def load_cases(path: Path) -> tuple[dict, dict[tuple[str, str, int], dict]]:
    """(the run's metadata, {(model, path, batch): case}) with each case's best time and extra_info."""
    run = json.loads(path.read_text())
    cases = {}
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        if "model" not in info:
            continue
        cases[(info["model"], info["path"], info["batch"])] = {"min_s": bench["stats"]["min"], **info}
    return run, cases


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x"


def inference_table(cases: dict, large: int) -> list[str]:
    models = list(dict.fromkeys(m for (m, path, _) in cases if not path.startswith("train_")))
    rows = [
        f"| Model | Params (M) | Input | b1 eager ms | b1 folded ms | folded speedup | b1 fused÷eager time "
        f"| b{large} eager img/s | b{large} folded img/s | folded speedup | b{large} fused÷eager time |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for model in models:
        b1 = {p: cases.get((model, p, 1)) for p in ("eager", "fused", "folded")}
        bn = {p: cases.get((model, p, large)) for p in ("eager", "fused", "folded")}
        if None in b1.values() or None in bn.values():
            continue
        size = b1["eager"].get("input_size", "")
        rows.append(
            f"| {model} | {count_parameters(model) / 1e6:.2f} | {size} "
            f"| {1e3 * b1['eager']['min_s']:.1f} | {1e3 * b1['folded']['min_s']:.1f} "
            f"| {ratio(b1['eager']['min_s'], b1['folded']['min_s'])} "
            f"| {b1['fused']['min_s'] / b1['eager']['min_s']:.2f} "
            f"| {bn['eager']['img_per_s']:.1f} | {bn['folded']['img_per_s']:.1f} "
            f"| {ratio(bn['folded']['img_per_s'], bn['eager']['img_per_s'])} "
            f"| {bn['fused']['min_s'] / bn['eager']['min_s']:.2f} |"
        )
    return rows


def training_table(cases: dict) -> list[str]:
    groups = defaultdict(dict)
    for (model, path, batch), case in cases.items():
        if path.startswith("train_"):
            key = (model, batch, case["size"], case["amp"], case["channels_last"])
            groups[key][path.removeprefix("train_")] = case
    rows = [
        "| Model | Batch | Size | Precision | Layout | Variant | img/s | vs eager | checked before timing |",
        "|---|--:|--:|---|---|---|--:|--:|---|",
    ]
    for (model, batch, size, amp, channels_last), variants in groups.items():
        eager = variants.get("eager")
        for name, case in variants.items():
            versus = ratio(case["img_per_s"], eager["img_per_s"]) if eager else "-"
            layout = "channels_last" if channels_last else "NCHW"
            rows.append(
                f"| {model} | {batch} | {size} | {amp} | {layout} | {name} | {case['img_per_s']:.1f} | {versus} "
                f"| {step_check(case)} |"
            )
    return rows


def step_check(case: dict) -> str:
    """The training-step case's correctness gate: eval logits vs fp32 eager (a run recorded before that gate
    existed checked the first step's loss against eager's, and says so)."""
    if "logit_error" in case:
        return f"eval logits vs fp32 eager: {case['logit_error']:.1e}"
    return f"first-step loss {case['first_loss']:.6f} (eager's {case['eager_first_loss']:.6f})"


def fallback_note(fused_ran: set[str]) -> list[str]:
    """Without CUDA the fused model runs eager's own code: say that its ratio only shows the run's noise."""
    if not any("fallback" in path for path in fused_ran):
        return []
    return [
        "Without CUDA the fused model runs the very same reference code as eager, so its ratios (and the training",
        "step's `fused` row) measure this shared machine's noise, not the kernels; kernel speed needs a GPU run.",
    ]


def training_section(cases: dict) -> list[str]:
    rows = training_table(cases)
    if len(rows) <= 2:  # header only: the run deselected the training-step cases
        return []
    return ["## Training step (forward + loss + backward + SGD step)", "", *rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON of bench/bench_models.py")
    parser.add_argument("--command", default="", help="the exact command that produced the JSON")
    parser.add_argument("--load-before", default="", help="the 1-minute load average just before the run")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (default: stdout)")
    args = parser.parse_args()
    run, cases = load_cases(args.json)
    if not cases:
        raise SystemExit(f"{args.json}: no bench_models cases in it")
    first = next(iter(cases.values()))
    loads = [c["load1"] for c in cases.values()]
    large = max(batch for (_, path, batch) in cases if not path.startswith("train_"))
    fused_ran = {c["fused_ran"] for c in cases.values() if "fused_ran" in c}
    lines = [
        f"# Model inference and training-step speed ({first['device']})",
        "",
        f"{machine_line(run, first['threads'])} Python {run.get('machine_info', {}).get('python_version', '?')}, "
        f"torch {first['torch']}. Results written {run.get('datetime', '?')} (end of the run).",
        f"Command: `{command_chain(args.command, sys.argv[1:])}`",
        f"Load average (1 min): {args.load_before or '?'} just before the run; {min(loads):.2f} to {max(loads):.2f} "
        f"during the cases (counting the benchmark's own {first['threads']} threads).",
        "",
        "Times are each case's best round; speedups are ratios of cases of this same run. The eager, fused and",
        "folded models share weights (BN statistics randomized); every case first checked its logits against eager's",
        "(folded: relative error <= 1e-4). Fused path: " + ("; ".join(sorted(fused_ran)) or "-") + ".",
        *fallback_note(fused_ran),
        "",
        *inference_table(cases, large),
        "",
        *training_section(cases),
    ]
    text = "\n".join(lines) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
