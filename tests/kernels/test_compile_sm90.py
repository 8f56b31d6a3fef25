"""Every Triton kernel compiles for the H100 / H200 (sm_90) with its GPU tile config, on this CPU-only machine.

The interpreter tests check the kernels' arithmetic; they never run Triton's NVIDIA compiler, which rejects code
the interpreter accepts (types, layouts, constexpr use) and decides registers and spills. bench/compile_sm90.py
--quick launches the ops (every constexpr branch) through a Triton driver that compiles for sm_90 and runs
nothing; this test runs it in a fresh process (the interpreter, set in this folder, must be off there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

pytest.importorskip("triton")
# On a GPU the other tests here compile and run the real kernels; this CPU-side compile would only spend its time.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU compiles the real kernels in the other tests")


def _kernel_names() -> set[str]:
    import imgcls.kernels._reductions as reductions
    import imgcls.kernels.channel_shuffle as cs
    import imgcls.kernels.dwconv_bn_act as dw
    import imgcls.kernels.squeeze_excite as se

    return {name for module in (reductions, cs, dw, se) for name in vars(module) if name.endswith("_kernel")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("sm90") / "compiled.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, str(REPO / "bench" / "compile_sm90.py"), "--quick", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_every_kernel_compiles_for_sm90(compiled):
    assert compiled["failures"] == []
    assert {row["kernel"] for row in compiled["compiled"]} == _kernel_names()
    assert all(row["regs"] > 0 and row["warps_per_sm"] > 0 for row in compiled["compiled"])


def test_quick_set_zoo_kernels_do_not_spill(compiled):
    """In the quick set, the 3x3 depthwise, shuffle and SE specializations (what the fused zoo runs) keep their
    values in registers. (The full run, bench/results/kernels_sm90_static.md, lists the few that spill.)"""
    zoo = [row for row in compiled["compiled"] if "K=5" not in row["constexprs"]]
    assert zoo
    assert [(r["kernel"], r["constexprs"], r["spill_bytes"]) for r in zoo if r["spill_bytes"]] == []


# Kernels whose longest loop walks tiles (or rows) and keeps per-lane partial sums: nothing crosses threads in it.
LANE_SUM_LOOPS = (
    "_fwd_stats_kernel",
    "_bwd_stats_kernel",
    "_bwd_dy_kernel",
    "_bn_finalize_kernel",
    "_sum_rows_kernel",
    "_pool_kernel",
    "_gate_grad_kernel",
)


def test_tile_loops_do_no_cross_thread_work(compiled):
    """No warp shuffle, barrier or shared-memory access inside those loops: the reductions happen once, after."""
    rows = [r for r in compiled["compiled"] if r["kernel"] in LANE_SUM_LOOPS]
    assert {r["kernel"] for r in rows} == set(LANE_SUM_LOOPS)
    assert all(r["loop_instructions"] > 0 for r in rows), "the SASS loop was not found"
    busy = [r for r in rows if r["loop_shuffles"] or r["loop_barriers"] or r["loop_shared_ops"]]
    assert [(r["kernel"], r["constexprs"]) for r in busy] == []
