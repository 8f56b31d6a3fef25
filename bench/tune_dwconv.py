"""Sweep the fused depthwise op's GPU tile configs at ShuffleNetV2_swish's and MobileNetV2's stride-1 shapes.

    python bench/tune_dwconv.py [--budget-s 60] [--json F]          # needs a CUDA GPU; bench/gpu_session.sh runs it

For each layout and candidate (BLOCK_C, BLOCK_P, num_warps) of 3x3 kernels: every shape is checked against the
reference first (output and gradients at bench/_harness.py's tolerance), then the training forward + backward is
timed with ``triton.testing.do_bench`` (fp16, batch 256). The layouts alternate, so a short budget covers both.
Prints, per layout, each candidate's ms per shape and its geometric-mean speed against the current config (the
table's first row), measured in the same run; stops at the budget and keeps what it has. It changes nothing on
disk: copy the winner into ``_GPU_CONFIGS`` in kernels/dwconv_bn_act.py (by hand, after looking at the numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # bench/ (its helpers and shapes) and the repository root (kernels/)

# Candidates per layout, the current config first: 4 or 2 values per thread (8 per thread took 230-255 registers
# in the backward). `python bench/compile_sm90.py --tune-candidates` compiles every (candidate, shape) of this
# sweep for sm_90 on a CPU: 0 spills, every one launches.
CANDIDATES = {
    "nchw": [(8, 64, 4), (4, 128, 4), (4, 64, 4), (8, 32, 4), (8, 128, 8), (4, 64, 2)],
    "channels_last": [(32, 16, 4), (16, 32, 4), (64, 8, 4), (16, 16, 4), (32, 8, 4), (64, 16, 8)],
}
# (model, channels) of bench_dwconv_bn_act.SHAPES: ShuffleNetV2_swish's three stride-1 shapes and two of
# MobileNetV2's.
TUNED = [("ShuffleNetV2_swish", 58), ("ShuffleNetV2_swish", 116), ("ShuffleNetV2_swish", 232)]
TUNED += [("MobileNetV2", 144), ("MobileNetV2", 576)]


def shapes() -> list[tuple]:
    import bench_dwconv_bn_act

    return [s for s in bench_dwconv_bn_act.SHAPES if (s[0], s[1]) in TUNED and s[4] == 1]


def plan() -> list[tuple[str, tuple[int, int, int]]]:
    """(layout, config) in sweep order: the layouts alternate, so a sweep cut short still covers both."""
    layouts = list(CANDIDATES)
    rounds = max(len(c) for c in CANDIDATES.values())
    return [(lay, CANDIDATES[lay][i]) for i in range(rounds) for lay in layouts if i < len(CANDIDATES[lay])]


def time_case(shape: tuple, layout: str) -> float:
    """Check the fused op against the reference at this shape, then -> ms of its training forward + backward."""
    import triton.testing
    from _harness import TOL, check_against_reference
    from bench_dwconv_bn_act import make_case

    _, c, hw, k, stride, act = shape
    make_args, fused, reference = make_case(c, hw, k, stride, act, torch.float16, layout, training=True)
    grad = torch.randn_like(reference(*make_args()).detach())
    check_against_reference(fused, reference, make_args, grad, TOL[torch.float16])
    args = make_args()
    leaves = [a for a in args if a.requires_grad]
    return triton.testing.do_bench(lambda: fused(*args).backward(grad), warmup=10, rep=40, grad_to_none=leaves)


def sweep(budget_s: float) -> dict[str, list[dict]]:
    from imgcls.kernels import dwconv_bn_act as op

    deadline = time.monotonic() + budget_s
    found: dict[str, list[dict]] = {layout: [] for layout in CANDIDATES}
    for layout, config in plan():
        if time.monotonic() > deadline:
            print(f"tune: budget spent before {layout} {config}", flush=True)
            break
        previous = op.set_gpu_config(3, layout, config)
        row: dict = {"config": config, "ms": {}}
        try:
            for shape in shapes():
                row["ms"][f"{shape[0]} c={shape[1]} {shape[2]}px"] = time_case(shape, layout)
        except Exception as error:  # noqa: BLE001  (a failing candidate is reported, the sweep goes on)
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        finally:
            op.set_gpu_config(3, layout, previous)
        found[layout].append(row)
        print(f"tune: {layout} {config}: {row.get('error') or row['ms']}", flush=True)
    return found


def report(found: dict[str, list[dict]], device: str) -> str:
    """Markdown, per layout: ms per shape of each candidate, and its geometric-mean speed vs the first (current)."""
    lines = [f"# dwconv 3x3 tile sweep, fp16 training fwd+bwd, batch 256: {device}", ""]
    for layout, rows in found.items():
        ok = [r for r in rows if "error" not in r]
        if not ok:
            continue
        cases = list(ok[0]["ms"])
        lines += [f"## {layout}", "", "| config | " + " | ".join(cases) + " | speed vs first |"]
        lines.append("|---|" + "--:|" * (len(cases) + 1))
        base = ok[0]["ms"]
        for row in rows:
            if "error" in row:
                lines.append(f"| {row['config']} | {row['error']} |")
                continue
            shared = [case for case in cases if case in row["ms"]]
            speed = math.exp(sum(math.log(base[c] / row["ms"][c]) for c in shared) / max(1, len(shared)))
            cells = " | ".join(f"{row['ms'][c]:.3f}" if c in row["ms"] else "-" for c in cases)
            lines.append(f"| {row['config']} | {cells} | {speed:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=60.0, help="stop starting new candidates after this")
    parser.add_argument("--json", help="also write the raw times here")
    parser.add_argument("--co", action="store_true", help="only count the cases, in pytest --co's words (no GPU)")
    args = parser.parse_args(argv)
    if args.co:
        print(f"{len(plan()) * len(shapes())} tests collected")
        return 0
    if not torch.cuda.is_available():
        print("tune_dwconv: needs a CUDA GPU", file=sys.stderr)
        return 2
    found = sweep(args.budget_s)
    print(report(found, torch.cuda.get_device_name()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(found, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
