"""bench/make_kernel_table.py on a synthetic run shaped exactly like the GPU session's files.

The kernel cases' extra_info comes from the benches' own code (``GpuBench.record`` of bench/_harness.py) on made-up
times; the params come from the benches' own ``parametrize`` marks; the surrounding layout (``name`` = ``test[id]``,
``params``, ``extra_info``, ``datetime``) is pytest-benchmark's ``--benchmark-json``. The throughput lines are
written by ``imgcls.benchmark_report.record`` (what ``python -m imgcls.benchmark --json`` appends) on made-up rows.
"""

from __future__ import annotations

import importlib
import itertools
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
COPY_GBPS = 1000.0


@pytest.fixture(scope="module")
def bench():
    """bench/_harness.py, the three kernel bench modules and make_kernel_table, imported as the benches see them
    (bench/ on sys.path), then taken off sys.path and sys.modules again."""
    names = ("_harness", "bench_dwconv_bn_act", "bench_channel_shuffle", "bench_squeeze_excite", "make_kernel_table")
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    sys.path.insert(0, str(REPO / "bench"))
    try:
        mods = SimpleNamespace(**{n: importlib.import_module(n) for n in names})
    finally:
        sys.path.remove(str(REPO / "bench"))
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
    return mods


def params_of(test_fn) -> list[dict]:
    """Every params dict pytest makes from ``test_fn``'s parametrize marks, in pytest's order (last mark slowest)."""
    axes = []
    for mark in reversed(test_fn.pytestmark):
        names = [n.strip() for n in mark.args[0].split(",")]
        axes.append([dict(zip(names, v if len(names) > 1 else (v,))) for v in mark.args[1]])
    return [{k: v for d in combo for k, v in d.items()} for combo in itertools.product(*axes)]


def kernel_entry(bench, test: str, params: dict, ms: dict[str, float], of_copy: dict[str, float]) -> dict:
    """A pytest-benchmark entry whose extra_info GpuBench.record wrote: fused times ``ms['fused_<phase>']`` and
    a floor sized so that the fused GB/s is ``of_copy[phase]`` of the copy bandwidth."""
    gpu = bench._harness.GpuBench(COPY_GBPS, "NVIDIA H200")
    fake = SimpleNamespace(extra_info={})
    floor = {p: int(f * COPY_GBPS * 1e6 * ms[f"fused_{p}"]) for p, f in of_copy.items()}
    gpu.record(fake, test, ms, floor)
    ident = "-".join(str(v) for v in params.values())
    return {"name": f"{test}[{ident}]", "fullname": f"bench/x.py::{test}[{ident}]", "params": params,
            "param": ident, "extra_info": fake.extra_info, "stats": {"min": 1e-3}}  # fmt: skip


def phase_ms(eager: float, compile_: float, fused: float) -> dict[str, float]:
    """fwd = both / 2 for each variant (bwd = both - fwd, as time_phases computes it)."""
    out = {}
    for name, both in (("eager", eager), ("compile", compile_), ("fused", fused)):
        out.update({f"{name}_both": both, f"{name}_fwd": both / 2, f"{name}_bwd": both / 2})
    return out


def throughput_line(model: str, img_per_s: dict[str, float], device: str = "cuda") -> str:
    """One ``python -m imgcls.benchmark --json`` line: fp16 channels_last rows of the given variants' train img/s."""
    from imgcls.benchmark_report import Config, Row, record

    args = SimpleNamespace(model=model, batch_size=256, image_size=224, amp_dtype="fp16")
    configs = {"eager": Config(False, True, True), "fused": Config(True, True, True)}
    configs["compile"] = Config(False, True, True, compiled=True)
    rows = [Row(configs[v], train_ips=ips, infer_ips=2 * ips, logit_error=1e-3) for v, ips in img_per_s.items()]
    with pytest.MonkeyPatch.context() as mp:  # what a CUDA machine with Triton writes (this one has neither)
        mp.setattr("imgcls.benchmark_report.fused_note", lambda device: "Triton" if device.type == "cuda" else "x")
        mp.setattr("imgcls.benchmark_report.describe", lambda device: "device: NVIDIA H200 (16 cores)")
        return record(args, rows, torch.device(device))


@pytest.fixture
def run_json(bench, tmp_path: Path) -> Path:
    dw = params_of(bench.bench_dwconv_bn_act.test_dwconv_bn_act)
    s1 = [p for p in dw if p["stride"] == 1 and p["dtype"] == "fp16"]
    s2 = next(p for p in dw if p["stride"] == 2)
    every = {"fwd": 0.8, "bwd": 0.8, "both": 0.8}
    shuffle = params_of(bench.bench_channel_shuffle.test_concat_shuffle)[0]
    entries = [
        # stride 1: 3x eager and 1.8x compile, 80% of the floor
        kernel_entry(bench, "test_dwconv_bn_act", s1[0], phase_ms(3.0, 1.8, 1.0), every),
        # stride 1: 2.5x eager, 1.3x compile (below 1.4; the geometric mean with 1.8 is 1.53), 75% of the floor
        kernel_entry(bench, "test_dwconv_bn_act", s1[1], phase_ms(2.5, 1.3, 1.0), {**every, "both": 0.75}),
        # stride 2 is no goal's: these poor numbers must not count
        kernel_entry(bench, "test_dwconv_bn_act", s2, phase_ms(1.1, 0.9, 1.0), {**every, "both": 0.1}),
        # concat + shuffle at 80% of copy speed: 1.25x a copy's time, over 1.15
        kernel_entry(bench, "test_concat_shuffle", shuffle, phase_ms(2.0, 1.5, 1.0), every),
        # a case stopped mid-way (record not reached): left out, counted
        {"name": "test_squeeze_excite_residual[256-56-16-fp16-nchw]", "params": {}, "extra_info": {}, "stats": {}},
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"datetime": "2026-12-01T08:00:00+00:00", "benchmarks": entries}))
    lines = [
        throughput_line("ShuffleNetV2_swish", {"eager": 1000.0, "fused": 1800.0, "compile": 1700.0}),
        throughput_line("MobileNetV2", {"eager": 10.0, "fused": 5000.0}),
    ]
    (tmp_path / "throughput.jsonl").write_text("\n".join(lines) + "\n")
    reader = {"img_per_s": 4000.0, "median_img_per_s": 3900.0, "threads": 16, "batch": 256, "rounds": 5}
    reader.update(images="32 distinct 500x375 JPEGs", cpu_count=16, load1=0.5)
    (tmp_path / "reader.json").write_text(json.dumps(reader))
    return path


def goal_row(text: str, goal: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(f"| {goal} |")]
    assert len(rows) == 1, f"goal row {goal!r} not found once in:\n{text}"
    return rows[0]


def test_goals_met_not_met_and_not_measured(bench, run_json: Path) -> None:
    mkt = bench.make_kernel_table
    env = {"gpu": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "cuda": "13.0", "driver": "580.159.04"}
    runs = mkt.load_runs([run_json], run_json.parent / "throughput.jsonl", run_json.parent / "reader.json")
    text = mkt.render(runs, env, ["pytest bench/x.py"], ["stage x: rc=0"])
    vs_eager = goal_row(text, "dwconv+BN+act fwd+bwd, stride 1: vs eager")
    assert "| 2 | 2.739 | 2.500 (" in vs_eager and vs_eager.endswith("| **met** |")  # sqrt(3 * 2.5); stride 2 left out
    vs_compile = goal_row(text, "dwconv+BN+act fwd+bwd, stride 1: vs torch.compile")
    assert "| 1.530 | 1.300 (" in vs_compile and "met on the geometric mean, 1 of 2 cases miss" in vs_compile
    floor = goal_row(text, "dwconv+BN+act fwd+bwd, stride 1: of the bytes-moved floor")
    assert "| 0.775 | 0.750 (" in floor and floor.endswith("| **met** |")
    shuffle = goal_row(text, "concat + shuffle (forward) vs a plain copy of the output")
    assert "| <= 1.15 | 1 | 1.250 |" in shuffle and shuffle.endswith("| not met (1 of 1 cases miss) |")
    assert goal_row(text, "SE + residual add + ReLU (forward) vs its floor").endswith("| 0 | - | - | not measured |")
    step_eager = goal_row(text, "ShuffleNetV2_swish training step vs eager")
    assert "| 1 | 1.800 | 1.800 (fp16 channels_last b256 224px) | **met** |" in step_eager
    assert goal_row(text, "ShuffleNetV2_swish training step vs torch.compile").endswith(
        "| not met (1 of 1 cases miss) |"
    )
    # header facts and the per-case tables
    assert "- Copy bandwidth: 1000.0 GB/s" in text and "driver 580.159.04" in text and "triton 3.6.0" in text
    assert "    pytest bench/x.py" in text and "- stage x: rc=0" in text
    assert "1 entries without complete results" in text
    assert "| ShuffleNetV2_swish c=58 hw=28 k=3 stride=1 act=identity | fp16 | nchw | both | 3.0000 | 1.8000 " in text
    # the throughput table: train eager, compile, fused, ratios, infer; the reader's rate over the fastest step
    row = "| ShuffleNetV2_swish | fp16 channels_last b256 224px | Triton | 1000.0 | 1700.0 | 1800.0 | 1.80x | 1.06x |"
    assert row + " 2000.0 | 3400.0 | 3600.0 | 1.0e-03 | 2.22 |" in text
    assert "| MobileNetV2 | fp16 channels_last b256 224px | Triton | 10.0 | - | 5000.0 | 500.00x | - |" in text
    assert "fills 4000 training images/s (best batch; median 3900) with 16 threads on 16 CPUs" in text


def test_fused_fallback_step_is_no_evidence(bench, tmp_path: Path) -> None:
    """A fused step that ran the reference (no Triton) must not count for the training-step goal."""
    path = tmp_path / "throughput.jsonl"
    path.write_text(throughput_line("ShuffleNetV2_swish", {"eager": 1000.0, "fused": 9e3}, device="cpu") + "\n")
    text = bench.make_kernel_table.render(bench.make_kernel_table.load_runs([], path), {}, [], [])
    assert goal_row(text, "ShuffleNetV2_swish training step vs eager").endswith("| not measured |")


def test_cli_writes_file_and_notes_missing_json(bench, run_json: Path, tmp_path: Path) -> None:
    mkt = bench.make_kernel_table
    env_path, out = tmp_path / "env.json", tmp_path / "table.md"
    mkt.main(["--write-env", str(env_path)])
    env = json.loads(env_path.read_text())
    assert env["torch"] and env["triton"] and env["slug"] == ("no_gpu" if env["gpu"] is None else env["slug"])
    gone = tmp_path / "never_written.json"
    reader = tmp_path / "no_reader.json"
    argv = [str(run_json), str(gone), "--reader", str(reader), "--env", str(env_path), "--command", "a b"]
    mkt.main([*argv, "--out", str(out)])
    text = out.read_text()
    assert f"- {gone}: not written (its stage did not finish or did not run)" in text
    assert f"- {reader}: not written (its stage did not finish or did not run)" in text
    assert f"triton {env['triton']}" in text and "## Goals\n" in text


def test_table_knows_every_kernel_bench(bench) -> None:
    """KERNEL_TESTS names the benches' real test functions, so a renamed bench cannot silently drop out."""
    modules = (bench.bench_dwconv_bn_act, bench.bench_channel_shuffle, bench.bench_squeeze_excite)
    tests = {name for m in modules for name in vars(m) if name.startswith("test_")}
    assert tests == set(bench.make_kernel_table.KERNEL_TESTS)
